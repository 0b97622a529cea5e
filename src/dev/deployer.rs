//! The other side of the story: a person with deploy rights who is not the broker.
//!
//! Dev mode lets `deployer@example.com` write workloads in `default` and `prod` of the
//! simulated cluster with a token of their own, and writes `DIR/deployer-kubeconfig` for
//! kubectl. kubectl (client-go) sends a bearer token only over TLS, so the kubeconfig points
//! at the same simulated cluster served over HTTPS with a CA made at start. With the
//! admission policy on (the default) the deployer's breakglass is refused; with it off
//! (`POST /sim/v1/admission-policy {"enabled": false}`) it gets in, and the detector finds it.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::net::TcpListener;

use super::gke_cluster::{ClusterTls, serve_tls};
use super::sim_cluster::SimCluster;

/// The person dev mode's deployer token belongs to.
pub const DEPLOYER: &str = "deployer@example.com";

/// The deployer's access to the simulated cluster.
pub struct Deployer {
    /// The bearer token the simulated cluster takes as the deployer's.
    pub token: String,
    /// `https://127.0.0.1:PORT`: the simulated cluster over TLS, for kubectl.
    pub https_url: String,
    pub kubeconfig: PathBuf,
}

/// Gives the deployer a token on `sim`, serves `sim` over HTTPS on `ip`, and writes the
/// deployer's kubeconfig into `dir`.
pub async fn start(sim: &SimCluster, ip: std::net::IpAddr, dir: &Path) -> anyhow::Result<Deployer> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    sim.add_writer(&token, DEPLOYER);
    let tls = ClusterTls::generate()?;
    let listener = TcpListener::bind((ip, 0)).await?;
    let https_url = format!("https://{}", listener.local_addr()?);
    let router = sim.router();
    let ca_pem = tls.ca_pem.clone();
    tokio::spawn(async move { serve_tls(listener, &tls, router).await });
    let kubeconfig = dir.join("deployer-kubeconfig");
    super::write_file(&kubeconfig, &kubeconfig_text(&https_url, &ca_pem, &token))?;
    Ok(Deployer {
        token,
        https_url,
        kubeconfig,
    })
}

fn kubeconfig_text(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine as _;
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: dev-cluster
  cluster:
    server: {server}
    certificate-authority-data: {ca}
contexts:
- name: deployer
  context:
    cluster: dev-cluster
    user: deployer
    namespace: default
current-context: deployer
preferences: {{}}
users:
- name: deployer
  user:
    token: {token}
",
        server = quote(server),
        ca = quote(&ca),
        token = quote(token),
    )
}
