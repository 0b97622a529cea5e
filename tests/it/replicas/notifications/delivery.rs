//! How messages are delivered when receivers and configurations misbehave: in their order
//! after an outage, no sooner than `Retry-After` asks, never to an endpoint's new URL, and
//! closed when their endpoint is gone.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::time::Duration;

use breakglass_broker::clock::Clock;
use reqwest::StatusCode;
use serde_json::Value;

use super::{Answer, Receiver, announcing_on, event_of};
use crate::replicas::Infra;

/// When the request's first notification to `event` is next due, by the broker's clock.
async fn next_try(infra: &Infra, broker: &str, id: &str, event: &str) -> (i64, i64) {
    let notices = infra.notices(broker, id).await;
    let notice = notices
        .iter()
        .find(|n| n["event"] == event)
        .unwrap_or_else(|| panic!("no {event} in {notices:?}"));
    let at = chrono::DateTime::parse_from_rfc3339(notice["at"].as_str().expect("at"))
        .expect("a time")
        .timestamp_millis();
    (at, notice["tries"].as_i64().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_a_requests_events_arrive_in_order_and_other_requests_are_not_held_back() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let hook = Receiver::start(false, Some(clock.clone())).await;
    hook.answer(Answer::Status(500));
    let database = infra.sqlite_url("ordered");
    let broker = announcing_on(&infra, "ordered", &database, None, Some(&hook), &clock).await;
    let url = broker.url.clone();

    let (first, digest) = infra.file(&url, "ordered", 60).await;
    hook.wait_for("a first try", |got| !got.is_empty()).await;
    // Its first message fails until its backoff is long: its next try is a while off.
    loop {
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (due, tries) = next_try(&infra, &url, &first, "request.created").await;
        if tries >= 4 && due - clock.now() >= 20_000 {
            break;
        }
        assert!(tries < 12, "the backoff never grew: {tries} tries");
    }
    // Meanwhile the request is approved, applied and closed.
    for persona in ["bob", "carol"] {
        let (status, body) = infra.approve(&url, persona, &first, &digest).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    infra
        .wait_for_states(
            &url,
            &HashMap::from([(first.clone(), "active")]),
            Duration::from_secs(60),
        )
        .await;
    let (status, body) = infra.close(&url, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    infra
        .wait_for_states(
            &url,
            &HashMap::from([(first.clone(), "closed")]),
            Duration::from_secs(60),
        )
        .await;
    // Another request, filed during the outage.
    let (second, _) = infra.file(&url, "unrelated", 60).await;
    hook.wait_for("the second request's first try", |got| {
        got.iter()
            .any(|g| g.body["data"]["request"] == second.as_str())
    })
    .await;

    // The receiver is back. The clock moves a second at a time: messages with a short
    // backoff fall due long before the first request's first message does.
    hook.answer(Answer::Status(200));
    let deadline = clock.now() + 15 * 60 * 1000;
    while hook.delivered().len() < 6 {
        assert!(clock.now() < deadline, "delivered {:?}", hook.delivered());
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered: Vec<(String, String)> = hook
        .got()
        .iter()
        .filter(|g| g.answered == Answer::Status(200))
        .map(|g| {
            (
                g.body["data"]["request"].as_str().unwrap_or("").to_owned(),
                event_of(g),
            )
        })
        .collect();
    let of_first: Vec<&str> = delivered
        .iter()
        .filter(|(r, _)| *r == first)
        .map(|(_, e)| e.as_str())
        .collect();
    assert_eq!(
        of_first,
        [
            "request.created",
            "request.approved",
            "request.approved",
            "request.applied",
            "request.ended"
        ],
        "in the order of the events"
    );
    // Nothing of the first request was even tried before its first message went through.
    let tried_first: Vec<String> = hook
        .got()
        .iter()
        .filter(|g| g.body["data"]["request"] == first.as_str())
        .map(event_of)
        .collect();
    let through = tried_first
        .iter()
        .rposition(|e| e == "request.created")
        .expect("tries of the first message");
    assert!(
        tried_first[..through]
            .iter()
            .all(|e| e == "request.created"),
        "{tried_first:?}"
    );
    // The other request went ahead.
    let position = |request: &str| {
        delivered
            .iter()
            .position(|(r, e)| r == request && e == "request.created")
            .expect("delivered")
    };
    assert!(
        position(&second) < position(&first),
        "not held back by another request: {delivered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_or_503_with_retry_after_is_not_tried_again_sooner() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let hook = Receiver::start(false, Some(clock.clone())).await;
    hook.answer(Answer::RetryAfter(429, "120".into()));
    let database = infra.sqlite_url("limited");
    let broker = announcing_on(&infra, "limited", &database, None, Some(&hook), &clock).await;
    infra.file(&broker.url, "limited", 60).await;
    hook.wait_for("a first try", |got| got.len() == 1).await;
    let started = clock.now();

    // Seconds: not before two minutes.
    while clock.now() - started < 115_000 {
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.got().len(), 1, "tried again before Retry-After");
    // An HTTP date, five minutes on from the second try.
    let retry_at = chrono::DateTime::from_timestamp_millis(started + 120_000 + 300_000)
        .expect("a time")
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    hook.answer(Answer::RetryAfter(503, retry_at));
    clock.advance(Duration::from_secs(10));
    hook.wait_for("the second try", |got| got.len() == 2).await;
    let second = clock.now();
    while clock.now() - second < 280_000 {
        clock.advance(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.got().len(), 2, "tried again before the date");
    hook.answer(Answer::Status(200));
    clock.advance(Duration::from_secs(30));
    hook.wait_delivered(1).await;
    // A Retry-After beyond the cap waits the cap: ten minutes.
    hook.answer(Answer::RetryAfter(429, "86400".into()));
    infra.file(&broker.url, "capped", 60).await;
    hook.wait_for("the first try", |got| got.len() == 4).await;
    clock.advance(Duration::from_secs(10 * 60 + 1));
    hook.wait_for("a try within ten minutes", |got| got.len() == 5)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_not_sent_to_a_new_url_and_are_closed_when_their_endpoint_is_gone() {
    let mut infra = Infra::start().await;
    infra.long_tokens().await;
    let database = infra.sqlite_url("moved");
    let old = Receiver::start(false, None).await;
    old.answer(Answer::Status(500));
    let new = Receiver::start(false, None).await;
    let slack = Receiver::start(true, None).await;

    // Each configuration runs on a clock of its own; a replaced broker's clock stands still,
    // so that its notifier, which runs on in this process, does nothing more.
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let broker = announcing_on(&infra, "moved-1", &database, None, Some(&old), &clock).await;
    let (first, _) = infra.file(&broker.url, "moved", 60).await;
    old.wait_for("a try", |got| !got.is_empty()).await;
    drop(broker);

    // The endpoint's name now points elsewhere: the old message does not go there.
    let clock = Clock::manual(clock.now());
    let broker = announcing_on(&infra, "moved-2", &database, None, Some(&new), &clock).await;
    let (second, _) = infra.file(&broker.url, "moved-again", 60).await;
    new.wait_delivered(1).await;
    clock.advance(Duration::from_secs(5 * 60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(new.got().len(), 1, "only the new request's message");
    assert_eq!(new.got()[0].body["data"]["request"], second.as_str());
    // Nobody took it for ten minutes after it fell due: it is closed, and says why.
    clock.advance(Duration::from_secs(6 * 60));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notices = infra.notices(&broker.url, &first).await;
        if notices[0]["status"] == "not delivered" {
            assert_eq!(
                notices[0]["outcome"],
                "not sent: the endpoint's URL changed in the configuration since it was written"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{notices:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A message that waits for the endpoint when it is taken out of the configuration.
    new.answer(Answer::Status(500));
    let (third, _) = infra.file(&broker.url, "removed", 60).await;
    new.wait_for("a try", |got| got.len() == 2).await;
    drop(broker);

    let clock = Clock::manual(clock.now());
    let broker = announcing_on(&infra, "moved-3", &database, Some(&slack), None, &clock).await;
    clock.advance(Duration::from_secs(11 * 60));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notices = infra.notices(&broker.url, &third).await;
        let siem: Vec<&Value> = notices.iter().filter(|n| n["endpoint"] == "siem").collect();
        if siem[0]["status"] == "not delivered" {
            assert_eq!(
                siem[0]["outcome"],
                "not sent: endpoint removed from the configuration"
            );
            break;
        }
        assert_eq!(siem[0]["status"], "retrying", "{notices:?}");
        assert!(tokio::time::Instant::now() < deadline, "{notices:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(new.got().len(), 2, "nothing more was sent");
}

#[tokio::test]
async fn check_config_refuses_a_url_with_a_user_name_or_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("userinfo.toml");
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
name = "siem"
kind = "webhook"
url = "https://breakglass:hunter2-in-the-file@siem.example.com/hooks"
secret_env = "BG_TEST_SECRET"
"#;
    std::fs::write(&path, text).expect("config");
    let output = std::process::Command::new(crate::replicas::BIN)
        .args([OsStr::new("check-config"), path.as_os_str()])
        .env("BG_TEST_SECRET", super::SECRET)
        .output()
        .expect("check-config runs");
    let all = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains("notifications siem: url holds a user name or password; secrets go only through the environment"),
        "{all}"
    );
    assert!(
        !all.contains("hunter2"),
        "the password is not repeated: {all}"
    );
}
