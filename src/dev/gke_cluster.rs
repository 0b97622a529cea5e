//! The simulated GKE cluster: a [`SimCluster`] served over HTTPS with a CA of its own, made
//! at start, that takes as bearer tokens those the simulated metadata server issued and has
//! not yet seen expire (the broker's), and the tokens of people the cluster lets deploy
//! ([`SimCluster::add_writer`]: dev's deployer, as a person's own Google token would be on
//! GKE). Anonymous reads stay open, as on `dev-cluster`, so that people's kubectl reads it.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::google::{MetadataServer, TokenCheck};
use super::sim_cluster::SimCluster;

/// A CA and a server certificate for 127.0.0.1 and localhost, signed by it.
pub struct ClusterTls {
    pub ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl ClusterTls {
    pub fn generate() -> anyhow::Result<ClusterTls> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "breakglass dev-gke cluster CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "dev-gke apiserver");
        let server_cert = params.signed_by(&server_key, &issuer)?;

        let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())
            .map_err(|e| anyhow::anyhow!("the generated key: {e}"))?;
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![server_cert.der().clone(), ca_cert.der().clone()], key)
            .context("the simulated GKE cluster's TLS configuration")?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ClusterTls {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        })
    }
}

#[derive(Clone)]
struct Gate {
    metadata: MetadataServer,
    sim: SimCluster,
    /// The simulated cluster's own write token, which only this gate knows and sends.
    write_token: String,
}

/// The cluster's API behind the token gate.
pub fn router(sim: &SimCluster, metadata: MetadataServer, write_token: String) -> Router {
    sim.router().layer(axum::middleware::from_fn_with_state(
        Gate {
            metadata,
            sim: sim.clone(),
            write_token,
        },
        gate,
    ))
}

/// A token the metadata server issued becomes the simulated cluster's write token (its
/// identity, for the cluster); any other token is refused as GKE refuses it.
async fn gate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    match gate.metadata.check_header(request.headers()) {
        None => {
            // Anything but a bearer token (kubectl's basic-auth name, below) is anonymous.
            request.headers_mut().remove(header::AUTHORIZATION);
            next.run(request).await
        }
        Some(TokenCheck::Valid) => {
            let Ok(value) = HeaderValue::try_from(format!("Bearer {}", gate.write_token)) else {
                return unauthorized("the cluster cannot take this token");
            };
            request.headers_mut().insert(header::AUTHORIZATION, value);
            next.run(request).await
        }
        Some(TokenCheck::Expired) => unauthorized("the access token has expired"),
        // A person's own token goes to the cluster as it came, which writes as that person.
        Some(TokenCheck::Unknown)
            if bearer(&request).is_some_and(|token| gate.sim.knows_writer(token)) =>
        {
            next.run(request).await
        }
        Some(TokenCheck::Unknown) => {
            unauthorized("the access token was not issued by the metadata server")
        }
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

fn unauthorized(message: &str) -> Response {
    let status: Value = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("Unauthorized: {message}"),
        "reason": "Unauthorized",
        "code": 401,
    });
    (StatusCode::UNAUTHORIZED, axum::Json(status)).into_response()
}

/// Serves `router` over TLS on `listener` until the runtime stops.
pub async fn serve_tls(listener: TcpListener, tls: &ClusterTls, router: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream))
                    .await
            else {
                return;
            };
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// People's kubeconfig: a context per simulated cluster, `dev-cluster` (the default, plain
/// HTTP) and `dev-gke` (HTTPS with its CA); both anonymous, so reads only. Over HTTPS
/// kubectl asks for a user name and password when a user has no credentials at all, so the
/// `dev-gke` user has a name and nothing else, which the cluster takes as anonymous.
pub fn people_kubeconfig(cluster_url: &str, gke_url: &str, gke_ca_pem: &str) -> String {
    use base64::Engine as _;
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    let ca = base64::engine::general_purpose::STANDARD.encode(gke_ca_pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: dev-cluster
  cluster:
    server: {cluster}
- name: dev-gke
  cluster:
    server: {gke}
    certificate-authority-data: {ca}
contexts:
- name: dev-cluster
  context:
    cluster: dev-cluster
    user: anonymous
    namespace: default
- name: dev-gke
  context:
    cluster: dev-gke
    user: dev-gke-anonymous
    namespace: default
current-context: dev-cluster
preferences: {{}}
users:
- name: anonymous
  user: {{}}
- name: dev-gke-anonymous
  user:
    username: anonymous
",
        cluster = quote(cluster_url),
        gke = quote(gke_url),
        ca = quote(&ca),
    )
}

pub const GKE_TARGET: &str = "dev-gke";
pub const PROJECT: &str = "dev-project";
pub const LOCATION: &str = "us-central1";

/// The Google side of dev mode, running: metadata server, GKE API, and the HTTPS cluster.
pub struct DevGke {
    pub metadata: MetadataServer,
    /// `http://127.0.0.1:PORT`; its host:port is what `GCE_METADATA_HOST` would hold.
    pub metadata_url: String,
    /// The GKE API's root, `http://127.0.0.1:PORT` (paths start with `/v1/`).
    pub api_url: String,
    /// `https://127.0.0.1:PORT`.
    pub cluster_url: String,
    pub ca_pem: String,
    pub sim: SimCluster,
}

/// Starts the three servers on `ip` (loopback), each on a port of its own.
pub async fn start(ip: std::net::IpAddr) -> anyhow::Result<DevGke> {
    let metadata = MetadataServer::default();
    let metadata_listener = TcpListener::bind((ip, 0)).await?;
    let metadata_url = format!("http://{}", metadata_listener.local_addr()?);
    spawn_http(metadata_listener, metadata.router());

    let tls = ClusterTls::generate()?;
    let write_token = uuid::Uuid::new_v4().simple().to_string();
    let sim = SimCluster::new(super::sim_cluster::SimClusterConfig {
        write_token: write_token.clone(),
        attested_prefixes: vec![super::ATTESTED_PREFIX.to_owned()],
        namespaces: vec!["default".into(), "prod".into()],
    });
    let cluster_listener = TcpListener::bind((ip, 0)).await?;
    let endpoint = cluster_listener.local_addr()?.to_string();
    let cluster_router = router(&sim, metadata.clone(), write_token);
    let ca_pem = tls.ca_pem.clone();
    tokio::spawn(async move { serve_tls(cluster_listener, &tls, cluster_router).await });

    let api_listener = TcpListener::bind((ip, 0)).await?;
    let api_url = format!("http://{}", api_listener.local_addr()?);
    let clusters = vec![super::google::SimGkeCluster {
        name: format!("projects/{PROJECT}/locations/{LOCATION}/clusters/{GKE_TARGET}"),
        endpoint: endpoint.clone(),
        ca_pem: ca_pem.clone(),
    }];
    spawn_http(
        api_listener,
        super::google::gke_api_router(metadata.clone(), clusters),
    );
    Ok(DevGke {
        metadata,
        metadata_url,
        api_url,
        cluster_url: format!("https://{endpoint}"),
        ca_pem,
        sim,
    })
}

fn spawn_http(listener: TcpListener, router: Router) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "a simulated Google server stopped");
        }
    });
}
