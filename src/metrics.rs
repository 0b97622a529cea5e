//! What an operator scrapes: the Prometheus (OpenMetrics) text of one broker replica.
//!
//! Counters and histograms move as things happen: HTTP requests (by route template, method
//! and status), and the outcomes and latencies of applies and ends, taken from the lifecycle
//! events the replica commits. Gauges that describe the shared database (requests by state,
//! how late the worker is, the last verified audit event) are read from it at scrape time, so
//! every replica reports the same truth about them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;

use crate::clock::Millis;
use crate::domain::{AuditAction, State as RequestState};
use crate::lifecycle::LifecycleEvent;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    connections: &'static str,
}

/// One replica's metrics.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram>,
    applies: Family<OutcomeLabels, Counter>,
    apply_seconds: Histogram,
    ends: Family<OutcomeLabels, Counter>,
    end_seconds: Histogram,
    requests: Family<StateLabels, Gauge>,
    worker_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pool: Family<PoolLabels, Gauge>,
    audit_verified_seq: Gauge,
    audit_waiting: Gauge,
    audit_waiting_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// When each request in flight became due to apply or to end, by the broker's clock.
    due_since: Mutex<HashMap<String, Millis>>,
}

/// Seconds, from a millisecond on the broker's clock to 10 minutes.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0, 600.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("breakglass");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            http_seconds.clone(),
        );
        let applies = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "applies",
            "Applies finished on this replica, by outcome (applied, failed)",
            applies.clone(),
        );
        let apply_seconds = Histogram::new(latency_buckets());
        registry.register(
            "apply_latency_seconds",
            "From the last approval to the objects applied (or the apply failed)",
            apply_seconds.clone(),
        );
        let ends = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ends",
            "Ends finished on this replica, by outcome (expired, closed, needs_attention)",
            ends.clone(),
        );
        let end_seconds = Histogram::new(latency_buckets());
        registry.register(
            "end_latency_seconds",
            "From the moment a breakglass was due to end (its expiry, or a close) to its undo",
            end_seconds.clone(),
        );
        let requests = Family::<StateLabels, Gauge>::default();
        registry.register(
            "requests",
            "Requests in the database, by state",
            requests.clone(),
        );
        let worker_lag_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "worker_lag_seconds",
            "How late the earliest due piece of work is (0 when nothing is overdue)",
            worker_lag_seconds.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "database_pool_connections",
            "This replica's database connections, in use and idle",
            pool.clone(),
        );
        let audit_verified_seq = Gauge::default();
        registry.register(
            "audit_verified_seq",
            "The last audit event a verification of the whole chain found intact",
            audit_verified_seq.clone(),
        );
        let audit_waiting = Gauge::default();
        registry.register(
            "audit_journal_waiting",
            "Audit events committed but not yet in the chain (any replica's)",
            audit_waiting.clone(),
        );
        let audit_waiting_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "audit_journal_oldest_seconds",
            "How long the oldest audit event waiting for its place in the chain has waited (0 when none does)",
            audit_waiting_seconds.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_seconds,
            applies,
            apply_seconds,
            ends,
            end_seconds,
            requests,
            worker_lag_seconds,
            pool,
            audit_verified_seq,
            audit_waiting,
            audit_waiting_seconds,
            due_since: Mutex::new(HashMap::new()),
        }
    }

    fn observe_http(&self, route: String, method: String, status: u16, seconds: f64) {
        self.http_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method: method.clone(),
            })
            .observe(seconds);
        self.http_requests
            .get_or_create(&HttpLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// Counts and times applies and ends from the lifecycle events this replica commits.
    fn observe_event(&self, event: &LifecycleEvent, due_end: Option<Millis>) {
        let mut due = self
            .due_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = |due: &mut HashMap<String, Millis>| {
            due.remove(&event.request_id)
                .map(|at| (event.at - at).max(0) as f64 / 1000.0)
        };
        match event.action {
            AuditAction::FullyApproved | AuditAction::CloseRequested => {
                due.insert(event.request_id.clone(), event.at);
            }
            AuditAction::Applied | AuditAction::Failed => {
                let outcome = if event.action == AuditAction::Applied {
                    "applied"
                } else {
                    "failed"
                };
                self.applies
                    .get_or_create(&OutcomeLabels {
                        outcome: outcome.into(),
                    })
                    .inc();
                if let Some(seconds) = since(&mut due) {
                    self.apply_seconds.observe(seconds);
                }
            }
            AuditAction::Expired | AuditAction::Closed | AuditAction::NeedsAttention => {
                let outcome = event.action.as_str().trim_start_matches("request.");
                self.ends
                    .get_or_create(&OutcomeLabels {
                        outcome: outcome.into(),
                    })
                    .inc();
                let seconds = since(&mut due)
                    .or_else(|| due_end.map(|at| (event.at - at).max(0) as f64 / 1000.0));
                if let Some(seconds) = seconds {
                    self.end_seconds.observe(seconds);
                }
            }
            AuditAction::Rejected | AuditAction::Cancelled | AuditAction::Lapsed => {
                due.remove(&event.request_id);
            }
            _ => {}
        }
    }

    /// Reads what the gauges show from the database, then writes the whole text.
    pub async fn scrape(
        &self,
        store: &Store,
        now: Millis,
    ) -> Result<String, crate::store::StoreError> {
        let counts = store.count_by_state().await?;
        for state in RequestState::ALL {
            let count = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.requests
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(count);
        }
        let lag = store
            .oldest_due(now)
            .await?
            .map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
        self.worker_lag_seconds.set(lag);
        let pool = store.pool();
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        let size = i64::from(pool.size());
        self.pool
            .get_or_create(&PoolLabels {
                connections: "in_use",
            })
            .set(size - idle);
        self.pool
            .get_or_create(&PoolLabels {
                connections: "idle",
            })
            .set(idle);
        let (waiting, oldest) = store.journal_backlog().await?;
        self.audit_waiting.set(waiting);
        self.audit_waiting_seconds
            .set(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0));
        if let Some(check) = store.last_audit_check().await? {
            self.audit_verified_seq.set(check.verified_through);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        Ok(text)
    }
}

/// Follows the lifecycle events of this replica into the metrics until the broker stops.
pub fn follow(
    metrics: Arc<Metrics>,
    store: Store,
    mut events: broadcast::Receiver<LifecycleEvent>,
) {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    // An expiry was due at the request's expiry; a close, when it was asked for.
                    let due_end = if event.action == AuditAction::Expired {
                        store
                            .request(&event.request_id)
                            .await
                            .ok()
                            .flatten()
                            .and_then(|r| r.expires_at)
                    } else {
                        None
                    };
                    metrics.observe_event(&event, due_end);
                }
                // Metrics may miss events under a burst; the work itself never waits for them.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Counts and times every HTTP request by the route it matched (the template, never the
/// path itself, so ids do not become labels).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe_http(
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub async fn endpoint(State(state): State<crate::web::AppState>) -> Response {
    match state.metrics.scrape(&state.store, state.clock.now()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics could not be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not answer\n",
            )
                .into_response()
        }
    }
}
