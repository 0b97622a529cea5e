//! The simulated cluster and the dev issuer on their own (`breakglass-broker sim-cluster`,
//! `breakglass-broker dev-idp`), so several broker processes (replicas in a test or a demo)
//! can share one cluster and one issuer. Loopback only, like `dev`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use axum::Router;
use tokio::net::TcpListener;

use super::idp::DevIdp;
use super::sim_cluster::{self, SimCluster, SimClusterConfig};
use super::{ATTESTED_PREFIX, check_loopback, write_file};
use crate::clock::Clock;

/// Where the issuer's routes live on its server: the same path `dev` mounts them at, so a
/// configuration written for one works for the other.
pub const IDP_PATH: &str = "/dev/idp";

pub struct SimClusterOptions {
    pub listen: SocketAddr,
    /// The token writes must carry; the broker's kubeconfig holds it.
    pub write_token: String,
    /// Where to write a kubeconfig with the write token, for brokers.
    pub kubeconfig: Option<PathBuf>,
    /// Where to write a kubeconfig without it, for people (reads only).
    pub read_kubeconfig: Option<PathBuf>,
}

/// Serves the simulated cluster until the process is asked to stop. Prints its URL first,
/// so whoever started it knows where it is even when it was given port 0.
pub async fn run_sim_cluster(options: SimClusterOptions) -> anyhow::Result<()> {
    check_loopback(&options.listen)?;
    if options.write_token.trim().is_empty() {
        bail!("the write token is empty");
    }
    let listener = bind(options.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let sim = SimCluster::new(SimClusterConfig {
        write_token: options.write_token.trim().to_owned(),
        attested_prefixes: vec![ATTESTED_PREFIX.to_owned()],
        namespaces: vec!["default".into(), "prod".into()],
    });
    if let Some(path) = &options.kubeconfig {
        write_file(
            path,
            &sim_cluster::kubeconfig(&url, Some(options.write_token.trim())),
        )?;
    }
    if let Some(path) = &options.read_kubeconfig {
        write_file(path, &sim_cluster::kubeconfig(&url, None))?;
    }
    let mut banner = format!(
        "listening on {url}\n\
         simulated cluster: {url} (namespaces default, prod; images under {ATTESTED_PREFIX} are attested)\n"
    );
    if let Some(path) = &options.kubeconfig {
        banner.push_str(&format!("kubeconfig for the broker: {}\n", path.display()));
    }
    if let Some(path) = &options.read_kubeconfig {
        banner.push_str(&format!("kubeconfig for people: {}\n", path.display()));
    }
    print_banner(&banner);
    crate::app::serve(listener, sim.router()).await?;
    Ok(())
}

/// Serves the dev issuer at `http://ADDRESS/dev/idp` until the process is asked to stop.
pub async fn run_dev_idp(listen: SocketAddr) -> anyhow::Result<()> {
    check_loopback(&listen)?;
    crate::app::install_crypto();
    let listener = bind(listen).await?;
    let issuer = format!("http://{}{IDP_PATH}", listener.local_addr()?);
    let idp = DevIdp::new(&issuer, Clock::system())?;
    let router = Router::new()
        .nest_service(IDP_PATH, idp.router())
        .layer(super::host::LoopbackOnly);
    print_banner(&format!(
        "listening on http://{}\n\
         issuer: {issuer}\n\
         client_id: {}\n\
         token for scripts: {issuer}/token?persona=alice\n",
        listener.local_addr()?,
        super::idp::CLIENT_ID,
    ));
    crate::app::serve(listener, router).await?;
    Ok(())
}

async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))
}

/// Written to stdout and flushed at once: a parent reading the pipe waits for this line.
fn print_banner(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
