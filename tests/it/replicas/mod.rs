//! Several replicas, crashes, leases and outages: the real binary as separate processes on
//! loopback (`serve` from a configuration file, a standalone `sim-cluster` and `dev-idp`),
//! SQLite or PostgreSQL underneath; where a test must move time, brokers in this process with
//! a manual clock on the same shared cluster. Whatever happens, each request is applied once
//! and undone once, and nothing is lost.

mod crashes;
mod failure_knob;
mod leases;
mod notifications;
mod outages;
mod postgres;
mod racing;
mod text;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use breakglass_broker::clock::Clock;
use breakglass_broker::dev::sim_cluster::{
    Failure, FailureState, ObjectKey, WriteCount, WriteRecord,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{HOTFIX_IMAGE, deployment};

const BIN: &str = env!("CARGO_BIN_EXE_breakglass-broker");

/// One child process of the test, its stdout and stderr in a log file. Killed (SIGKILL) when
/// dropped, so a failing test leaves nothing running; its log is printed then.
struct Proc {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn<I, S>(name: &str, dir: &Path, args: I) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = tokio::process::Command::new(BIN)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info,sqlx=warn,kube=warn,tower_http=warn")
            .kill_on_drop(true)
            .spawn()
            .expect("the broker binary starts");
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the first line of output that `find` picks something out of.
    async fn wait_for<T>(&mut self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = self.output().lines().find_map(&find) {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never printed {what}:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no cleanup, exactly like a crash.
    async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("reaped");
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let output = self.output();
            let tail: Vec<&str> = output.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A broker process and where it answers.
struct Broker {
    proc: Proc,
    url: String,
}

/// The shared simulated cluster and dev issuer, each a process of its own, and a client.
struct Infra {
    dir: TempDir,
    _sim: Proc,
    _idp: Proc,
    sim_url: String,
    write_token: String,
    kubeconfig: PathBuf,
    issuer: String,
    http: reqwest::Client,
    tokens: HashMap<&'static str, String>,
}

impl Infra {
    async fn start() -> Infra {
        breakglass_broker::app::install_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let write_token = uuid::Uuid::new_v4().simple().to_string();
        let token_file = dir.path().join("write-token");
        std::fs::write(&token_file, &write_token).expect("token file");
        let kubeconfig = dir.path().join("broker-kubeconfig");
        let mut sim = Proc::spawn(
            "sim-cluster",
            dir.path(),
            [
                OsStr::new("sim-cluster"),
                OsStr::new("--listen"),
                OsStr::new("127.0.0.1:0"),
                OsStr::new("--write-token-file"),
                token_file.as_os_str(),
                OsStr::new("--kubeconfig"),
                kubeconfig.as_os_str(),
            ],
        );
        let mut idp = Proc::spawn(
            "dev-idp",
            dir.path(),
            ["dev-idp", "--listen", "127.0.0.1:0"],
        );
        let sim_url = sim
            .wait_for("its URL", |l| {
                l.strip_prefix("listening on ").map(str::to_owned)
            })
            .await;
        let issuer = idp
            .wait_for("its issuer", |l| {
                l.strip_prefix("issuer: ").map(str::to_owned)
            })
            .await;
        let http = reqwest::Client::new();
        let mut tokens = HashMap::new();
        for persona in ["alice", "bob", "carol", "dave"] {
            let body: Value = http
                .get(format!("{issuer}/token?persona={persona}"))
                .send()
                .await
                .expect("issuer answers")
                .json()
                .await
                .expect("token JSON");
            let token = body["id_token"].as_str().expect("id_token").to_owned();
            tokens.insert(persona, token);
        }
        Infra {
            dir,
            _sim: sim,
            _idp: idp,
            sim_url,
            write_token,
            kubeconfig,
            issuer,
            http,
            tokens,
        }
    }

    /// A configuration file for brokers on `database_url`: the dev target, on the shared
    /// simulated cluster and issuer, on a port of the system's choosing.
    fn config(&self, name: &str, database_url: &str) -> PathBuf {
        let text = format!(
            r#"public_url = "http://127.0.0.1/"
listen = "127.0.0.1:0"
database_url = "{database_url}"

[oidc]
issuer = "{issuer}"
client_id = "breakglass-dev"

[roles]
requesters = ["oncall"]
auditors = ["auditors"]

[[targets]]
name = "dev-cluster"
kind = "kubernetes"
credentials = "kubeconfig"
kubeconfig = "{kubeconfig}"
namespaces = ["default", "prod"]
max_duration = "4h"
approval_window = "30m"
approvals = [{{ group = "approvers", count = 2 }}]
images = {{ registries = ["us-docker.pkg.dev/"], require_digest = true }}
pods = {{ allow_automount_token = true }}
ticket_pattern = "^[A-Z][A-Z0-9]*-[0-9]+$"
"#,
            issuer = self.issuer,
            kubeconfig = self.kubeconfig.display(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("config file");
        path
    }

    /// Starts `breakglass-broker serve` and waits until it answers.
    async fn broker(&self, config: &Path, name: &str) -> Broker {
        let mut proc = Proc::spawn(
            name,
            self.dir.path(),
            [
                OsStr::new("serve"),
                OsStr::new("--config"),
                config.as_os_str(),
            ],
        );
        let listen = proc
            .wait_for("that it serves", |line| {
                let entry: Value = serde_json::from_str(line).ok()?;
                (entry["message"] == "breakglass-broker serving")
                    .then(|| entry["listen"].as_str().map(str::to_owned))
                    .flatten()
            })
            .await;
        Broker {
            proc,
            url: format!("http://{listen}"),
        }
    }

    /// A SQLite database in this test's temp dir, for brokers that restart on the same file.
    fn sqlite_url(&self, name: &str) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.dir.path().join(format!("{name}.db")).display()
        )
    }

    /// A broker in this process on the shared cluster and issuer, with `clock` for its time,
    /// so that a test can move its leases forward. Its worker runs as in `serve`.
    async fn broker_in_process(&self, config: &Path, clock: Clock) -> InProcess {
        let config = breakglass_broker::config::Config::load(config).expect("config loads");
        let mut broker = breakglass_broker::app::Broker::build(config, clock)
            .await
            .expect("broker builds");
        broker.start_worker();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let router = broker.router();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        InProcess {
            url,
            _broker: broker,
            server,
        }
    }

    async fn call(
        &self,
        broker: &str,
        method: Method,
        persona: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_within(broker, method, persona, path, body, Duration::from_secs(60))
            .await
    }

    /// Like [`Infra::call`], failing the test unless the broker answers within `limit`.
    async fn call_within(
        &self,
        broker: &str,
        method: Method,
        persona: &str,
        path: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{broker}{path}"))
            .bearer_auth(&self.tokens[persona])
            .timeout(limit);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("the broker did not answer within {limit:?}: {e}"));
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Files a request for a Deployment `name` as alice; returns (id, digest).
    async fn file(&self, broker: &str, name: &str, minutes: u64) -> (String, String) {
        self.file_manifest(broker, &deployment(name, HOTFIX_IMAGE), minutes)
            .await
    }

    /// Files a request for whatever `manifest` holds as alice; returns (id, digest).
    async fn file_manifest(&self, broker: &str, manifest: &str, minutes: u64) -> (String, String) {
        let (status, body) = self
            .call(
                broker,
                Method::POST,
                "alice",
                "/api/v1/requests",
                Some(json!({
                    "target": "dev-cluster",
                    "namespace": "prod",
                    "manifest": manifest,
                    "ticket": "INC-5",
                    "justification": "replicas under test",
                    "duration_minutes": minutes,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["digest"].as_str().expect("digest").to_owned(),
        )
    }

    async fn approve(
        &self,
        broker: &str,
        persona: &str,
        id: &str,
        digest: &str,
    ) -> (StatusCode, Value) {
        self.call(
            broker,
            Method::POST,
            persona,
            &format!("/api/v1/requests/{id}/approve"),
            Some(json!({ "digest": digest, "comment": "ok" })),
        )
        .await
    }

    async fn close(&self, broker: &str, id: &str) -> (StatusCode, Value) {
        self.call(
            broker,
            Method::POST,
            "alice",
            &format!("/api/v1/requests/{id}/close"),
            Some(json!({})),
        )
        .await
    }

    async fn show(&self, broker: &str, id: &str) -> Value {
        let (status, body) = self
            .call(
                broker,
                Method::GET,
                "dave",
                &format!("/api/v1/requests/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until every request is in the state `expected` names for it.
    async fn wait_for_states(
        &self,
        broker: &str,
        expected: &HashMap<String, &str>,
        within: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, body) = self
                .call(
                    broker,
                    Method::GET,
                    "dave",
                    "/api/v1/requests?limit=500",
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let states: HashMap<&str, &str> = body
                .as_array()
                .expect("list")
                .iter()
                .filter_map(|r| Some((r["id"].as_str()?, r["state"].as_str()?)))
                .collect();
            let behind: Vec<String> = expected
                .iter()
                .filter(|(id, state)| states.get(id.as_str()) != Some(*state))
                .map(|(id, state)| {
                    format!(
                        "{id} is {} not {state}",
                        states.get(id.as_str()).unwrap_or(&"missing")
                    )
                })
                .collect();
            if behind.is_empty() {
                return;
            }
            // A request that ended otherwise will not get there: say so now, not at the deadline.
            let ended: Vec<&String> = expected
                .keys()
                .filter(|id| {
                    states
                        .get(id.as_str())
                        .is_some_and(|s| ENDED.contains(s) && Some(s) != expected.get(*id))
                })
                .collect();
            assert!(
                ended.is_empty(),
                "ended otherwise: {:?}",
                &behind[..behind.len().min(5)]
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} requests never got there: {:?}",
                behind.len(),
                &behind[..behind.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The actions of a request's audit events, oldest first.
    async fn audit_actions(&self, broker: &str, id: &str) -> Vec<String> {
        let (status, events) = self
            .call(
                broker,
                Method::GET,
                "dave",
                &format!("/api/v1/audit?request={id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{events}");
        let mut actions: Vec<String> = events
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
            .collect();
        actions.reverse();
        actions
    }

    /// Successful writes per Deployment in `prod`, by name, as the simulated cluster counted.
    async fn writes(&self) -> HashMap<String, WriteCount> {
        let records: Vec<WriteRecord> = self
            .http
            .get(format!("{}/sim/v1/writes", self.sim_url))
            .send()
            .await
            .expect("sim answers")
            .json()
            .await
            .expect("writes JSON");
        records
            .into_iter()
            .filter(|r| r.key == ObjectKey::new("apps/v1", "Deployment", "prod", &r.key.name))
            .map(|r| (r.key.name, r.count))
            .collect()
    }

    async fn set_failure(&self, failure: Option<Failure>) {
        let url = format!("{}/sim/v1/failure", self.sim_url);
        let request = match failure {
            Some(failure) => self.http.post(url).json(&failure),
            None => self.http.delete(url),
        };
        let response = request
            .bearer_auth(&self.write_token)
            .send()
            .await
            .expect("sim answers");
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn failure_state(&self) -> FailureState {
        self.http
            .get(format!("{}/sim/v1/failure", self.sim_url))
            .send()
            .await
            .expect("sim answers")
            .json()
            .await
            .expect("failure JSON")
    }
}

/// A broker served from this process (see [`Infra::broker_in_process`]); stops when dropped.
struct InProcess {
    url: String,
    _broker: breakglass_broker::app::Broker,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Infra {
    /// Files and approves (bob and carol) a request on `broker`; returns its id.
    async fn file_and_approve(&self, broker: &str, manifest: &str, minutes: u64) -> String {
        let (id, digest) = self.file_manifest(broker, manifest, minutes).await;
        for persona in ["bob", "carol"] {
            let (status, body) = self.approve(broker, persona, &id, &digest).await;
            assert_eq!(status, StatusCode::OK, "{persona}: {body}");
        }
        id
    }

    /// Waits until the simulated cluster holds at least `count` requests (a write stored and
    /// its answer held, with `after_commit`), failing the test after a generous minute.
    async fn wait_for_held(&self, count: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let state = self.failure_state().await;
            if state.held >= count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: the cluster never held {count} requests: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the writes to `names` are exactly `expected` (see [`Infra::write_counts`]),
    /// failing the test after a generous minute.
    async fn wait_for_writes(&self, names: &[String], expected: &[(u64, u64, u64)], what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let counts = self.write_counts(names).await;
            if counts == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: the writes to {names:?} are {counts:?}, never {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request's state as `dave` sees it.
    async fn state_of(&self, broker: &str, id: &str) -> String {
        self.show(broker, id).await["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// (applies, deletes, every write) for each of `names`, as the simulated cluster counted.
    async fn write_counts(&self, names: &[String]) -> Vec<(u64, u64, u64)> {
        let writes = self.writes().await;
        names
            .iter()
            .map(|name| {
                writes
                    .get(name)
                    .map_or((0, 0, 0), |c| (c.applied(), c.deletes, c.total()))
            })
            .collect()
    }
}

/// States a request never leaves in these tests (nobody ends a `needs_attention` here).
const ENDED: [&str; 7] = [
    "expired",
    "closed",
    "rejected",
    "cancelled",
    "lapsed",
    "failed",
    "needs_attention",
];

fn count(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

/// A manifest of `n` Deployments named `{prefix}-0` ... `{prefix}-{n-1}`, and their names.
fn deployments(prefix: &str, n: usize) -> (String, Vec<String>) {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let manifest = names
        .iter()
        .map(|name| deployment(name, HOTFIX_IMAGE))
        .collect::<Vec<_>>()
        .join("---\n");
    (manifest, names)
}

/// A connection to a broker's PostgreSQL database, for what only the database can show or do
/// (a lease's expiry, a row lock that stalls a worker's renewals).
async fn pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .expect("the test database answers")
}

/// A request's lease, as the database holds it: (owner, until).
async fn lease_of(conn: &mut sqlx::PgConnection, id: &str) -> (Option<String>, Option<i64>) {
    sqlx::query_as("SELECT lease_owner, lease_until FROM requests WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
        .expect("the request row")
}
