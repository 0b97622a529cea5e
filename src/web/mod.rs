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
use tower_http::set_header::SetResponseHeaderLayer;
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

#[derive(Clone)]
pub struct AppState {
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
    let router = Router::new()
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
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // A body that trickles in is cut off rather than holding a connection for ever.
        .layer(RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT));
    with_security_headers(router).layer(TraceLayer::new_for_http())
}

/// Headers on every response: no inline script or style, no framing, no sniffing, no referrer
/// leaking request ids to other sites.
pub fn with_security_headers(router: Router) -> Router {
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
               form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
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
