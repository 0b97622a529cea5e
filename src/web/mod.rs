//! The HTTP surface: the JSON API under `/api/v1`, health checks, and the shared state.

pub mod actions;
pub mod api;
pub mod error;
pub mod extract;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Verifier;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::policy::Policy;
use crate::store::Store;
use crate::workers::WorkQueue;
use error::AppError;

/// Largest request body accepted; manifests have their own, smaller, per-target limit.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub clock: Clock,
    pub verifier: Arc<Verifier>,
    pub policies: Arc<HashMap<String, Policy>>,
    pub work: WorkQueue,
}

impl AppState {
    pub fn policy(&self, target: &str) -> Result<&Policy, AppError> {
        self.policies.get(target).ok_or(AppError::NotFound)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1", api::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
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
