//! Several replicas, crashes and outages: the real binary as separate processes on loopback
//! (`serve` from a configuration file, a standalone `sim-cluster` and `dev-idp`), PostgreSQL
//! underneath. Whatever happens, each request is applied once and undone once, and nothing is
//! lost.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use breakglass_broker::dev::sim_cluster::{
    Failure, FailureState, ObjectKey, WriteCount, WriteRecord,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinSet;

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};
use crate::store::FreshPostgres;

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

    async fn call(
        &self,
        broker: &str,
        method: Method,
        persona: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{broker}{path}"))
            .bearer_auth(&self.tokens[persona])
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("broker answers");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Files a request for a Deployment `name` as alice; returns (id, digest).
    async fn file(&self, broker: &str, name: &str, minutes: u64) -> (String, String) {
        let (status, body) = self
            .call(
                broker,
                Method::POST,
                "alice",
                "/api/v1/requests",
                Some(json!({
                    "target": "dev-cluster",
                    "namespace": "prod",
                    "manifest": deployment(name, HOTFIX_IMAGE),
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

fn count(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_apply_and_undo_each_of_fifty_racing_requests_exactly_once() {
    const TOTAL: usize = 50;
    /// These run for a minute and expire, with all three workers waking for the deadline;
    /// the others are closed early by their requester.
    const EXPIRING: usize = 5;
    let infra = Infra::start().await;
    let database = FreshPostgres::create().await;
    let config = infra.config("replica", &database.url);
    // Started together, so they also race to migrate the fresh database.
    let (a, b, c) = tokio::join!(
        infra.broker(&config, "replica-a"),
        infra.broker(&config, "replica-b"),
        infra.broker(&config, "replica-c"),
    );
    let replicas: Vec<String> = [&a, &b, &c].iter().map(|b| b.url.clone()).collect();
    let infra = std::sync::Arc::new(infra);

    // Each request is filed on one replica and its two approvals race on the two others; a
    // dozen requests at a time, enough to overlap everywhere without drowning a CI machine.
    let mut filing = JoinSet::new();
    let at_once = std::sync::Arc::new(tokio::sync::Semaphore::new(12));
    for i in 0..TOTAL {
        let infra = infra.clone();
        let replicas = replicas.clone();
        let at_once = at_once.clone();
        filing.spawn(async move {
            let _turn = at_once.acquire().await.expect("semaphore");
            let minutes = if i < EXPIRING { 1 } else { 60 };
            let (id, digest) = infra
                .file(&replicas[i % 3], &format!("race-{i}"), minutes)
                .await;
            let (bob, carol) = tokio::join!(
                infra.approve(&replicas[(i + 1) % 3], "bob", &id, &digest),
                infra.approve(&replicas[(i + 2) % 3], "carol", &id, &digest),
            );
            assert_eq!(bob.0, StatusCode::OK, "{}", bob.1);
            assert_eq!(carol.0, StatusCode::OK, "{}", carol.1);
            (i, id)
        });
    }
    let mut ids = vec![String::new(); TOTAL];
    while let Some(done) = filing.join_next().await {
        let (i, id) = done.expect("filing task");
        ids[i] = id;
    }
    let all_active: HashMap<String, &str> = ids.iter().map(|id| (id.clone(), "active")).collect();
    infra
        .wait_for_states(&replicas[0], &all_active, Duration::from_secs(30))
        .await;

    // The requester closes the others, half of them twice at once on two replicas.
    let mut closing = JoinSet::new();
    for (i, id) in ids.iter().enumerate().skip(EXPIRING) {
        let infra = infra.clone();
        let replicas = replicas.clone();
        let id = id.clone();
        closing.spawn(async move {
            if i % 2 == 0 {
                let (status, body) = infra.close(&replicas[i % 3], &id).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            } else {
                let (first, second) = tokio::join!(
                    infra.close(&replicas[i % 3], &id),
                    infra.close(&replicas[(i + 1) % 3], &id),
                );
                let mut statuses = [first.0, second.0];
                statuses.sort();
                assert_eq!(
                    statuses,
                    [StatusCode::OK, StatusCode::CONFLICT],
                    "one close wins: {} / {}",
                    first.1,
                    second.1
                );
            }
        });
    }
    while let Some(done) = closing.join_next().await {
        done.expect("closing task");
    }
    let ended: HashMap<String, &str> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), if i < EXPIRING { "expired" } else { "closed" }))
        .collect();
    infra
        .wait_for_states(&replicas[1], &ended, Duration::from_secs(120))
        .await;

    let writes = infra.writes().await;
    assert_eq!(writes.len(), TOTAL, "one object per request: {writes:?}");
    for i in 0..TOTAL {
        let written = writes[&format!("race-{i}")];
        assert_eq!(
            (written.applies, written.deletes, written.total()),
            (1, 1, 2),
            "race-{i} was applied once and undone once"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let actions = infra.audit_actions(&replicas[i % 3], id).await;
        let end = if i < EXPIRING {
            "request.expired"
        } else {
            "request.closed"
        };
        for (action, times) in [
            ("request.approved", 2),
            ("request.fully_approved", 1),
            ("request.applying", 1),
            ("request.applied", 1),
            (end, 1),
        ] {
            assert_eq!(count(&actions, action), times, "{action} in {actions:?}");
        }
    }
    for broker in [a, b, c] {
        let mut proc = broker.proc;
        assert!(proc.is_running(), "{} is still up", proc.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_apply_is_finished_by_the_next_start_with_one_apply_and_a_complete_audit()
 {
    let infra = Infra::start().await;
    let database = FreshPostgres::create().await;
    let config = infra.config("broker", &database.url);
    let mut first = infra.broker(&config, "broker-first").await;

    // The cluster reads normally but holds every write for two minutes, then fails it.
    infra
        .set_failure(Some(Failure {
            status: Some(503),
            delay_ms: 120_000,
            writes_only: true,
            ..Failure::default()
        }))
        .await;
    let (id, digest) = infra.file(&first.url, "crash", 60).await;
    assert_eq!(
        infra.approve(&first.url, "bob", &id, &digest).await.0,
        StatusCode::OK
    );
    assert_eq!(
        infra.approve(&first.url, "carol", &id, &digest).await.0,
        StatusCode::OK
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while infra.failure_state().await.held == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker never wrote"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Mid-apply: `applying` is recorded and the server-side apply is in flight.
    let actions = infra.audit_actions(&first.url, &id).await;
    assert_eq!(actions.last().map(String::as_str), Some("request.applying"));
    first.proc.kill().await;
    infra.set_failure(None).await;

    let second = infra.broker(&config, "broker-second").await;
    let expected = HashMap::from([(id.clone(), "active")]);
    infra
        .wait_for_states(&second.url, &expected, Duration::from_secs(60))
        .await;
    let writes = infra.writes().await;
    assert_eq!(
        writes.get("crash").map(|c| (c.applies, c.total())),
        Some((1, 1)),
        "applied once: {writes:?}"
    );
    let shown = infra.show(&second.url, &id).await;
    assert!(shown["applied_at"].is_string(), "{shown}");
    assert_eq!(
        infra.audit_actions(&second.url, &id).await,
        [
            "request.created",
            "request.approved",
            "request.approved",
            "request.fully_approved",
            "request.applying",
            "request.applied",
        ]
    );

    assert_eq!(infra.close(&second.url, &id).await.0, StatusCode::OK);
    let expected = HashMap::from([(id.clone(), "closed")]);
    infra
        .wait_for_states(&second.url, &expected, Duration::from_secs(30))
        .await;
    let writes = infra.writes().await;
    assert_eq!(
        writes.get("crash").map(|c| (c.applies, c.deletes)),
        Some((1, 1))
    );
}

/// A PostgreSQL server of this test's own, in a temp dir on a free port, so that it can be
/// stopped without disturbing anything else. PostgreSQL refuses to run as root; as root, it
/// runs as the `postgres` user the server packages create.
struct PrivatePostgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = std::fs::metadata(dir.path()).expect("temp dir").uid() == 0;
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["postgres:"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "the temp dir is handed to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let postgres = PrivatePostgres {
            bin: postgres_bin(),
            port,
            as_postgres,
            dir,
        };
        postgres.run(
            "initdb",
            &[
                OsStr::new("-D"),
                postgres.data().as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("--no-sync"),
            ],
        );
        postgres.up();
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                OsStr::new("-D"),
                self.data().as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("start"),
            ],
        );
    }

    /// Stops the server the way an operator (or a failover) would: sessions are cut.
    fn down(&self) {
        self.run(
            "pg_ctl",
            &[
                OsStr::new("-D"),
                self.data().as_os_str(),
                OsStr::new("-m"),
                OsStr::new("fast"),
                OsStr::new("-w"),
                OsStr::new("stop"),
            ],
        );
    }

    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&OsStr]) {
        let output = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("PostgreSQL tools run");
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest installed PostgreSQL's server programs (Debian keeps them out of PATH).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL server programs under /usr/lib/postgresql/*/bin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_the_api_answers_503_and_applies_nothing_then_carries_on() {
    let postgres = PrivatePostgres::start();
    let infra = Infra::start().await;
    let config = infra.config("broker", &postgres.url());
    let mut broker = infra.broker(&config, "broker").await;
    let url = broker.url.clone();

    let (live, live_digest) = infra.file(&url, "live", 60).await;
    assert_eq!(
        infra.approve(&url, "bob", &live, &live_digest).await.0,
        StatusCode::OK
    );
    assert_eq!(
        infra.approve(&url, "carol", &live, &live_digest).await.0,
        StatusCode::OK
    );
    let (waiting, waiting_digest) = infra.file(&url, "waiting", 60).await;
    assert_eq!(
        infra
            .approve(&url, "bob", &waiting, &waiting_digest)
            .await
            .0,
        StatusCode::OK
    );
    infra
        .wait_for_states(
            &url,
            &HashMap::from([(live.clone(), "active"), (waiting.clone(), "pending")]),
            Duration::from_secs(10),
        )
        .await;

    postgres.down();
    let ready = infra
        .http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = infra
        .approve(&url, "carol", &waiting, &waiting_digest)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("database is unavailable")),
        "{body}"
    );
    let (status, body) = infra
        .call(
            &url,
            Method::POST,
            "alice",
            "/api/v1/requests",
            Some(json!({
                "target": "dev-cluster",
                "namespace": "prod",
                "manifest": deployment("during", HOTFIX_IMAGE),
                "ticket": "INC-5",
                "justification": "filed while the database is down",
                "duration_minutes": 60,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        infra.close(&url, &live).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let writes = infra.writes().await;
    assert!(
        !writes.contains_key("waiting"),
        "nothing applied: {writes:?}"
    );
    assert_eq!(writes.get("live").map(|c| c.total()), Some(1), "{writes:?}");

    postgres.up();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = infra
            .http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .expect("answers");
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The approval that got 503 changed nothing: it is still needed, and now it counts.
    let (status, body) = infra
        .approve(&url, "carol", &waiting, &waiting_digest)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (after, after_digest) = infra.file(&url, "after", 60).await;
    assert_eq!(
        infra.approve(&url, "bob", &after, &after_digest).await.0,
        StatusCode::OK
    );
    assert_eq!(
        infra.approve(&url, "carol", &after, &after_digest).await.0,
        StatusCode::OK
    );
    infra
        .wait_for_states(
            &url,
            &HashMap::from([(waiting.clone(), "active"), (after.clone(), "active")]),
            Duration::from_secs(30),
        )
        .await;
    for id in [&live, &waiting, &after] {
        assert_eq!(infra.close(&url, id).await.0, StatusCode::OK);
    }
    infra
        .wait_for_states(
            &url,
            &HashMap::from([
                (live.clone(), "closed"),
                (waiting.clone(), "closed"),
                (after.clone(), "closed"),
            ]),
            Duration::from_secs(30),
        )
        .await;
    let writes = infra.writes().await;
    for name in ["live", "waiting", "after"] {
        assert_eq!(
            writes.get(name).map(|c| (c.applies, c.deletes)),
            Some((1, 1)),
            "{name}: {writes:?}"
        );
    }
    assert!(!writes.contains_key("during"));
    assert!(
        broker.proc.is_running(),
        "the same broker process carried on"
    );
}

/// One replica in-process with a manual clock: the cluster answering 5xx is retried with
/// backoff, the request shows why it waits, and once the cluster is back it is applied once.
#[tokio::test]
async fn a_failing_cluster_is_retried_with_backoff_and_the_request_shows_the_last_error() {
    let env = TestEnv::start().await;
    env.env.sim.set_failure(Some(503));
    let id = {
        let (id, digest) = env.file_ok(&deployment("flaky", HOTFIX_IMAGE), 60).await;
        assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
        assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
        id
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let (_, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
        if body["last_error"].is_string() {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error shown: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(waiting["state"], "approved");
    assert!(
        waiting["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{waiting}"
    );
    let key = ObjectKey::new("apps/v1", "Deployment", "prod", "flaky");
    assert_eq!(env.env.sim.write_count(&key).total(), 0);

    // Still failing at the next attempts; the request waits, nothing is lost.
    env.clock.advance(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(body["state"], "approved", "{body}");

    env.env.sim.set_failure(None);
    env.clock.advance(Duration::from_secs(120));
    let active = env.wait_for_state(&id, "active").await;
    assert!(active["last_error"].is_null(), "{active}");
    assert_eq!(env.env.sim.write_count(&key).applies, 1);
}
