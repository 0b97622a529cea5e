//! A simulated Cloud Run Admin API v2 for `dev` mode and tests.
//!
//! It speaks the REST form of the real API (services get, list, create, patch and delete;
//! long-running operations get and wait; revisions list; Google's JSON error shape) closely
//! enough that Google's own client library reads it, so the broker's real Cloud Run code runs
//! against it. Every write that changes the template makes a revision at once and checks it
//! with a simulated Binary Authorization: an image outside the attested prefixes is admitted
//! only with a `binaryAuthorization.breakglassJustification`, and each such admission is
//! recorded for the tests and the detector to read. A revision made under a justification
//! carries it in its `run.googleapis.com/binary-authorization-breakglass` annotation. `traffic`
//! is honored (latest, or named ready revisions adding up to 100), in `trafficStatuses` too.
//!
//! Everything lives in memory behind one mutex; operations finish inside the write that starts
//! them, but the write still answers with an operation that is not done, as Cloud Run does, so
//! clients must wait for it.

mod api;
mod reconcile;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

/// Decides whether a bearer token may use the API, and names whom it stands for (the
/// `creator` and `lastModifier` of what it writes).
pub type Authorizer = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Whom writes are attributed to while any non-empty bearer token is accepted.
pub const ANY_BEARER: &str = "bearer@dev-project.iam.gserviceaccount.com";

/// Accepts any non-empty bearer token; replace it to accept only tokens a known issuer made.
pub fn any_bearer() -> Authorizer {
    Arc::new(|token: &str| (!token.trim().is_empty()).then(|| ANY_BEARER.to_owned()))
}

#[derive(Clone)]
pub struct SimRunConfig {
    pub project: String,
    pub region: String,
    /// Image prefixes that simulated Binary Authorization treats as attested.
    pub attested_prefixes: Vec<String>,
    pub authorize: Authorizer,
}

impl fmt::Debug for SimRunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRunConfig")
            .field("project", &self.project)
            .field("region", &self.region)
            .field("attested_prefixes", &self.attested_prefixes)
            .finish_non_exhaustive()
    }
}

/// A revision admitted only because its service carried a breakglass justification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunBreakglassAdmission {
    /// The service's full name, `projects/P/locations/L/services/S`.
    pub service: String,
    pub revision: String,
    pub images: Vec<String>,
    pub justification: String,
    /// Who wrote the service that made the revision.
    pub by: String,
    pub at: String,
}

#[derive(Clone, Default)]
struct State {
    /// By full name.
    services: BTreeMap<String, Value>,
    /// By service full name, oldest first.
    revisions: BTreeMap<String, Vec<Value>>,
    operations: BTreeMap<String, Value>,
    admissions: Vec<RunBreakglassAdmission>,
    /// Bumped by every change, so that every version of every service has its own etag.
    counter: u64,
    /// Successful writes per service short name.
    writes: BTreeMap<String, u64>,
    /// A write someone else makes just before the next write to a service: a race, on cue.
    cued: BTreeMap<String, (Value, String)>,
}

#[derive(Clone)]
pub struct SimRun {
    config: Arc<SimRunConfig>,
    state: Arc<Mutex<State>>,
}

impl SimRun {
    pub fn new(config: SimRunConfig) -> SimRun {
        SimRun {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// `projects/P/locations/L`.
    pub fn parent(&self) -> String {
        format!(
            "projects/{}/locations/{}",
            self.config.project, self.config.region
        )
    }

    pub fn service_name(&self, service: &str) -> String {
        format!("{}/services/{service}", self.parent())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain JSON behind, still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a service as its owner would, with `image` in its one container, ready and
    /// serving (an attested image, or an unattested one with a justification in `service`).
    pub fn seed(&self, id: &str, image: &str, service_account: &str) {
        let body = json!({
            "labels": { "app": id },
            "ingress": "INGRESS_TRAFFIC_ALL",
            "template": {
                "labels": { "app": id },
                "serviceAccount": service_account,
                "containers": [{ "image": image, "ports": [{ "containerPort": 8080 }] }],
            },
        });
        let mut state = self.state();
        // A seed is a plain create by the service's owner; it cannot clash on a fresh name.
        let _ = reconcile::create(&self.config, &mut state, id, body, "owner@dev-project.iam");
    }

    /// Writes the service's user fields in `fields` (over what it has) as `who`, as a deploy
    /// by someone else would.
    pub fn write_as(&self, who: &str, id: &str, fields: Value) -> Result<(), String> {
        let mut state = self.state();
        write_over(&self.config, &mut state, id, fields, who)
    }

    /// Makes `fields` land on service `id`, as `who`, right before the next write to it
    /// reaches the simulation: someone racing the writer.
    pub fn cue_write_before_next(&self, who: &str, id: &str, fields: Value) {
        self.state()
            .cued
            .insert(id.to_owned(), (fields, who.to_owned()));
    }

    /// The service as the API would show it, by short name.
    pub fn service(&self, id: &str) -> Option<Value> {
        self.state().services.get(&self.service_name(id)).cloned()
    }

    /// The service's revisions, oldest first.
    pub fn revisions(&self, id: &str) -> Vec<Value> {
        self.state()
            .revisions
            .get(&self.service_name(id))
            .cloned()
            .unwrap_or_default()
    }

    /// Every breakglass admission so far, oldest first.
    pub fn breakglass_admissions(&self) -> Vec<RunBreakglassAdmission> {
        self.state().admissions.clone()
    }

    /// How many successful writes (create, patch, delete) a service has had.
    pub fn write_count(&self, id: &str) -> u64 {
        self.state().writes.get(id).copied().unwrap_or(0)
    }

    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, api::router(self)).await
    }
}

/// `fields` laid over the live service's user fields, written as `who`.
fn write_over(
    config: &SimRunConfig,
    state: &mut State,
    id: &str,
    fields: Value,
    who: &str,
) -> Result<(), String> {
    let name = format!(
        "projects/{}/locations/{}/services/{id}",
        config.project, config.region
    );
    let mut body = state
        .services
        .get(&name)
        .cloned()
        .ok_or_else(|| format!("no service {id}"))?;
    for (key, value) in fields.as_object().into_iter().flatten() {
        body[key] = value.clone();
    }
    if let Some(map) = body.as_object_mut() {
        map.remove("etag");
    }
    reconcile::patch(config, state, id, body, None, who)
        .map(|_| ())
        .map_err(|e| e.2)
}
