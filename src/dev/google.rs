//! A simulated GCE metadata server and a simulated GKE API (`clusters.get`), for `dev` mode
//! and tests. The broker's google-cloud-auth talks to the metadata server as it would on GKE
//! with Workload Identity; the GKE API and the simulated GKE cluster accept only the tokens
//! this metadata server issued, and only until they expire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The service account the simulated metadata server speaks for.
pub const SERVICE_ACCOUNT: &str = "breakglass-broker@dev-project.iam.gserviceaccount.com";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const EMAIL_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/email";

/// What the simulated metadata server thinks of a bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

struct Inner {
    /// Every token issued, with when it stops being valid.
    issued: Mutex<HashMap<String, Instant>>,
    /// How long new tokens live, in seconds.
    lifetime: AtomicU64,
    /// When set, every token request fails with 503, as a metadata server in trouble does.
    down: AtomicBool,
    /// Scopes of the last token request, as the client sent them.
    last_scopes: Mutex<Option<String>>,
}

/// A handle on the simulated metadata server; clones share it.
#[derive(Clone)]
pub struct MetadataServer {
    inner: Arc<Inner>,
}

impl Default for MetadataServer {
    fn default() -> Self {
        MetadataServer {
            inner: Arc::new(Inner {
                issued: Mutex::new(HashMap::new()),
                lifetime: AtomicU64::new(3600),
                down: AtomicBool::new(false),
                last_scopes: Mutex::new(None),
            }),
        }
    }
}

impl MetadataServer {
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(root))
            .route(TOKEN_PATH, get(token))
            .route(EMAIL_PATH, get(email))
            .route(
                "/computeMetadata/v1/universe/universe-domain",
                get(universe),
            )
            .layer(super::host::LoopbackOnly)
            .with_state(self.clone())
    }

    /// How long tokens issued from now on live.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.inner
            .lifetime
            .store(lifetime.as_secs(), Ordering::SeqCst);
    }

    /// Makes token requests fail with 503 (true) or work again (false).
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    pub fn check(&self, token: &str) -> TokenCheck {
        match self.issued().get(token) {
            None => TokenCheck::Unknown,
            Some(until) if *until <= Instant::now() => TokenCheck::Expired,
            Some(_) => TokenCheck::Valid,
        }
    }

    /// How many tokens it has issued.
    pub fn tokens_issued(&self) -> usize {
        self.issued().len()
    }

    pub fn last_scopes(&self) -> Option<String> {
        lock(&self.inner.last_scopes).clone()
    }

    /// The check of a request's `Authorization: Bearer` token; None when it has none.
    pub fn check_header(&self, headers: &HeaderMap) -> Option<TokenCheck> {
        let value = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .unwrap_or_default();
        let token = value.strip_prefix("Bearer ")?;
        Some(self.check(token.trim()))
    }

    fn issued(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        lock(&self.inner.issued)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The real server refuses any request without `Metadata-Flavor: Google` (a guard against
/// server-side request forgery) and stamps the header on every answer.
fn flavored(headers: &HeaderMap, answer: impl FnOnce() -> Response) -> Response {
    let mut response = if headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"google"))
    {
        answer()
    } else {
        (
            StatusCode::FORBIDDEN,
            "Missing required header \"Metadata-Flavor\": \"Google\"",
        )
            .into_response()
    };
    response
        .headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    response
}

async fn root(headers: HeaderMap) -> Response {
    flavored(&headers, || "computeMetadata/\n".into_response())
}

async fn universe(headers: HeaderMap) -> Response {
    flavored(&headers, || "googleapis.com".into_response())
}

async fn email(headers: HeaderMap) -> Response {
    flavored(&headers, || SERVICE_ACCOUNT.into_response())
}

async fn token(
    State(server): State<MetadataServer>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    flavored(&headers, || {
        if server.inner.down.load(Ordering::SeqCst) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the simulated metadata server is down",
            )
                .into_response();
        }
        *lock(&server.inner.last_scopes) = query.get("scopes").cloned();
        let lifetime = server.inner.lifetime.load(Ordering::SeqCst);
        let token = format!("ya29.dev-{}", uuid::Uuid::new_v4().simple());
        server.issued().insert(
            token.clone(),
            Instant::now() + Duration::from_secs(lifetime),
        );
        Json(json!({
            "access_token": token,
            "expires_in": lifetime,
            "token_type": "Bearer",
        }))
        .into_response()
    })
}

/// One cluster the simulated GKE API knows.
#[derive(Clone, Debug)]
pub struct SimGkeCluster {
    /// `projects/P/locations/L/clusters/C`.
    pub name: String,
    /// `host:port`, as GKE gives it (no scheme).
    pub endpoint: String,
    pub ca_pem: String,
}

#[derive(Clone)]
struct GkeApi {
    metadata: MetadataServer,
    clusters: Arc<Vec<SimGkeCluster>>,
}

/// The simulated GKE API: `GET /v1/projects/P/locations/L/clusters/C`.
pub fn gke_api_router(metadata: MetadataServer, clusters: Vec<SimGkeCluster>) -> Router {
    Router::new()
        .route(
            "/v1/projects/{project}/locations/{location}/clusters/{cluster}",
            get(get_cluster),
        )
        .layer(super::host::LoopbackOnly)
        .with_state(GkeApi {
            metadata,
            clusters: Arc::new(clusters),
        })
}

fn google_error(status: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "error": { "code": status.as_u16(), "message": message, "status": reason },
    });
    (status, Json(body)).into_response()
}

async fn get_cluster(
    State(api): State<GkeApi>,
    Path((project, location, cluster)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if api.metadata.check_header(&headers) != Some(TokenCheck::Valid) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.".into(),
        );
    }
    let name = format!("projects/{project}/locations/{location}/clusters/{cluster}");
    let Some(found) = api.clusters.iter().find(|c| c.name == name) else {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Not found: {name}."),
        );
    };
    use base64::Engine as _;
    Json(json!({
        "name": cluster,
        "location": location,
        "selfLink": format!("https://container.googleapis.com/v1/{name}"),
        "endpoint": found.endpoint,
        "status": "RUNNING",
        "masterAuth": {
            "clusterCaCertificate":
                base64::engine::general_purpose::STANDARD.encode(found.ca_pem.as_bytes()),
        },
    }))
    .into_response()
}
