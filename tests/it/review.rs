//! The post-incident review: on a target with `require_review`, a requester whose breakglass
//! ended writes what broke before filing the next one there; auditors read it in the request,
//! the ticket view and the export.

use std::path::Path;
use std::time::Duration;

use breakglass_broker::config::TargetConfig;
use breakglass_broker::dev;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

const REVIEWED: &str = "reviewed-cluster";

async fn start() -> TestEnv {
    TestEnv::start_with(|options| {
        dev::start_with_targets(
            options,
            vec![TargetConfig {
                name: REVIEWED.into(),
                require_review: true,
                ..dev::dev_target(Path::new(""))
            }],
        )
    })
    .await
}

async fn file(env: &TestEnv, target: &str, name: &str) -> (StatusCode, Value) {
    env.post(
        "alice",
        "/api/v1/requests",
        json!({
            "target": target,
            "namespace": "prod",
            "manifest": deployment(name, HOTFIX_IMAGE),
            "ticket": "INC-31",
            "justification": "payments API crashloops; hotfix image built from release branch",
            "duration_minutes": 30,
        }),
    )
    .await
}

/// Files on the reviewed target, has it approved, runs it out; returns its id.
async fn ran_and_ended(env: &TestEnv, name: &str) -> String {
    let (status, body) = file(env, REVIEWED, name).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let digest = body["digest"].as_str().expect("digest");
    assert_eq!(env.approve("bob", &id, digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", &id, digest).await.0, StatusCode::OK);
    env.wait_for_state(&id, "active").await;
    env.clock.advance(Duration::from_secs(31 * 60));
    env.wait_for_state(&id, "expired").await;
    id
}

async fn review(env: &TestEnv, persona: &str, id: &str, text: &str) -> (StatusCode, Value) {
    env.post(
        persona,
        &format!("/api/v1/requests/{id}/review"),
        json!({ "review": text }),
    )
    .await
}

const REVIEW: &str = "cache TTL bug; postmortem https://docs.example/pm/31; image attested since";

#[tokio::test]
async fn the_next_request_waits_for_the_review_which_auditors_then_read_everywhere() {
    let env = start().await;
    let id = ran_and_ended(&env, "reviewed-api").await;

    let (status, body) = file(&env, REVIEWED, "next-api").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("/requests/{id}")), "{body}");
    assert!(message.contains("review"), "{body}");
    // Other targets do not ask for one.
    let (status, body) = file(&env, "dev-cluster", "elsewhere-api").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    assert_eq!(
        review(&env, "bob", &id, REVIEW).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        review(&env, "alice", &id, "short").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, body) = review(&env, "alice", &id, REVIEW).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["review"], REVIEW);
    assert_eq!(
        review(&env, "alice", &id, REVIEW).await.0,
        StatusCode::CONFLICT,
        "written once"
    );

    let (status, body) = file(&env, REVIEWED, "next-api").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (_, shown) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(shown["review"], REVIEW);
    let (_, ticket) = env.get("dave", "/api/v1/tickets/INC-31").await;
    assert!(ticket.to_string().contains(REVIEW), "{ticket}");
    let export = env
        .http
        .get(env.url("/api/v1/audit/export?format=jsonl&ticket=INC-31"))
        .bearer_auth(env.token("dave").await)
        .send()
        .await
        .expect("export");
    assert_eq!(export.status(), StatusCode::OK);
    let lines = export.text().await.expect("text");
    let reviewed: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["action"] == "request.reviewed")
        .collect();
    assert_eq!(reviewed.len(), 1, "{lines}");
    assert_eq!(reviewed[0]["detail"]["review"], REVIEW);
    assert_eq!(reviewed[0]["request_id"], json!(id));
}

#[tokio::test]
async fn only_a_breakglass_that_ended_is_reviewed() {
    let env = start().await;
    let (status, body) = file(&env, REVIEWED, "pending-api").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id");
    let (status, body) = review(&env, "alice", id, REVIEW).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "cannot review a request that is pending");
}
