//! Extending a running breakglass: approved in time, its end moves with nothing undone in
//! between (one apply, one undo at the new end); not approved in time, it ends as planned;
//! never more than the target's `max_extensions`.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::ObjectKey;
use breakglass_broker::domain::BREAKGLASS_LABEL;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestEnv;

const MINUTE: Duration = Duration::from_secs(60);

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", "prod", name)
}

/// Files an extension as alice; returns the answer.
async fn extend(env: &TestEnv, persona: &str, id: &str, minutes: u64) -> (StatusCode, Value) {
    env.post(
        persona,
        &format!("/api/v1/requests/{id}/extend"),
        json!({ "minutes": minutes, "justification": "still mitigating INC-4242" }),
    )
    .await
}

/// Files an extension as alice and has bob and carol approve it; returns its id.
async fn extend_granted(env: &TestEnv, id: &str, minutes: u64) -> String {
    let (status, extension) = extend(env, "alice", id, minutes).await;
    assert_eq!(status, StatusCode::CREATED, "{extension}");
    let ext = extension["id"].as_str().expect("id").to_owned();
    let digest = extension["digest"].as_str().expect("digest").to_owned();
    assert_eq!(env.approve("bob", &ext, &digest).await.0, StatusCode::OK);
    let (status, granted) = env.approve("carol", &ext, &digest).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert_eq!(granted["state"], "granted", "{granted}");
    ext
}

async fn request(env: &TestEnv, id: &str) -> Value {
    let (status, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn audit_of(env: &TestEnv, id: &str) -> Vec<Value> {
    let (status, body) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("events").clone()
}

fn count(events: &[Value], action: &str) -> usize {
    events.iter().filter(|e| e["action"] == action).count()
}

fn expires_at(request: &Value) -> chrono::DateTime<chrono::Utc> {
    request["expires_at"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("expires_at")
}

/// The breakglass object's UID and whether its pod template still carries the breakglass
/// label.
fn object_state(env: &TestEnv, name: &str) -> Option<(Value, bool)> {
    let object = env.env.sim.object(&key(name))?;
    let labelled =
        object["spec"]["template"]["metadata"]["labels"][BREAKGLASS_LABEL] == json!("true");
    Some((object["metadata"]["uid"].clone(), labelled))
}

#[tokio::test]
async fn an_extension_approved_in_time_moves_the_end_with_no_undo_in_between() {
    let env = TestEnv::start().await;
    let id = env.activate("extended-api", 60).await;
    // Ends when the original would have: when it is undone, the worker has looked.
    let control = env.activate("control-api", 60).await;
    let (uid, labelled) = object_state(&env, "extended-api").expect("applied");
    assert!(labelled);
    let planned = expires_at(&request(&env, &id).await);

    let (status, extension) = extend(&env, "alice", &id, 30).await;
    assert_eq!(status, StatusCode::CREATED, "{extension}");
    assert_eq!(extension["extends"], json!(id));
    assert_eq!(extension["state"], "pending");
    assert_eq!(extension["duration_minutes"], 30);
    let ext = extension["id"].as_str().expect("id").to_owned();
    let digest = extension["digest"].as_str().expect("digest").to_owned();
    // The requester never counts, for an extension as for any request.
    assert_eq!(
        env.approve("alice", &ext, &digest).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(env.approve("bob", &ext, &digest).await.0, StatusCode::OK);
    let (status, granted) = env.approve("carol", &ext, &digest).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert_eq!(granted["state"], "granted", "{granted}");

    let original = request(&env, &id).await;
    assert_eq!(original["state"], "active");
    assert_eq!(
        expires_at(&original) - planned,
        chrono::Duration::minutes(30)
    );

    // Past the original end: the control ends, the extended one keeps running untouched.
    env.clock.advance(61 * MINUTE);
    env.wait_for_state(&control, "expired").await;
    assert_eq!(request(&env, &id).await["state"], "active");
    assert_eq!(
        object_state(&env, "extended-api"),
        Some((uid.clone(), true)),
        "the object keeps its breakglass and its UID"
    );

    // At the new end, it is undone once.
    env.clock.advance(30 * MINUTE);
    env.wait_for_state(&id, "expired").await;
    assert_eq!(
        object_state(&env, "extended-api"),
        None,
        "the broker's object is gone"
    );
    let events = audit_of(&env, &id).await;
    assert_eq!(count(&events, "request.applying"), 1);
    assert_eq!(count(&events, "request.applied"), 1);
    assert_eq!(count(&events, "request.expired"), 1);
    let extended = events
        .iter()
        .find(|e| e["action"] == "request.extended")
        .expect("the extension is audited on the breakglass");
    assert_eq!(extended["detail"]["extension"], json!(ext));
    let requested = events
        .iter()
        .find(|e| e["action"] == "request.extension_requested")
        .expect("the filing is audited on the breakglass");
    assert_eq!(requested["detail"]["extension"], json!(ext));
    let ext_events = audit_of(&env, &ext).await;
    let granted = ext_events
        .iter()
        .find(|e| e["action"] == "request.extension_granted")
        .expect("the grant is audited on the extension");
    assert_eq!(granted["detail"]["extends"], json!(id));
    assert_eq!(count(&ext_events, "request.applying"), 0, "{ext_events:?}");
    assert_eq!(request(&env, &ext).await["state"], "granted");
}

#[tokio::test]
async fn an_extension_not_approved_in_time_lets_the_breakglass_end_as_planned() {
    let env = TestEnv::start().await;
    let id = env.activate("unextended-api", 60).await;
    let (status, extension) = extend(&env, "alice", &id, 30).await;
    assert_eq!(status, StatusCode::CREATED, "{extension}");
    let ext = extension["id"].as_str().expect("id").to_owned();
    let digest = extension["digest"].as_str().expect("digest").to_owned();
    assert_eq!(env.approve("bob", &ext, &digest).await.0, StatusCode::OK);

    env.clock.advance(61 * MINUTE);
    env.wait_for_state(&id, "expired").await;
    env.wait_for_state(&ext, "lapsed").await;
    assert_eq!(object_state(&env, "unextended-api"), None);
    let (status, body) = env.approve("carol", &ext, &digest).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a late approval revives nothing: {body}"
    );
    let events = audit_of(&env, &id).await;
    assert_eq!(count(&events, "request.extended"), 0);
    assert_eq!(count(&events, "request.expired"), 1);
}

#[tokio::test]
async fn a_breakglass_is_extended_at_most_max_extensions_times_one_at_a_time() {
    let env = TestEnv::start().await;
    let id = env.activate("twice-api", 60).await;
    let planned = expires_at(&request(&env, &id).await);

    let (status, first) = extend(&env, "alice", &id, 10).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, body) = extend(&env, "alice", &id, 10).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("still waits for approval"),
        "{body}"
    );
    let first_id = first["id"].as_str().expect("id");
    let digest = first["digest"].as_str().expect("digest");
    assert_eq!(env.approve("bob", first_id, digest).await.0, StatusCode::OK);
    assert_eq!(
        env.approve("carol", first_id, digest).await.0,
        StatusCode::OK
    );
    extend_granted(&env, &id, 20).await;
    assert_eq!(
        expires_at(&request(&env, &id).await) - planned,
        chrono::Duration::minutes(30)
    );

    let (status, body) = extend(&env, "alice", &id, 10).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 2"),
        "{body}"
    );
}

#[tokio::test]
async fn only_the_requester_extends_only_an_active_breakglass_within_max_duration() {
    let env = TestEnv::start().await;
    let id = env.activate("refused-api", 60).await;

    let (status, body) = extend(&env, "bob", &id, 30).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = extend(&env, "alice", &id, 4 * 60 + 1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = env
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/extend"),
            json!({ "minutes": 30 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("justification"),
        "{body}"
    );

    let (status, extension) = extend(&env, "alice", &id, 30).await;
    assert_eq!(status, StatusCode::CREATED, "{extension}");
    let ext = extension["id"].as_str().expect("id");
    let (status, body) = extend(&env, "alice", ext, 30).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains(&id),
        "names the breakglass to extend: {body}"
    );

    let (pending, _) = env
        .file_ok(
            &crate::common::deployment("waiting-api", crate::common::HOTFIX_IMAGE),
            60,
        )
        .await;
    let (status, body) = extend(&env, "alice", &pending, 30).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "cannot extend a request that is pending");
}

#[tokio::test]
async fn a_pending_extension_lapses_when_the_breakglass_it_would_extend_is_closed_early() {
    let env = TestEnv::start().await;
    let id = env.activate("closed-early-api", 60).await;
    let (status, extension) = extend(&env, "alice", &id, 30).await;
    assert_eq!(status, StatusCode::CREATED, "{extension}");
    let ext = extension["id"].as_str().expect("id").to_owned();
    let (status, body) = env
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/close"),
            serde_json::json!({ "comment": "fixed" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.wait_for_state(&id, "closed").await;
    // The clock stands still: the extension lapses with the breakglass, not at its planned end.
    env.wait_for_state(&ext, "lapsed").await;
}
