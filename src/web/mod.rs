//! The HTTP surface: the JSON API under `/api/v1`, health checks, and the shared state.

pub mod alerts;
pub mod api;
pub mod audit_api;
pub mod error;
pub mod extract;
pub mod notices;
pub mod pages;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Verifier;
use crate::auth::login::Login;
use crate::clock::Clock;
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::store::Store;
use error::AppError;

use crate::config::BODY_LIMIT;

/// How long a client may take to send a request's body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What every handler shares. Axum clones it for each request, so it is one `Arc`: one
/// counter to move instead of one per field (a profile under load had several percent of the
/// time in cloning and dropping the fields).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> AppState {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub config: Arc<Config>,
    pub store: Store,
    pub clock: Clock,
    pub verifier: Arc<Verifier>,
    pub login: Arc<Login>,
    /// Every transition of a request goes through it.
    pub lifecycle: Lifecycle,
    /// Cookies get `Secure` (and the `__Host-` prefix) when `public_url` is https.
    pub secure_cookies: bool,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Seals a sign-in in flight into its browser's cookie (shared by the replicas).
    pub login_key: axum_extra::extract::cookie::Key,
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .nest(
            "/api/v1",
            api::router()
                .merge(audit_api::router())
                .merge(alerts::api_router()),
        )
        .merge(pages::router())
        .merge(alerts::page_router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        // On each route: it labels what it counts with the route's template.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(state);
    let whole = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        // A body that trickles in is cut off rather than holding a connection for ever.
        .layer(RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .service(secured(routes));
    around(whole)
}

/// A router that sends every request to `service`: the layers in it wrap the whole router
/// once. `Router::layer` wraps each route on its own, boxed, and each of those boxes is cloned
/// and dropped for every request the route answers; once around the whole costs nothing per
/// layer.
fn around<S>(service: S) -> Router
where
    S: tower::Service<axum::extract::Request, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    Router::new().fallback_service(service)
}

/// Headers on every response: no inline script or style, no framing, no sniffing, no referrer
/// leaking request ids to other sites.
pub fn with_security_headers(router: Router) -> Router {
    around(secured(router))
}

/// A service whose every response carries [`with_security_headers`]' headers, replacing any
/// the service set. One step around the whole router: no box, no clone per request.
#[derive(Clone)]
struct Secured<S> {
    inner: S,
}

fn secured<S>(inner: S) -> Secured<S> {
    Secured { inner }
}

type Answer<B, E> = Result<axum::http::Response<B>, E>;

impl<S, Req, B> tower::Service<Req> for Secured<S>
where
    S: tower::Service<Req, Response = axum::http::Response<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Map<S::Future, fn(Answer<B, S::Error>) -> Answer<B, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        use futures_util::FutureExt;
        self.inner.call(request).map(with_headers)
    }
}

const CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
);

fn with_headers<B, E>(answer: Answer<B, E>) -> Answer<B, E> {
    answer.map(|mut response| {
        let headers = response.headers_mut();
        headers.reserve(4);
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CONTENT_SECURITY_POLICY, CSP);
        response
    })
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: its database answers.
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<&'static str, AppError> {
    state.store.ping().await?;
    Ok("ready")
}

async fn not_found() -> AppError {
    AppError::NotFound
}

/// For handlers that only need to say "done".
pub fn created<T>(value: T) -> (StatusCode, T) {
    (StatusCode::CREATED, value)
}
