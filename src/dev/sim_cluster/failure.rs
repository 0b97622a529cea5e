//! Failure injection: make the API fail, stall or slow down, from the process that owns the
//! simulator ([`super::SimCluster::set_failure`]) or over HTTP (`/sim/v1/failure`), so that
//! tests in other processes can put a broker in the middle of a failing or stalled apply.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::SimCluster;
use super::api::constant_time_eq;
use super::status::ApiError;

/// How the API misbehaves until cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The HTTP status every affected request gets (e.g. 503); none makes them only slow.
    #[serde(default)]
    pub status: Option<u16>,
    /// How long each affected request is held before it is answered (or, without `status`,
    /// served). Clearing the failure ends every hold at once, so a test can choose the moment;
    /// a request that fails is still failed: what happens to it is decided when it arrives.
    #[serde(default)]
    pub delay_ms: u64,
    /// Affect only writes (anything but GET and HEAD), so reads still answer.
    #[serde(default)]
    pub writes_only: bool,
    /// Serve the request first (a write is stored), then hold the answer for `delay_ms`
    /// and answer with `status` if one is set: the client cannot tell that its write landed.
    /// An answer whose client went away meanwhile is dropped.
    #[serde(default)]
    pub after_commit: bool,
    /// Affect only these HTTP methods (e.g. `["DELETE"]`); none means every method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Let this many affected requests through untouched before the failure starts, so a
    /// test can let an apply's first write land and refuse the next.
    #[serde(default)]
    pub pass_first: u32,
}

/// The collections the detector lists and watches across the cluster.
const DETECTOR_LISTS: [&str; 7] = [
    "/pods",
    "/deployments",
    "/replicasets",
    "/statefulsets",
    "/daemonsets",
    "/jobs",
    "/cronjobs",
];

impl Failure {
    /// Whether this failure applies to a request with this method and path.
    pub(super) fn affects(&self, method: &Method, path: &str) -> bool {
        if path.starts_with("/sim/") {
            return false;
        }
        let read = method == Method::GET || method == Method::HEAD;
        // The detector lists and watches these across the cluster; a failure meant for the
        // broker's own calls must not be spent on those reads, or counts of attempts and
        // `pass_first` allowances would depend on when the detector last read.
        let detector_list = read
            && !path.contains("/namespaces/")
            && DETECTOR_LISTS.iter().any(|plural| path.ends_with(plural));
        if (self.writes_only && read) || detector_list {
            return false;
        }
        match &self.methods {
            Some(methods) => methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method.as_str())),
            None => true,
        }
    }
}

/// `GET /sim/v1/failure`: the failure in force, how many requests it holds right now, and how
/// many it has affected so far, so that a test can count a client's attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureState {
    pub failure: Option<Failure>,
    pub held: usize,
    /// Requests any failure has held or failed since the simulator started (the ones
    /// `pass_first` let through do not count).
    #[serde(default)]
    pub affected: u64,
    /// Of those, the ones answered with a failure's `status`.
    #[serde(default)]
    pub failed: u64,
}

/// Counts a held request for as long as it is held, including when its client goes away.
struct Held<'a>(&'a SimCluster);

impl<'a> Held<'a> {
    fn new(sim: &'a SimCluster) -> Self {
        sim.inner.held.fetch_add(1, Ordering::SeqCst);
        Held(sim)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.inner.held.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) async fn inject(
    State(sim): State<SimCluster>,
    request: Request,
    next: Next,
) -> Response {
    let Some(failure) = sim.failure_for(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    if failure.after_commit {
        let response = next.run(request).await;
        hold(&sim, failure.delay_ms).await;
        return match failure.status {
            Some(code) => injected(&sim, code),
            None => response,
        };
    }
    hold(&sim, failure.delay_ms).await;
    match failure.status {
        Some(code) => injected(&sim, code),
        None => next.run(request).await,
    }
}

fn injected(sim: &SimCluster, code: u16) -> Response {
    sim.inner.failed.fetch_add(1, Ordering::SeqCst);
    ApiError::injected(code).into_response()
}

/// Holds a request for `delay_ms`, or until the failure is cleared, counted in
/// [`FailureState::held`] while it waits.
async fn hold(sim: &SimCluster, delay_ms: u64) {
    if delay_ms > 0 {
        let cleared = sim.inner.cleared.notified();
        tokio::pin!(cleared);
        cleared.as_mut().enable();
        let _held = Held::new(sim);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            () = cleared => {}
        }
    }
}

pub(super) async fn show(State(sim): State<SimCluster>) -> Json<FailureState> {
    Json(sim.failure_state())
}

/// `POST /sim/v1/failure` with a [`Failure`]; needs the write token, like any change.
pub(super) async fn set(
    State(sim): State<SimCluster>,
    headers: HeaderMap,
    Json(failure): Json<Failure>,
) -> Response {
    if let Some(refused) = refusal(&sim, &headers) {
        return refused;
    }
    if failure.status.is_some_and(|s| !(400..=599).contains(&s)) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "status must be an HTTP error status (400-599)" })),
        )
            .into_response();
    }
    sim.set_failure_mode(Some(failure));
    Json(sim.failure_state()).into_response()
}

/// `DELETE /sim/v1/failure`: back to normal.
pub(super) async fn clear(State(sim): State<SimCluster>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&sim, &headers) {
        return refused;
    }
    sim.set_failure_mode(None);
    Json(sim.failure_state()).into_response()
}

/// The answer to a change without the write token, or None when the token is there.
fn refusal(sim: &SimCluster, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if !token.is_empty() && constant_time_eq(token, &sim.config().write_token) {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "changing the simulated failure needs the write token" })),
            )
                .into_response(),
        )
    }
}
