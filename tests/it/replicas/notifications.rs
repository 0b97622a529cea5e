//! Notifications: local receivers on loopback (one shaped like a Slack incoming webhook, one
//! that checks Standard Webhooks signatures as the specification's reference code does), and
//! brokers that announce what happens to requests, in this process with a manual clock or as
//! processes of their own that are killed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::Engine as _;
use breakglass_broker::clock::Clock;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Broker, InProcess, Infra, Proc};
use crate::common::{HOTFIX_IMAGE, deployment};
use crate::store::FreshPostgres;

mod delivery;
mod messages;

/// The signing secret of the test's webhook endpoint (24 bytes, base64).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SLACK_URL_ENV: &str = "BREAKGLASS_TEST_SLACK_URL";

/// How a receiver answers.
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Status(u16),
    /// Never: the connection stays open until the broker gives up on it.
    Hang,
    /// A status with a `Retry-After` header.
    RetryAfter(u16, String),
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    /// `webhook-id` (Standard Webhooks), or the Slack body's text.
    id: String,
    body: Value,
    answered: Answer,
    /// Wall-clock arrival, in milliseconds since the epoch.
    arrived_ms: i64,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    shared: Arc<Mutex<(Vec<Got>, Answer)>>,
}

struct ReceiverState {
    shared: Arc<Mutex<(Vec<Got>, Answer)>>,
    /// The broker's clock, against which the signature's timestamp is checked.
    clock: Option<Clock>,
    slack: bool,
}

impl Receiver {
    /// A Standard Webhooks receiver (`clock`: the brokers' clock, for the timestamp check) or
    /// a Slack-shaped one.
    async fn start(slack: bool, clock: Option<Clock>) -> Receiver {
        let shared = Arc::new(Mutex::new((Vec::new(), Answer::Status(200))));
        let state = Arc::new(ReceiverState {
            shared: shared.clone(),
            clock,
            slack,
        });
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, shared }
    }

    fn answer(&self, answer: Answer) {
        self.shared.lock().expect("receiver").1 = answer;
    }

    fn got(&self) -> Vec<Got> {
        self.shared.lock().expect("receiver").0.clone()
    }

    /// The event types of the messages answered 2xx, in the order they arrived.
    fn delivered(&self) -> Vec<String> {
        self.got()
            .iter()
            .filter(|g| matches!(g.answered, Answer::Status(s) if (200..300).contains(&s)))
            .map(event_of)
            .collect()
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&[Got]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.got();
            if done(&got) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never got {what}; got {:?}",
                got.iter().map(event_of).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_delivered(&self, count: usize) {
        self.wait_for(&format!("{count} delivered messages"), |_| {
            self.delivered().len() >= count
        })
        .await;
    }
}

/// The event type of a message as the receiver saw it.
fn event_of(got: &Got) -> String {
    got.body["type"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| got.id.clone())
}

/// Checks what arrived as a Slack app or a Standard Webhooks consumer would, records it and
/// answers as told. A message that fails the checks is answered 400 and recorded as such.
async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (AxumStatus, HeaderMap) {
    let text = String::from_utf8_lossy(&body).into_owned();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, valid, body) = if state.slack {
        let valid = parsed["text"].is_string() && parsed["blocks"].is_array();
        // The Slack message says which event it is only in words: the test reads the type
        // from the button's request link and the header.
        let id = parsed["text"].as_str().unwrap_or_default().to_owned();
        (
            id,
            valid,
            json!({"type": slack_type(&parsed), "slack": parsed}),
        )
    } else {
        let id = header("webhook-id");
        let valid = verify(
            &id,
            &header("webhook-timestamp"),
            &header("webhook-signature"),
            &text,
            state.clock.as_ref(),
        );
        (id, valid, parsed)
    };
    let answer = if valid {
        state.shared.lock().expect("receiver").1.clone()
    } else {
        Answer::Status(400)
    };
    state.shared.lock().expect("receiver").0.push(Got {
        id,
        body,
        answered: answer.clone(),
        arrived_ms: chrono::Utc::now().timestamp_millis(),
    });
    let mut headers = HeaderMap::new();
    let status = match answer {
        Answer::Status(code) => code,
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            200
        }
        Answer::RetryAfter(code, after) => {
            headers.insert("retry-after", after.parse().expect("header value"));
            code
        }
    };
    (AxumStatus::from_u16(status).expect("status"), headers)
}

/// Standard Webhooks verification as the specification's reference libraries do it: the
/// timestamp within five minutes, the HMAC-SHA256 of "id.timestamp.body" under the secret's
/// decoded bytes, compared in constant time with each `v1,` signature of the header.
fn verify(id: &str, timestamp: &str, signatures: &str, body: &str, clock: Option<&Clock>) -> bool {
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = clock.map_or_else(|| chrono::Utc::now().timestamp_millis(), Clock::now) / 1000;
    if (now - seconds).abs() > 5 * 60 || id.is_empty() {
        return false;
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signatures.split(' ').any(|signature| {
        signature
            .strip_prefix("v1,")
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
    })
}

/// Which event a Slack message announces, from its header block's words.
fn slack_type(message: &Value) -> &'static str {
    let header = message["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap_or_default();
    [
        (" asks for breakglass ", "request.created"),
        (" asks to extend breakglass ", "request.created"),
        (" approved breakglass ", "request.approved"),
        (" rejected breakglass ", "request.rejected"),
        (" is active on ", "request.applied"),
        (" ends at ", "request.expiring"),
        (" expired", "request.ended"),
        (" closed", "request.ended"),
        (" cancelled", "request.ended"),
        (" lapsed", "request.ended"),
        (" could not be applied ", "request.failed"),
        (" could not be undone", "request.needs_attention"),
    ]
    .iter()
    .find(|(words, _)| header.contains(words))
    .map_or("unknown", |(_, kind)| kind)
}

/// The `[[notifications]]` of the tests: the Slack-shaped receiver (its URL from the
/// environment, as a Slack webhook URL must be) and the Standard Webhooks one.
fn endpoints(slack: Option<&Receiver>, hook: Option<(&Receiver, &str)>, secret: &Path) -> String {
    let mut text = String::new();
    if slack.is_some() {
        text.push_str(&format!(
            "\n[[notifications]]\nname = \"team-slack\"\nkind = \"slack\"\nurl_env = \"{SLACK_URL_ENV}\"\nevents = [\"request.created\", \"request.approved\", \"request.applied\", \"request.ended\"]\n"
        ));
    }
    if let Some((hook, path)) = hook {
        text.push_str(&format!(
            "\n[[notifications]]\nname = \"siem\"\nkind = \"webhook\"\nurl = \"{}{path}\"\nsecret_file = \"{}\"\ntargets = [\"dev-cluster\"]\nremind_before = \"10m\"\n",
            hook.url,
            secret.display()
        ));
    }
    text
}

impl Infra {
    /// Tokens that outlive the hours a test moves the brokers' clock by.
    async fn long_tokens(&mut self) {
        self.tokens_with("ttl_seconds=86400").await;
    }

    /// Tokens issued at the time `clock` reads, for brokers whose clock moved a day on.
    async fn tokens_at(&mut self, clock: &Clock) {
        let offset = (clock.now() - chrono::Utc::now().timestamp_millis()) / 1000;
        self.tokens_with(&format!("iat_offset_seconds={offset}"))
            .await;
    }

    async fn tokens_with(&mut self, query: &str) {
        for persona in ["alice", "bob", "carol", "dave"] {
            let body: Value = self
                .http
                .get(format!("{}/token?persona={persona}&{query}", self.issuer))
                .send()
                .await
                .expect("issuer answers")
                .json()
                .await
                .expect("token JSON");
            let token = body["id_token"].as_str().expect("id_token").to_owned();
            self.tokens.insert(persona, token);
        }
    }

    fn secret_file(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("webhook-secret");
        std::fs::write(&path, SECRET).expect("secret file");
        path
    }

    /// The configuration for brokers on `database_url` with `endpoints` appended.
    fn config_with(&self, name: &str, database_url: &str, endpoints: &str) -> std::path::PathBuf {
        let path = self.config(name, database_url);
        let text = std::fs::read_to_string(&path).expect("config") + endpoints;
        std::fs::write(&path, text).expect("config file");
        path
    }

    /// A broker in this process, its environment given by the test (never the process's).
    async fn notifying_in_process(
        &self,
        config: &Path,
        env: &HashMap<&str, String>,
        clock: Clock,
    ) -> InProcess {
        let text = std::fs::read_to_string(config).expect("config");
        let mut config = breakglass_broker::config::Config::parse(&text).expect("config parses");
        config
            .load_notification_secrets(&|var| env.get(var).cloned())
            .expect("secrets load");
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

    /// `breakglass-broker serve` with `env` added to its environment.
    async fn notifying_broker(&self, config: &Path, name: &str, env: &[(&str, &str)]) -> Broker {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = tokio::process::Command::new(super::BIN)
            .args([
                OsStr::new("serve"),
                OsStr::new("--config"),
                config.as_os_str(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,sqlx=warn,kube=warn,tower_http=warn")
            .kill_on_drop(true)
            .spawn()
            .expect("the broker binary starts");
        let mut proc = Proc {
            name: name.to_owned(),
            child,
            log,
        };
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

    /// The request's notifications as the API shows them.
    async fn notices(&self, broker: &str, id: &str) -> Vec<Value> {
        self.show(broker, id).await["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A broker in this process on a database of its own, announcing to the Slack-shaped
/// receiver and the webhook (`/hooks`) given.
async fn announcing(
    infra: &Infra,
    name: &str,
    slack: Option<&Receiver>,
    hook: Option<&Receiver>,
    clock: &Clock,
) -> InProcess {
    let database = infra.sqlite_url(name);
    announcing_on(infra, name, &database, slack, hook, clock).await
}

/// The same on `database`, which earlier brokers may have used.
async fn announcing_on(
    infra: &Infra,
    name: &str,
    database: &str,
    slack: Option<&Receiver>,
    hook: Option<&Receiver>,
    clock: &Clock,
) -> InProcess {
    let secret = infra.secret_file();
    let config = infra.config_with(
        name,
        database,
        &endpoints(slack, hook.map(|h| (h, "/hooks")), &secret),
    );
    let env: HashMap<&str, String> = slack
        .map(|s| (SLACK_URL_ENV, format!("{}/services/T0/B0/x", s.url)))
        .into_iter()
        .collect();
    infra
        .notifying_in_process(&config, &env, clock.clone())
        .await
}

/// Each webhook-id once among the messages answered 2xx, and the ids of the event types.
fn delivered_once(receiver: &Receiver) -> HashMap<String, usize> {
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for got in receiver.got() {
        if matches!(got.answered, Answer::Status(s) if (200..300).contains(&s)) {
            *by_id.entry(got.id.clone()).or_default() += 1;
        }
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_reaches_slack_and_a_signed_webhook_in_order_each_message_once() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let slack = Receiver::start(true, None).await;
    let hook = Receiver::start(false, Some(clock.clone())).await;
    let secret = infra.secret_file();
    let config = infra.config_with(
        "story",
        &infra.sqlite_url("story"),
        &endpoints(Some(&slack), Some((&hook, "/hooks/breakglass")), &secret),
    );
    let env = HashMap::from([(SLACK_URL_ENV, format!("{}/services/T0/B0/x", slack.url))]);
    let broker = infra
        .notifying_in_process(&config, &env, clock.clone())
        .await;
    let url = broker.url.clone();

    let id = infra
        .file_and_approve(&url, &deployment("told", HOTFIX_IMAGE), 60)
        .await;
    let expected_live = [
        "request.created",
        "request.approved",
        "request.approved",
        "request.applied",
    ];
    for receiver in [&slack, &hook] {
        receiver.wait_delivered(4).await;
        assert_eq!(receiver.delivered(), expected_live);
    }
    // The request page's section: who was told, and that it reached them; the reminder waits.
    let notices = infra.notices(&url, &id).await;
    let delivered = notices
        .iter()
        .filter(|n| n["status"] == "delivered")
        .count();
    assert_eq!(delivered, 8, "{notices:?}");
    let waiting: Vec<&Value> = notices
        .iter()
        .filter(|n| n["status"] == "waiting")
        .collect();
    assert_eq!(
        waiting.len(),
        1,
        "only the webhook wants reminders: {notices:?}"
    );
    assert_eq!(waiting[0]["event"], "request.expiring");

    // Ten minutes before the end: the reminder, and nothing else yet.
    clock.advance(Duration::from_secs(49 * 60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hook.delivered().len(),
        4,
        "no reminder eleven minutes before the end"
    );
    clock.advance(Duration::from_secs(60));
    hook.wait_delivered(5).await;
    assert_eq!(hook.delivered()[4], "request.expiring");
    // The end.
    clock.advance(Duration::from_secs(10 * 60));
    hook.wait_delivered(6).await;
    slack.wait_delivered(5).await;
    infra
        .wait_for_states(
            &url,
            &HashMap::from([(id.clone(), "expired")]),
            Duration::from_secs(60),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut story: Vec<&str> = expected_live.to_vec();
    story.push("request.expiring");
    story.push("request.ended");
    assert_eq!(hook.delivered(), story);
    assert_eq!(
        slack.delivered(),
        [&expected_live[..], &["request.ended"]].concat()
    );
    for receiver in [&slack, &hook] {
        assert!(
            receiver
                .got()
                .iter()
                .all(|g| g.answered != Answer::Status(400)),
            "every message passed the receiver's checks"
        );
        assert!(delivered_once(receiver).values().all(|n| *n == 1));
    }
    assert_eq!(delivered_once(&hook).len(), 6, "six distinct webhook-ids");

    // What the messages say: the people as the pages name them, the ticket, the images,
    // the rule, the progress, the link, the undo's outcome; no manifest.
    let hooks = hook.got();
    let created = &hooks[0].body["data"];
    assert_eq!(created["request"], id.as_str());
    assert_eq!(created["ticket"], "INC-5");
    assert_eq!(created["requester"], "alice");
    assert_eq!(created["justification"], "replicas under test");
    assert_eq!(created["approval_rule"], "2 from approvers");
    assert!(
        created["images"][0]
            .as_str()
            .is_some_and(|i| i.contains("@sha256:"))
    );
    assert_eq!(created["url"], format!("http://127.0.0.1/requests/{id}"));
    assert_eq!(
        hooks[1].body["data"]["approvals"],
        json!({"count": 1, "needed": 2})
    );
    assert_eq!(
        hooks[2].body["data"]["approvals"],
        json!({"count": 2, "needed": 2})
    );
    assert_eq!(hooks[3].body["data"]["approvers"], json!(["bob", "carol"]));
    assert_eq!(hooks[5].body["data"]["state"], "expired");
    assert!(
        hooks[5].body["data"]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("undone"))
    );
    for got in hooks.iter().chain(slack.got().iter()) {
        let text = got.body.to_string();
        assert!(
            !text.contains("apiVersion") && !text.contains("kind: Deployment"),
            "{text}"
        );
    }
    let slack_created = &slack.got()[0].body["slack"];
    let fallback = slack_created["text"].as_str().expect("text");
    assert!(
        fallback.contains("INC-5") && fallback.ends_with(&format!("/requests/{id}")),
        "{fallback}"
    );
    assert_eq!(slack_created["mrkdwn"], false);
    let button = &slack_created["blocks"]
        .as_array()
        .expect("blocks")
        .last()
        .expect("a block")["elements"][0];
    assert_eq!(button["url"], format!("http://127.0.0.1/requests/{id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_slow_the_breakglass() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let hook = Receiver::start(false, Some(clock.clone())).await;
    hook.answer(Answer::Hang);
    let secret = infra.secret_file();
    let config = infra.config_with(
        "stalled",
        &infra.sqlite_url("stalled"),
        &endpoints(None, Some((&hook, "/hooks")), &secret),
    );
    let broker = infra
        .notifying_in_process(&config, &HashMap::new(), clock.clone())
        .await;
    let started = tokio::time::Instant::now();
    let id = infra
        .file_and_approve(&broker.url, &deployment("stalled", HOTFIX_IMAGE), 60)
        .await;
    infra
        .wait_for_states(
            &broker.url,
            &HashMap::from([(id.clone(), "active")]),
            Duration::from_secs(60),
        )
        .await;
    // The receiver holds the first message's connection open meanwhile; the HTTP timeout
    // (10 s) has not even run out.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        hook.got().len(),
        1,
        "one try in flight, for the first message"
    );
    assert!(hook.delivered().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_for_a_minute_gets_every_event_afterwards_under_the_same_ids() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let hook = Receiver::start(false, Some(clock.clone())).await;
    hook.answer(Answer::Status(500));
    let secret = infra.secret_file();
    let config = infra.config_with(
        "flaky",
        &infra.sqlite_url("flaky"),
        &endpoints(None, Some((&hook, "/hooks")), &secret),
    );
    let broker = infra
        .notifying_in_process(&config, &HashMap::new(), clock.clone())
        .await;

    let (id, digest) = infra.file(&broker.url, "flaky", 60).await;
    hook.wait_for("a first try", |got| !got.is_empty()).await;
    let started = clock.now();
    // A minute of 500s: the broker's clock moves five seconds at a time.
    while clock.now() - started < 60_000 {
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = hook.got();
    assert!(
        failed.len() >= 4,
        "retried, with backoff: {} tries",
        failed.len()
    );
    assert!(
        failed.len() <= 8,
        "backoff, not a tight loop: {} tries",
        failed.len()
    );
    let first_id = failed[0].id.clone();
    assert!(
        failed.iter().all(|g| g.id == first_id),
        "the same webhook-id on each retry"
    );
    let notices = infra.notices(&broker.url, &id).await;
    assert_eq!(notices[0]["status"], "retrying", "{notices:?}");
    assert_eq!(notices[0]["last_error"], "HTTP 500 Internal Server Error");

    hook.answer(Answer::Status(200));
    // At most ten minutes between tries.
    clock.advance(Duration::from_secs(10 * 60));
    hook.wait_delivered(1).await;
    for persona in ["bob", "carol"] {
        let (status, body) = infra.approve(&broker.url, persona, &id, &digest).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    hook.wait_delivered(4).await;
    assert_eq!(
        hook.delivered(),
        [
            "request.created",
            "request.approved",
            "request.approved",
            "request.applied"
        ]
    );
    let delivered = hook.got();
    let last = delivered
        .iter()
        .filter(|g| g.answered == Answer::Status(200))
        .map(|g| g.id.clone())
        .next();
    assert_eq!(
        last.as_deref(),
        Some(first_id.as_str()),
        "delivered under the id it was tried with"
    );
    assert!(delivered_once(&hook).values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_until_its_configuration_changes() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let hook = Receiver::start(false, Some(clock.clone())).await;
    hook.answer(Answer::Status(410));
    let secret = infra.secret_file();
    let database = infra.sqlite_url("gone");
    let config = infra.config_with(
        "gone",
        &database,
        &endpoints(None, Some((&hook, "/old")), &secret),
    );
    let broker = infra
        .notifying_in_process(&config, &HashMap::new(), clock.clone())
        .await;

    let (id, digest) = infra.file(&broker.url, "gone", 60).await;
    hook.wait_for("the 410", |got| got.len() == 1).await;
    let (status, body) = infra.approve(&broker.url, "bob", &id, &digest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let notices = loop {
        let notices = infra.notices(&broker.url, &id).await;
        if notices.len() == 2 && notices.iter().all(|n| n["status"] == "not delivered") {
            break notices;
        }
        assert!(tokio::time::Instant::now() < deadline, "{notices:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        notices[0]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("refused: 410"))
    );
    assert!(
        notices[1]["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("disabled"))
    );
    assert_eq!(
        hook.got().len(),
        1,
        "nothing more was sent to a gone endpoint"
    );
    drop(broker);

    // The same configuration on a restarted broker: still disabled.
    let broker = infra
        .notifying_in_process(&config, &HashMap::new(), clock.clone())
        .await;
    let (status, body) = infra.approve(&broker.url, "carol", &id, &digest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    infra
        .wait_for_states(
            &broker.url,
            &HashMap::from([(id.clone(), "active")]),
            Duration::from_secs(60),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.got().len(), 1, "still disabled");
    drop(broker);

    // The operator points it somewhere new: it is enabled again.
    hook.answer(Answer::Status(200));
    let config = infra.config_with(
        "gone-2",
        &database,
        &endpoints(None, Some((&hook, "/new")), &secret),
    );
    let broker = infra
        .notifying_in_process(&config, &HashMap::new(), clock.clone())
        .await;
    infra.file(&broker.url, "gone-again", 60).await;
    hook.wait_delivered(1).await;
    assert_eq!(hook.delivered(), ["request.created"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgres_deliver_each_event_to_each_endpoint_exactly_once() {
    const REQUESTS: usize = 6;
    let infra = Infra::start().await;
    let database = FreshPostgres::create().await;
    let slack = Receiver::start(true, None).await;
    let hook = Receiver::start(false, None).await;
    let secret = infra.secret_file();
    let config = infra.config_with(
        "notifying",
        &database.url,
        &endpoints(Some(&slack), Some((&hook, "/hooks")), &secret),
    );
    let slack_url = format!("{}/services/T0/B0/x", slack.url);
    let env = [(SLACK_URL_ENV, slack_url.as_str())];
    let (a, b, c) = tokio::join!(
        infra.notifying_broker(&config, "replica-a", &env),
        infra.notifying_broker(&config, "replica-b", &env),
        infra.notifying_broker(&config, "replica-c", &env),
    );
    let replicas = [a.url.clone(), b.url.clone(), c.url.clone()];
    let mut ids = Vec::new();
    for i in 0..REQUESTS {
        let (id, digest) = infra.file(&replicas[i % 3], &format!("told-{i}"), 60).await;
        for (k, persona) in ["bob", "carol"].iter().enumerate() {
            let (status, body) = infra
                .approve(&replicas[(i + k + 1) % 3], persona, &id, &digest)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        ids.push(id);
    }
    let active: HashMap<String, &str> = ids.iter().map(|id| (id.clone(), "active")).collect();
    infra
        .wait_for_states(&replicas[0], &active, Duration::from_secs(120))
        .await;
    for (i, id) in ids.iter().enumerate() {
        let (status, body) = infra.close(&replicas[(i + 2) % 3], id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let closed: HashMap<String, &str> = ids.iter().map(|id| (id.clone(), "closed")).collect();
    infra
        .wait_for_states(&replicas[0], &closed, Duration::from_secs(120))
        .await;
    // created, approved twice, applied, ended: five per request and endpoint.
    let expected = REQUESTS * 5;
    slack.wait_delivered(expected).await;
    hook.wait_delivered(expected).await;
    // Time for a second delivery, had any replica made one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        slack.got().len(),
        expected,
        "no message was sent twice to Slack"
    );
    assert_eq!(
        hook.got().len(),
        expected,
        "no message was sent twice to the webhook"
    );
    let ids_seen = delivered_once(&hook);
    assert_eq!(ids_seen.len(), expected);
    assert!(ids_seen.values().all(|n| *n == 1));
    for id in &ids {
        let per_request: Vec<String> = hook
            .got()
            .iter()
            .filter(|g| g.body["data"]["request"] == id.as_str())
            .map(event_of)
            .collect();
        let mut sorted = per_request.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "request.applied",
                "request.approved",
                "request.approved",
                "request.created",
                "request.ended"
            ],
            "{id}"
        );
    }
    // Their reminders were settled when they ended: none will be sent.
    let notices = infra.notices(&replicas[1], &ids[0]).await;
    let reminder: Vec<&Value> = notices
        .iter()
        .filter(|n| n["event"] == "request.expiring")
        .collect();
    assert_eq!(reminder.len(), 1, "{notices:?}");
    assert_eq!(reminder[0]["status"], "not delivered");
    assert_eq!(reminder[0]["outcome"], "not sent: the request ended first");
    // The delay from the state change (the event's time) to its arrival, with healthy
    // receivers: printed for the record (`--nocapture`).
    let mut delays: Vec<i64> = hook
        .got()
        .iter()
        .filter_map(|g| {
            let at = chrono::DateTime::parse_from_rfc3339(g.body["timestamp"].as_str()?).ok()?;
            Some(g.arrived_ms - at.timestamp_millis())
        })
        .collect();
    delays.sort_unstable();
    let pick = |q: f64| delays[((delays.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "notification delay, state change to delivery, {} messages over 3 replicas: p50 {} ms, p99 {} ms, max {} ms",
        delays.len(),
        pick(0.5),
        pick(0.99),
        delays.last().copied().unwrap_or_default()
    );
    assert!(pick(0.5) < 5_000, "delivered within seconds: {delays:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_before_it_recorded_a_delivery_delivers_it_after_restart() {
    let infra = Infra::start().await;
    let hook = Receiver::start(false, None).await;
    // The first try never gets an answer: the broker is killed while it waits for one.
    hook.answer(Answer::Hang);
    let secret = infra.secret_file();
    let config = infra.config_with(
        "killed",
        &infra.sqlite_url("killed"),
        &endpoints(None, Some((&hook, "/hooks")), &secret),
    );
    let mut first = infra.notifying_broker(&config, "broker-first", &[]).await;
    let (id, _) = infra.file(&first.url, "killed", 60).await;
    hook.wait_for("the first try", |got| got.len() == 1).await;
    first.proc.kill().await;
    let tried = hook.got()[0].id.clone();

    hook.answer(Answer::Status(200));
    let second = infra.notifying_broker(&config, "broker-second", &[]).await;
    // Its lease (30 s) runs out first; then the restarted broker delivers.
    hook.wait_delivered(1).await;
    let got = hook.got();
    assert_eq!(
        got.last().map(|g| g.id.clone()),
        Some(tried),
        "the same webhook-id"
    );
    assert_eq!(got.last().map(event_of).as_deref(), Some("request.created"));
    assert_eq!(
        got.last().map(|g| g.body["data"]["request"].clone()),
        Some(json!(id))
    );
    let notices = infra.notices(&second.url, &id).await;
    assert_eq!(notices[0]["status"], "delivered", "{notices:?}");
    assert_eq!(delivered_once(&hook).len(), 1);
}

#[tokio::test]
async fn check_config_names_each_notification_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    let text = r#"public_url = "https://breakglass.example.com"
database_url = "sqlite://x.db"
[oidc]
issuer = "https://accounts.example.com"
client_id = "c"
[roles]
requesters = ["oncall"]
[[targets]]
name = "prod"
kind = "kubernetes"
credentials = "in-cluster"
namespaces = ["payments"]
max_duration = "4h"
approvals = [{ group = "sre", count = 1 }]
images = { registries = ["us-docker.pkg.dev/acme/"], require_digest = true }
ticket_pattern = "^INC-[0-9]+$"
[[notifications]]
name = "plain"
kind = "webhook"
url = "http://siem.example.com/hook"
secret_env = "BG_TEST_SECRET"
targets = ["staging"]
events = ["request.created", "request.exploded"]
[[notifications]]
name = "leaky"
kind = "slack"
url = "https://hooks.slack.com/services/T/B/secret"
[[notifications]]
name = "from-env"
kind = "slack"
url_env = "BG_TEST_SLACK_URL"
"#;
    std::fs::write(&path, text).expect("config");
    let output = std::process::Command::new(super::BIN)
        .args([OsStr::new("check-config"), path.as_os_str()])
        .env("BG_TEST_SECRET", "not-a-whsec-secret")
        .env(
            "BG_TEST_SLACK_URL",
            "http://hooks.example.com/services/T/B/value-never-shown",
        )
        .output()
        .expect("check-config runs");
    let all = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{all}");
    for expected in [
        "notifications plain: url must be https (plain http only to a loopback address)",
        "notifications plain: targets: \"staging\" is not a configured target",
        "notifications plain: events: \"request.exploded\" is not an event",
        "notifications leaky: url: a Slack incoming-webhook URL is a secret; give it with url_env",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    // Once the file is right, the secrets from the environment are checked, and never shown.
    let fixed = text
        .replace(
            "http://siem.example.com/hook",
            "https://siem.example.com/hook",
        )
        .replace("targets = [\"staging\"]\n", "")
        .replace(", \"request.exploded\"", "")
        .replace(
            "url = \"https://hooks.slack.com/services/T/B/secret\"",
            "url_env = \"BG_TEST_SLACK_URL\"",
        );
    std::fs::write(&path, &fixed).expect("config");
    let output = std::process::Command::new(super::BIN)
        .args([OsStr::new("check-config"), path.as_os_str()])
        .env("BG_TEST_SECRET", "not-a-whsec-secret")
        .env(
            "BG_TEST_SLACK_URL",
            "http://hooks.example.com/services/T/B/value-never-shown",
        )
        .output()
        .expect("check-config runs");
    let all = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{all}");
    for expected in [
        "notifications plain: secret_env BG_TEST_SECRET: the secret must start with \"whsec_\"",
        "notifications leaky: the URL from url_env must be https",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(!all.contains("value-never-shown"), "{all}");
    let output = std::process::Command::new(super::BIN)
        .args([OsStr::new("check-config"), path.as_os_str()])
        .env("BG_TEST_SECRET", SECRET)
        .env(
            "BG_TEST_SLACK_URL",
            "https://hooks.slack.com/services/T/B/x",
        )
        .output()
        .expect("check-config runs");
    let all = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("3 notification endpoints"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_rolls_back_announces_nothing_and_one_that_commits_is_announced() {
    use breakglass_broker::domain::AuditAction;
    use breakglass_broker::lifecycle::{Actor, RequestRef};

    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let hook = Receiver::start(false, Some(clock.clone())).await;
    let secret = infra.secret_file();
    let config = infra.config_with(
        "rollback",
        &infra.sqlite_url("rollback"),
        &endpoints(None, Some((&hook, "/hooks")), &secret),
    );
    let broker = infra
        .notifying_in_process(&config, &HashMap::new(), clock.clone())
        .await;
    let (id, _) = infra.file(&broker.url, "rolled", 60).await;
    hook.wait_delivered(1).await;
    let lifecycle = broker._broker.state.lifecycle.clone();
    let request = lifecycle
        .store
        .request(&id)
        .await
        .expect("store")
        .expect("the request");

    // A rejection whose transaction is dropped before it commits.
    let mut change = lifecycle.begin().await.expect("a change");
    change
        .transition(
            RequestRef::from(&request),
            Actor::Broker,
            AuditAction::Rejected,
            json!({}),
        )
        .await
        .expect("written in the transaction");
    drop(change);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(infra.state_of(&broker.url, &id).await, "pending");
    assert_eq!(
        infra.notices(&broker.url, &id).await.len(),
        1,
        "only request.created"
    );
    assert_eq!(hook.delivered(), ["request.created"]);

    // The same, committed.
    let mut change = lifecycle.begin().await.expect("a change");
    change
        .transition(
            RequestRef::from(&request),
            Actor::Broker,
            AuditAction::Rejected,
            json!({}),
        )
        .await
        .expect("written in the transaction");
    change.commit().await.expect("committed");
    hook.wait_delivered(2).await;
    assert_eq!(hook.delivered(), ["request.created", "request.rejected"]);
    assert_eq!(hook.got()[1].body["data"]["state"], "rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_undelivered_for_a_day_is_given_up_with_an_audit_event() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let hook = Receiver::start(false, Some(clock.clone())).await;
    hook.answer(Answer::Status(503));
    let secret = infra.secret_file();
    let config = infra.config_with(
        "gave-up",
        &infra.sqlite_url("gave-up"),
        &endpoints(None, Some((&hook, "/hooks")), &secret),
    );
    let broker = infra
        .notifying_in_process(&config, &HashMap::new(), clock.clone())
        .await;
    let (id, _) = infra.file(&broker.url, "unheard", 60).await;
    hook.wait_for("a first try", |got| !got.is_empty()).await;
    // Not yet: a retry a little short of a day after the first try is still a retry.
    clock.advance(Duration::from_secs(23 * 3600));
    hook.wait_for("a second try", |got| got.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    infra.tokens_at(&clock).await;
    assert!(
        !infra
            .audit_actions(&broker.url, &id)
            .await
            .contains(&"notification.gave_up".to_owned())
    );
    assert_eq!(
        infra.notices(&broker.url, &id).await[0]["status"],
        "retrying"
    );

    clock.advance(Duration::from_secs(3600));
    infra.tokens_at(&clock).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let actions = infra.audit_actions(&broker.url, &id).await;
        if actions.contains(&"notification.gave_up".to_owned()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{actions:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let notices = infra.notices(&broker.url, &id).await;
    assert_eq!(notices[0]["status"], "not delivered", "{notices:?}");
    assert!(
        notices[0]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("gave up after")),
        "{notices:?}"
    );
    assert_eq!(notices[0]["last_error"], "HTTP 503 Service Unavailable");
    // The message given up, by its webhook-id (the request's end, when it lapsed, is a
    // message of its own, with a day of its own).
    let given_up = hook.got()[0].id.clone();
    let tries_of = |id: &str| hook.got().iter().filter(|g| g.id == id).count();
    let tries = tries_of(&given_up);
    clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tries_of(&given_up), tries, "no try after giving up");
}
