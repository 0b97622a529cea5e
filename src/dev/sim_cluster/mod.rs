//! A simulated Kubernetes API server for `dev` mode and tests.
//!
//! It speaks enough of the real REST protocol (legacy discovery, server-side
//! printing, server-side apply, preconditions, `Status` errors) that kube-rs and an
//! unmodified kubectl use it exactly as they would a cluster, so the broker's real
//! Kubernetes code runs against it. It simulates GKE Binary Authorization with its
//! breakglass escape hatch and records every breakglass admission, which is what
//! the broker exists to govern and what its detector reconciles.
//!
//! Objects live in memory behind one mutex; handlers do a little JSON work under it
//! and nothing else, so the simulator never dominates the latency the broker measures.

mod admission;
mod api;
mod discovery;
mod failure;
mod merge;
mod objects;
mod policy;
mod resources;
mod selector;
mod status;
mod table;
mod watch;
mod writes;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::middleware;
use axum::routing::{any, get};
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use failure::{Failure, FailureState};
use objects::Store;
use status::ApiError;

/// The identity writes made with the configured token are attributed to.
/// It is the ServiceAccount `deploy/` ships, the one identity its admission policy trusts.
pub const BROKER_USER: &str = "system:serviceaccount:breakglass:breakglass-broker";

/// What the simulated cluster admits and who may write to it.
#[derive(Clone)]
pub struct SimClusterConfig {
    /// Bearer token that writes must carry (reads may be anonymous).
    pub write_token: String,
    /// Image prefixes that simulated Binary Authorization treats as attested,
    /// e.g. "us-docker.pkg.dev/acme/release/".
    pub attested_prefixes: Vec<String>,
    /// Namespaces that exist; objects in others get 404 NotFound namespace error.
    pub namespaces: Vec<String>,
}

/// The token is a credential, so it never reaches logs.
impl fmt::Debug for SimClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimClusterConfig")
            .field("write_token", &"<redacted>")
            .field("attested_prefixes", &self.attested_prefixes)
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

/// Identifies one object; `namespace` is empty for cluster-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    /// `v1`, `apps/v1`, `batch/v1`.
    pub api_version: String,
    /// `Deployment`, `Pod`, ...
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// Shorthand for tests and callers that think in `apiVersion`/`kind` strings.
    pub fn new(api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// One admission that used breakglass, as GKE would log it to Cloud Audit Logs.
///
/// Recorded whenever the pod (template) carries the breakglass label or annotation,
/// even if every image was attested, because GKE logs every use of the hatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakglassAdmission {
    /// When it was admitted, in milliseconds since the Unix epoch.
    pub at: u64,
    pub key: ObjectKey,
    /// Every image of the pod spec: containers, then init and ephemeral containers.
    pub images: Vec<String>,
    /// The authenticated user that made the write.
    pub user: String,
    /// Labels of the pod template (or Pod).
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pod template (or Pod).
    pub annotations: BTreeMap<String, String>,
    /// The write as GKE's audit log names it: `io.k8s.apps.v1.deployments.create` (a
    /// server-side apply is a `patch`, a replace an `update`).
    #[serde(default)]
    pub method: String,
    /// The object as GKE's audit log names it: `apps/v1/namespaces/prod/deployments/api`.
    #[serde(default)]
    pub resource_name: String,
    /// What the writer sent: the object, the patch or the apply configuration.
    #[serde(default)]
    pub request: Value,
    /// The object as the write stored it, with its UID and resourceVersion.
    #[serde(default)]
    pub response: Value,
}

/// Successful writes to one object, by kind; dry runs and refused writes do not count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCount {
    pub creates: u64,
    /// Server-side apply patches, whether they created the object or not.
    pub applies: u64,
    /// Merge and strategic merge patches.
    pub patches: u64,
    pub replaces: u64,
    pub deletes: u64,
}

impl WriteCount {
    /// Writes of a whole object: creates and server-side applies.
    pub fn applied(&self) -> u64 {
        self.creates + self.applies
    }

    pub fn total(&self) -> u64 {
        self.creates + self.applies + self.patches + self.replaces + self.deletes
    }
}

/// Reads of one resource since the simulated cluster started (`GET /sim/v1/reads`, keyed by
/// the resource's name: `pods`, `deployments.apps`), whoever made them, in any namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCount {
    /// Lists (GET of a collection without `watch`).
    pub lists: u64,
    /// Watches started.
    pub watches: u64,
    /// Watches answered 410 Expired: they asked to resume before the kept changes.
    pub expired_watches: u64,
}

/// One entry of `GET /sim/v1/writes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRecord {
    pub key: ObjectKey,
    pub count: WriteCount,
}

struct Inner {
    config: SimClusterConfig,
    /// Namespace objects, built once from the configuration.
    namespaces: Vec<Value>,
    store: Mutex<Store>,
    /// How the API misbehaves, if it does ([`SimCluster::set_failure_mode`]).
    failure: Mutex<Option<Failure>>,
    /// Requests a delaying failure holds right now.
    held: AtomicUsize,
    /// Requests a failure has held or failed, and of those the ones it failed, since start.
    affected: AtomicU64,
    failed: AtomicU64,
    /// Wakes the requests a delay holds when the failure is cleared.
    cleared: tokio::sync::Notify,
    /// People who may write workloads besides the broker: (token, user name).
    writers: Mutex<Vec<(String, String)>>,
    /// Whether the admission policy `deploy/` ships is in force (it is, unless turned off).
    policy: std::sync::atomic::AtomicBool,
    /// Lists and watches per resource.
    reads: Mutex<BTreeMap<String, ReadCount>>,
    /// Whether namespaced resources may be listed and watched across the cluster.
    cluster_wide_reads: std::sync::atomic::AtomicBool,
    /// Bumped to end every open watch ([`SimCluster::end_watches`]).
    restarts: tokio::sync::watch::Sender<u64>,
}

/// A handle on one simulated cluster; clones share it.
#[derive(Clone)]
pub struct SimCluster {
    inner: Arc<Inner>,
}

impl fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimCluster")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl SimCluster {
    pub fn new(config: SimClusterConfig) -> Self {
        let created = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let namespaces = config
            .namespaces
            .iter()
            .map(|name| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": name,
                        "uid": uuid::Uuid::new_v4().to_string(),
                        "resourceVersion": "1",
                        "creationTimestamp": created,
                        "labels": { "kubernetes.io/metadata.name": name },
                    },
                    "spec": { "finalizers": ["kubernetes"] },
                    "status": { "phase": "Active" },
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                config,
                namespaces,
                store: Mutex::new(Store::default()),
                failure: Mutex::new(None),
                held: AtomicUsize::new(0),
                affected: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                cleared: tokio::sync::Notify::new(),
                writers: Mutex::new(Vec::new()),
                policy: std::sync::atomic::AtomicBool::new(true),
                reads: Mutex::new(BTreeMap::new()),
                cluster_wide_reads: std::sync::atomic::AtomicBool::new(true),
                restarts: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// The whole API, mounted at "/".
    pub fn router(&self) -> Router {
        Router::new()
            .route("/version", get(discovery::version))
            .route("/api", get(discovery::api_versions))
            .route("/api/v1", get(discovery::core_resources))
            .route("/api/v1/{*rest}", any(api::handle))
            .route("/apis", get(discovery::api_groups))
            .route("/apis/{group}", get(discovery::api_group))
            .route("/apis/{group}/{version}", get(discovery::group_resources))
            .route("/apis/{group}/{version}/{*rest}", any(api::handle))
            .route("/sim/v1/breakglass-admissions", get(admissions_json))
            .route("/sim/v1/writes", get(writes_json))
            .route("/sim/v1/reads", get(reads_json))
            .route(
                "/sim/v1/admission-policy",
                get(policy_json).post(set_policy),
            )
            .route(
                "/sim/v1/failure",
                get(failure::show).post(failure::set).delete(failure::clear),
            )
            .fallback(|| async { ApiError::no_such_path() })
            .layer(middleware::from_fn_with_state(
                self.clone(),
                failure::inject,
            ))
            .layer(crate::dev::host::LoopbackOnly)
            .with_state(self.clone())
    }

    /// Binds nothing itself; serves on the given listener until the future is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Every breakglass admission so far (oldest first).
    pub fn breakglass_admissions(&self) -> Vec<BreakglassAdmission> {
        self.store().admissions()
    }

    /// How many successful writes (create/apply/patch/replace/delete) an object has had.
    pub fn write_count(&self, key: &ObjectKey) -> WriteCount {
        self.store().write_count(key)
    }

    /// Write counts of every object ever written, deleted ones included.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.store()
            .write_counts()
            .into_iter()
            .map(|(key, count)| WriteRecord { key, count })
            .collect()
    }

    /// Lists and watches of each resource so far, by resource name (`pods`,
    /// `deployments.apps`): how a test tells a client that watches from one that polls.
    pub fn reads(&self) -> BTreeMap<String, ReadCount> {
        self.reads_lock().clone()
    }

    fn reads_lock(&self) -> MutexGuard<'_, BTreeMap<String, ReadCount>> {
        self.inner
            .reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count_read(&self, res: &resources::ResourceType, count: impl FnOnce(&mut ReadCount)) {
        count(self.reads_lock().entry(res.qualified()).or_default());
    }

    fn count_list(&self, res: &resources::ResourceType) {
        self.count_read(res, |c| c.lists += 1);
    }

    fn count_watch(&self, res: &resources::ResourceType) {
        self.count_read(res, |c| c.watches += 1);
    }

    fn count_expired(&self, res: &resources::ResourceType) {
        self.count_read(res, |c| c.expired_watches += 1);
    }

    /// Allows or refuses (403) lists and watches of namespaced resources across the cluster,
    /// as RBAC does for a reader bound only in some namespaces; reads in a namespace stay open.
    pub fn set_cluster_wide_reads(&self, allowed: bool) {
        self.inner
            .cluster_wide_reads
            .store(allowed, Ordering::SeqCst);
    }

    fn cluster_wide_reads(&self) -> bool {
        self.inner.cluster_wide_reads.load(Ordering::SeqCst)
    }

    /// Ends every open watch at once, as a restart of the API server does; each client
    /// resumes from the last version it saw (and lists again if that is no longer kept).
    pub fn end_watches(&self) {
        self.inner.restarts.send_modify(|n| *n += 1);
    }

    fn restarts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.restarts.subscribe()
    }

    /// Keeps only the `limit` most recent changes for watches to replay (a few thousand
    /// unless set), forgetting older ones now: a small one lets a test outrun the history.
    pub fn set_watch_history(&self, limit: usize) {
        self.store().set_history(limit);
    }

    /// Current object, if it exists (for tests), as serde_json::Value.
    pub fn object(&self, key: &ObjectKey) -> Option<Value> {
        self.store().get(key)
    }

    /// Make the server answer every request with this HTTP status (e.g. 503) until cleared.
    ///
    /// The `/sim/v1/` observation endpoints keep answering, so a test can still see
    /// what happened while the API is failing.
    pub fn set_failure(&self, status: Option<u16>) {
        self.set_failure_mode(status.map(|status| Failure {
            status: Some(status),
            ..Failure::default()
        }));
    }

    /// Make the API fail, stall or slow down as `failure` says, until cleared with `None`
    /// (which also ends every hold at once); the same as `POST /sim/v1/failure`.
    pub fn set_failure_mode(&self, failure: Option<Failure>) {
        let clearing = failure.is_none();
        *self
            .inner
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
        if clearing {
            self.inner.cleared.notify_waiters();
        }
    }

    fn failure_mode(&self) -> Option<Failure> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The failure that affects a request with this method and path, if any. Deciding under
    /// the lock, in one step, spends the `pass_first` allowances exactly: of requests that
    /// arrive together, no more than that many pass, and no fewer.
    fn failure_for(&self, method: &axum::http::Method, path: &str) -> Option<Failure> {
        let mut current = self
            .inner
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let failure = current.as_mut().filter(|f| f.affects(method, path))?;
        if failure.pass_first > 0 {
            failure.pass_first -= 1;
            return None;
        }
        self.inner.affected.fetch_add(1, Ordering::SeqCst);
        Some(failure.clone())
    }

    /// The failure in force and how many requests it holds right now.
    pub fn failure_state(&self) -> FailureState {
        FailureState {
            failure: self.failure_mode(),
            held: self.inner.held.load(Ordering::SeqCst),
            affected: self.inner.affected.load(Ordering::SeqCst),
            failed: self.inner.failed.load(Ordering::SeqCst),
        }
    }

    /// A panic while holding the lock leaves the maps consistent (each write commits
    /// in one call), so a poisoned lock is still safe to use.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a person write with this bearer token, as `user`: someone with deploy rights who
    /// is not the broker.
    pub fn add_writer(&self, token: &str, user: &str) {
        self.inner
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((token.to_owned(), user.to_owned()));
    }

    /// Whether this bearer token is one a person was given with [`SimCluster::add_writer`].
    pub fn knows_writer(&self, token: &str) -> bool {
        self.writer(token).is_some()
    }

    /// The person a writer's token belongs to.
    fn writer(&self, token: &str) -> Option<String> {
        self.inner
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(t, _)| api::constant_time_eq(t, token))
            .map(|(_, user)| user.clone())
    }

    /// Installs or removes the admission policy that lets only the broker admit breakglass
    /// (on by default, as `deploy/` installs it).
    pub fn set_admission_policy(&self, enabled: bool) {
        self.inner.policy.store(enabled, Ordering::SeqCst);
    }

    pub fn admission_policy(&self) -> bool {
        self.inner.policy.load(Ordering::SeqCst)
    }

    fn config(&self) -> &SimClusterConfig {
        &self.inner.config
    }

    fn namespace_objects(&self) -> &[Value] {
        &self.inner.namespaces
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.inner.config.namespaces.iter().any(|n| n == namespace)
    }
}

async fn admissions_json(State(sim): State<SimCluster>) -> Json<Vec<BreakglassAdmission>> {
    Json(sim.breakglass_admissions())
}

#[derive(Serialize, Deserialize)]
struct PolicySetting {
    enabled: bool,
}

async fn policy_json(State(sim): State<SimCluster>) -> Json<PolicySetting> {
    Json(PolicySetting {
        enabled: sim.admission_policy(),
    })
}

/// `POST /sim/v1/admission-policy {"enabled": false}`: only with the broker's write token,
/// as only a cluster administrator removes an admission policy.
async fn set_policy(
    State(sim): State<SimCluster>,
    headers: axum::http::HeaderMap,
    Json(setting): Json<PolicySetting>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !api::constant_time_eq(token.trim(), &sim.config().write_token) {
        return ApiError::forbidden(
            "only the cluster's administrator may change admission policies",
        )
        .into_response();
    }
    sim.set_admission_policy(setting.enabled);
    Json(setting).into_response()
}

async fn writes_json(State(sim): State<SimCluster>) -> Json<Vec<WriteRecord>> {
    Json(sim.writes())
}

async fn reads_json(State(sim): State<SimCluster>) -> Json<BTreeMap<String, ReadCount>> {
    Json(sim.reads())
}

/// kubeconfig YAML text pointing at `server` (http://127.0.0.1:PORT); with Some(token) it carries the token as a user token.
///
/// kube-rs sends the token over plain HTTP; kubectl (client-go) drops credentials unless
/// the transport is TLS, so against the simulator kubectl is always anonymous: fine for
/// `get`, refused (401) for writes.
pub fn kubeconfig(server: &str, token: Option<&str>) -> String {
    // A JSON string is a valid YAML double-quoted scalar, which makes any value safe to embed.
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    let user = match token {
        Some(token) => format!("\n    token: {}", quote(token)),
        None => " {}".to_owned(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: breakglass-sim
  cluster:
    server: {server}
contexts:
- name: breakglass-sim
  context:
    cluster: breakglass-sim
    user: breakglass-sim
    namespace: default
current-context: breakglass-sim
preferences: {{}}
users:
- name: breakglass-sim
  user:{user}
",
        server = quote(server),
    )
}
