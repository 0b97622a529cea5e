//! GKE with the broker's own Google identity (`kind = "gke"`, `credentials = "google"`):
//! the cluster's endpoint and CA come from the GKE API (`projects.locations.clusters.get`)
//! or from the configuration, and every call carries an access token from
//! [`GoogleAuth`]. After the client is built, everything is [`KubernetesTarget`]'s.
//!
//! The cluster is found on first use, not at start, so that a metadata server or GKE API
//! that is down when the broker starts costs a retry of the first request, not the start.
//! Once found, the endpoint and CA are kept for the life of the process.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use kube::client::Body;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::{Expect, KubernetesTarget, ObjectRef, Target, TargetError, Written};
use crate::google::GoogleAuth;

/// Where the GKE API is, unless the configuration says otherwise.
pub const CONTAINER_API: &str = "https://container.googleapis.com";

/// How the broker finds the cluster.
#[derive(Clone, Debug)]
pub enum ClusterSource {
    /// Ask the GKE API at `api` (its root, e.g. [`CONTAINER_API`]).
    Api {
        api: String,
        project: String,
        location: String,
        cluster: String,
    },
    /// The configuration names the endpoint and a PEM file of its CA.
    Fixed { endpoint: String, ca_file: PathBuf },
}

pub struct GkeTarget {
    source: ClusterSource,
    auth: GoogleAuth,
    http: reqwest::Client,
    connected: OnceCell<KubernetesTarget>,
}

impl GkeTarget {
    pub fn new(source: ClusterSource, auth: GoogleAuth) -> GkeTarget {
        GkeTarget {
            source,
            auth,
            http: crate::auth::http_client::client(),
            connected: OnceCell::new(),
        }
    }

    async fn target(&self) -> Result<&KubernetesTarget, TargetError> {
        self.connected.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<KubernetesTarget, TargetError> {
        let (endpoint, ca_pem) = match &self.source {
            ClusterSource::Fixed { endpoint, ca_file } => {
                let pem = tokio::fs::read(ca_file).await.map_err(|e| {
                    TargetError::Unavailable(format!("reading ca_file {}: {e}", ca_file.display()))
                })?;
                (endpoint.clone(), pem)
            }
            ClusterSource::Api { .. } => self.cluster_from_api().await?,
        };
        let certificates = CertificateDer::pem_slice_iter(&ca_pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TargetError::Unavailable(format!("the cluster CA is not PEM: {e}")))?;
        if certificates.is_empty() {
            return Err(TargetError::Unavailable(
                "the cluster CA holds no certificate".into(),
            ));
        }
        let url = if endpoint.contains("://") {
            endpoint
        } else {
            format!("https://{endpoint}")
        };
        let uri: http::Uri = url.parse().map_err(|e| {
            TargetError::Unavailable(format!("cluster endpoint {url:?} is not a URL: {e}"))
        })?;
        if uri.scheme_str() != Some("https") {
            return Err(TargetError::Unavailable(format!(
                "cluster endpoint {url:?} must be https: the token must never travel in clear"
            )));
        }
        let mut config = kube::Config::new(uri);
        config.root_cert = Some(certificates);
        config.default_retry = false;
        let base = kube::Client::try_from(config)
            .map_err(|e| TargetError::Unavailable(format!("building the cluster client: {e}")))?;
        let client = kube::Client::new(
            WithBearer {
                client: base,
                auth: self.auth.clone(),
            },
            "default",
        );
        Ok(KubernetesTarget::with_client(client))
    }

    /// `GET {api}/v1/projects/P/locations/L/clusters/C`: `endpoint` and
    /// `masterAuth.clusterCaCertificate` (base64 of PEM).
    async fn cluster_from_api(&self) -> Result<(String, Vec<u8>), TargetError> {
        let ClusterSource::Api {
            api,
            project,
            location,
            cluster,
        } = &self.source
        else {
            return Err(TargetError::Unavailable("no GKE API configured".into()));
        };
        let url = format!(
            "{}/v1/projects/{project}/locations/{location}/clusters/{cluster}",
            api.trim_end_matches('/')
        );
        let name = format!("projects/{project}/locations/{location}/clusters/{cluster}");
        let unavailable =
            |what: String| TargetError::Unavailable(format!("GKE API, {name}: {what}"));
        let response = self
            .http
            .get(&url)
            .header(http::header::AUTHORIZATION, self.auth.bearer().await?)
            .send()
            .await
            .map_err(|e| unavailable(format!("{e}")))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            return Err(unavailable(format!("HTTP {}: {message}", status.as_u16())));
        }
        let endpoint = body["endpoint"]
            .as_str()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| unavailable("the cluster has no endpoint".into()))?;
        let ca = body["masterAuth"]["clusterCaCertificate"]
            .as_str()
            .ok_or_else(|| {
                unavailable("the cluster has no masterAuth.clusterCaCertificate".into())
            })?;
        use base64::Engine as _;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca.trim())
            .map_err(|e| unavailable(format!("clusterCaCertificate is not base64: {e}")))?;
        Ok((endpoint.to_owned(), pem))
    }
}

#[async_trait::async_trait]
impl Target for GkeTarget {
    async fn scan(&self, namespaces: &[String]) -> Result<Option<Vec<Value>>, TargetError> {
        self.target().await?.scan(namespaces).await
    }

    fn watches(&self) -> bool {
        true
    }

    async fn watch(
        &self,
        namespaces: &[String],
        picture: &super::Picture,
        backstop: std::time::Duration,
    ) -> Result<(), TargetError> {
        self.target()
            .await?
            .watch(namespaces, picture, backstop)
            .await
    }

    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, TargetError> {
        self.target().await?.get(object).await
    }

    async fn apply(
        &self,
        object: &ObjectRef,
        body: &Value,
        expect: Expect<'_>,
    ) -> Result<Written, TargetError> {
        self.target().await?.apply(object, body, expect).await
    }

    async fn dry_run(&self, object: &ObjectRef, body: &Value) -> Result<(), TargetError> {
        self.target().await?.dry_run(object, body).await
    }

    async fn restore(
        &self,
        object: &ObjectRef,
        body: &Value,
        version: &str,
    ) -> Result<(), TargetError> {
        self.target().await?.restore(object, body, version).await
    }

    async fn delete(&self, object: &ObjectRef, version: Option<&str>) -> Result<(), TargetError> {
        self.target().await?.delete(object, version).await
    }
}

/// The bearer token on every request to the cluster. kube-rs has no public hook for a token
/// source of one's own, so this service sits in front of a plain client (TLS and the CA are
/// its) as the client's whole service stack.
#[derive(Clone)]
struct WithBearer {
    client: kube::Client,
    auth: GoogleAuth,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower::Service<Request<Body>> for WithBearer {
    type Response = Response<Body>;
    type Error = tower::BoxError;
    type Future = BoxFuture<Result<Response<Body>, tower::BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let bearer = this.auth.bearer().await?;
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, bearer);
            Ok(this.client.send(request).await?)
        })
    }
}
