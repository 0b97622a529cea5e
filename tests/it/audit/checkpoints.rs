//! A running broker writes its audit checkpoints to the log by itself: after every breakglass
//! apply, every 1000 events and every 5 minutes. Those lines, and nothing the test logs on its
//! own, are what `audit verify --checkpoints` needs to catch a consistent rewrite of the chain.
//!
//! The broker runs in this process (the dev environment on a current-thread runtime, so every
//! task it spawns runs on the test's thread) and its log goes through the same formatter
//! `serve` uses (`CloudLogging`) into a buffer held by a subscriber set for this thread only:
//! tests running beside it on other threads neither see these lines nor add to them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakglass_broker::domain::AuditAction;
use breakglass_broker::logging::CloudLogging;
use breakglass_broker::store::{AuditFilter, NewEvent, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tracing_subscriber::fmt::format::JsonFields;

use super::tamper;
use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// The structured log of everything that runs on this thread while the guard lives.
struct Log {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Starts capturing the `audit` target at INFO, as `serve` logs it (the default filter
    /// keeps `info`).
    fn capture() -> Log {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer(lines.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("audit=info"))
            .fmt_fields(JsonFields::new())
            .event_format(CloudLogging)
            .with_writer(move || writer.clone())
            .finish();
        Log {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every line so far, as JSON.
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.lines.lock().unwrap().clone()).expect("utf-8");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }

    /// The checkpoint lines (`"checkpoint": true`) so far.
    fn checkpoints(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["checkpoint"] == true)
            .collect()
    }

    /// The checkpoint lines, as raw text, for a checkpoints file.
    fn checkpoint_text(&self) -> String {
        self.checkpoints()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Waits (in real time, generously for a busy machine) until a checkpoint with `reason`
    /// is logged, and returns it.
    async fn wait_for_checkpoint(&self, reason: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self
                .checkpoints()
                .into_iter()
                .find(|l| l["reason"] == reason)
            {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no checkpoint for {reason:?} was logged; checkpoints: {:?}",
                self.checkpoints()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (in real time) until the audit event line of `action` is logged. The broker
    /// logs an event's checkpoint, if it takes one, right after the event's own line and in
    /// the same call, so once this returns that checkpoint is in the log too.
    async fn wait_for_event(&self, action: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self
            .lines()
            .iter()
            .any(|l| l["target"] == "audit" && l["action"] == action)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the event {action} was never logged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `(seq, hash)` of a checkpoint line.
fn point(line: &Value) -> (i64, String) {
    (
        line["seq"].as_i64().expect("seq"),
        line["hash"].as_str().expect("hash").to_owned(),
    )
}

/// The broker's own store, where the API reads the chain from.
fn store(env: &TestEnv) -> &Store {
    &env.env.broker.state.store
}

/// `(seq, hash)` of the event at `seq`, as the database holds it.
async fn event_at(env: &TestEnv, seq: i64) -> (i64, String) {
    let events = store(env)
        .audit_events(&AuditFilter {
            after_seq: Some(seq - 1),
            oldest_first: true,
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .expect("read the chain");
    let event = events.first().expect("the event exists");
    assert_eq!(event.seq, seq);
    (event.seq, event.hash.clone())
}

/// The `request.applied` event of request `id`, as `(seq, hash)`.
async fn applied_event(env: &TestEnv, id: &str) -> (i64, String) {
    let (status, body) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let applied = body
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "request.applied")
        .unwrap_or_else(|| panic!("no request.applied event: {body}"));
    (
        applied["seq"].as_i64().expect("seq"),
        applied["hash"].as_str().expect("hash").to_owned(),
    )
}

fn sqlite_url(env: &TestEnv) -> String {
    format!("sqlite://{}", env.dir.path().join("broker.db").display())
}

#[tokio::test]
async fn a_running_broker_logs_a_checkpoint_when_a_breakglass_goes_live() {
    let log = Log::capture();
    let env = TestEnv::start().await;
    let (id, digest) = env
        .file_ok(&deployment("payments-api", HOTFIX_IMAGE), 60)
        .await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    assert!(
        log.checkpoints().is_empty(),
        "nothing went live yet, so nothing is vouched for: {:?}",
        log.checkpoints()
    );

    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    env.wait_for_state(&id, "active").await;
    log.wait_for_event("request.applied").await;

    let checkpoints = log.checkpoints();
    let checkpoint = checkpoints
        .iter()
        .find(|l| l["reason"] == "breakglass applied")
        .unwrap_or_else(|| panic!("no checkpoint after the apply; checkpoints: {checkpoints:?}"));
    assert_eq!(checkpoint["severity"], "NOTICE", "{checkpoint}");
    assert_eq!(
        point(checkpoint),
        applied_event(&env, &id).await,
        "the checkpoint pins the apply's own event"
    );
}

#[tokio::test]
async fn a_running_broker_logs_a_checkpoint_at_the_thousandth_event() {
    let log = Log::capture();
    let env = TestEnv::start().await;
    // 997 events written straight into the broker's database (as a long-lived broker would
    // have), so that the broker's own next events reach 1000.
    let head = store(&env).audit_head().await.expect("head").seq;
    let details: Vec<String> = (head + 1..=997).map(|i| format!("earlier {i}")).collect();
    let earlier: Vec<NewEvent<'_>> = details
        .iter()
        .map(|comment| NewEvent {
            at: env.clock.now(),
            actor: "alice",
            person: None,
            action: AuditAction::Created,
            request_id: None,
            ticket: Some("INC-1"),
            target: Some("dev-cluster"),
            namespace: Some("prod"),
            detail: json!({ "comment": comment }),
        })
        .collect();
    let mut tx = store(&env).begin().await.expect("begin");
    Store::append_audit_many(&mut tx, &earlier)
        .await
        .expect("append");
    tx.commit().await.expect("commit");

    // Four requests filed: events 998 to 1001, each written and logged by the broker.
    for name in ["api-1", "api-2", "api-3", "api-4"] {
        env.file_ok(&deployment(name, HOTFIX_IMAGE), 60).await;
    }
    assert_eq!(chained_head(&env, 1001).await.seq, 1001);

    let by_count: Vec<(i64, String)> = log
        .checkpoints()
        .iter()
        .filter(|l| l["reason"] == "event count")
        .map(point)
        .collect();
    assert_eq!(
        by_count,
        vec![event_at(&env, 1000).await],
        "exactly one count checkpoint, at event 1000 with its hash"
    );
}

/// The head once the broker has chained (and logged) at least `seq` events: it does just
/// after each change commits. The test's own store does not chain, so the broker logs them.
async fn chained_head(env: &TestEnv, seq: i64) -> breakglass_broker::store::ChainHead {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let head = store(env).audit_head().await.expect("head");
        if head.seq >= seq {
            return head;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker chained only {} events",
            head.seq
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_running_broker_logs_its_verified_head_every_five_minutes() {
    let log = Log::capture();
    let env = TestEnv::start().await;
    env.file_ok(&deployment("api", HOTFIX_IMAGE), 60).await;
    let head = chained_head(&env, 1).await;
    env.clock.advance(Duration::from_secs(4 * 60 + 50));
    // A moment of real time for the round to run if it (wrongly) came early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !log.checkpoints().iter().any(|l| l["reason"] == "interval"),
        "no periodic checkpoint before five minutes: {:?}",
        log.checkpoints()
    );

    env.clock.advance(Duration::from_secs(10));
    let checkpoint = log.wait_for_checkpoint("interval").await;

    assert_eq!(point(&checkpoint), (head.seq, head.hash));
    let (status, check) = env.get("dave", "/api/v1/audit/verification").await;
    assert_eq!(status, StatusCode::OK, "{check}");
    assert_eq!(
        check["last_check"]["verified_through"], head.seq,
        "the round verified the chain before vouching for it: {check}"
    );
}

#[tokio::test]
async fn checkpoints_a_running_broker_logged_catch_a_consistent_rewrite() {
    let log = Log::capture();
    let env = TestEnv::start().await;
    let id = env.activate("payments-api", 60).await;
    log.wait_for_event("request.applied").await;
    let (applied, _) = applied_event(&env, &id).await;
    // Only the checkpoint lines the broker wrote: the events' own lines would pin every event
    // by themselves.
    let dir = tempfile::tempdir().expect("temp dir");
    let checkpoints = dir.path().join("checkpoints.jsonl");
    std::fs::write(&checkpoints, log.checkpoint_text()).expect("write");
    let url = sqlite_url(&env);
    let before = tamper::verify(&url, Some(&checkpoints)).await;
    assert_eq!(
        before.code, 0,
        "the untouched chain agrees: {}",
        before.stderr
    );

    // Someone with database access makes bob's approval (seq 2) look like mallory's.
    let (_, timeline) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    let approval = timeline
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "request.approved")
        .map(|e| e["seq"].as_i64().expect("seq"))
        .min()
        .expect("an approval");
    tamper::rewrite_from(store(&env), approval).await;

    let alone = tamper::verify(&url, None).await;
    assert_eq!(
        alone.code, 0,
        "a consistent rewrite passes the chain alone: {}",
        alone.stderr
    );
    let against = tamper::verify(&url, Some(&checkpoints)).await;
    assert_eq!(
        against.code, 1,
        "stdout {} stderr {}",
        against.stdout, against.stderr
    );
    assert!(
        against.stderr.contains(&format!(
            "event {applied}'s hash differs from the checkpoint logged for it"
        )),
        "names the apply's checkpoint: {}",
        against.stderr
    );
}
