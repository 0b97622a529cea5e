//! When the cluster refuses: an apply refused part-way is rolled back and `failed`; a rollback
//! or an undo the cluster refuses too leaves the request `needs_attention`, audited, with what
//! is left in the cluster named.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::{Failure, ObjectKey};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

const BREAKGLASS: &str = "image-policy.k8s.io/break-glass";

/// An image that runs without breakglass.
const ATTESTED: &str = "us-docker.pkg.dev/acme/release/api@sha256:3333333333333333333333333333333333333333333333333333333333333333";

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", "prod", name)
}

/// Two Deployments in one request: `first` is written first, then `second`.
fn two(first: &str, second: &str) -> String {
    format!(
        "{}---\n{}",
        deployment(first, HOTFIX_IMAGE),
        deployment(second, HOTFIX_IMAGE)
    )
}

/// Files `manifest` as alice with bob's approval; carol's completes it.
async fn file_with_one_approval(env: &TestEnv, manifest: &str) -> (String, String) {
    let (id, digest) = env.file_ok(manifest, 60).await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    (id, digest)
}

/// The request's audit trail, oldest first, as (action, detail).
async fn trail(env: &TestEnv, id: &str) -> Vec<(String, Value)> {
    let (status, events) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let mut steps: Vec<(String, Value)> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().expect("action").to_owned(),
                e["detail"].clone(),
            )
        })
        .collect();
    steps.reverse();
    steps
}

fn actions(trail: &[(String, Value)]) -> Vec<&str> {
    trail.iter().map(|(a, _)| a.as_str()).collect()
}

fn pod_label(object: &Value) -> Option<&Value> {
    object["spec"]["template"]["metadata"]["labels"].get(BREAKGLASS)
}

#[tokio::test]
async fn an_apply_refused_part_way_deletes_what_it_created_and_fails_with_the_reason() {
    let env = TestEnv::start().await;
    let (id, digest) = file_with_one_approval(&env, &two("cart-web", "cart-db")).await;
    // The cluster takes the first write and refuses the second (as admission or RBAC would).
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(422),
        methods: Some(vec!["POST".into()]),
        pass_first: 1,
        ..Failure::default()
    }));

    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let body = env.wait_for_state(&id, "failed").await;
    env.env.sim.set_failure_mode(None);

    let error = body["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Deployment/cart-db") && error.contains("HTTP 422"),
        "the reason names the refused object and the refusal: {body}"
    );
    // The first object landed and was taken away again; the second never landed.
    assert!(
        env.env.sim.object(&key("cart-web")).is_none(),
        "rolled back"
    );
    let first = env.env.sim.write_count(&key("cart-web"));
    assert_eq!((first.applied(), first.deletes), (1, 1), "{first:?}");
    assert!(env.env.sim.object(&key("cart-db")).is_none());
    assert_eq!(env.env.sim.write_count(&key("cart-db")).total(), 0);

    let trail = trail(&env, &id).await;
    assert_eq!(
        actions(&trail),
        [
            "request.created",
            "request.approved",
            "request.approved",
            "request.fully_approved",
            "request.applying",
            "request.failed",
        ]
    );
    let (_, failed) = trail.last().expect("the failure");
    assert_eq!(failed["error"], error, "the audit records the reason");
}

#[tokio::test]
async fn an_apply_refused_part_way_puts_back_an_object_it_had_already_changed() {
    let env = TestEnv::start().await;
    // cart-web runs already, admitted normally.
    crate::flow::deploy_normally(&env, "cart-web", ATTESTED).await;
    let (id, digest) = file_with_one_approval(&env, &two("cart-web", "cart-db")).await;
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(403),
        methods: Some(vec!["PATCH".into(), "POST".into()]),
        pass_first: 1,
        ..Failure::default()
    }));

    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let body = env.wait_for_state(&id, "failed").await;
    env.env.sim.set_failure_mode(None);

    assert!(
        body["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Deployment/cart-db")),
        "{body}"
    );
    let restored = env
        .env
        .sim
        .object(&key("cart-web"))
        .expect("what ran before still runs");
    assert_eq!(
        restored["spec"]["template"]["spec"]["containers"][0]["image"], ATTESTED,
        "{restored}"
    );
    assert_eq!(pod_label(&restored), None, "{restored}");
    assert!(
        restored["metadata"]["labels"]
            .get("breakglass-broker.io/request-id")
            .is_none(),
        "{restored}"
    );
    assert!(env.env.sim.object(&key("cart-db")).is_none());
}

#[tokio::test]
async fn a_rollback_the_cluster_refuses_too_needs_attention_and_names_what_is_left() {
    let env = TestEnv::start().await;
    let (id, digest) = file_with_one_approval(&env, &two("pay-web", "pay-db")).await;
    // Every write after the first is refused: the second apply, and the rollback's delete.
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(403),
        writes_only: true,
        pass_first: 1,
        ..Failure::default()
    }));

    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let body = env.wait_for_state(&id, "needs_attention").await;
    env.env.sim.set_failure_mode(None);

    let error = body["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("Deployment/pay-db"), "{body}");
    assert!(error.contains("rolling back did not finish"), "{body}");
    // The first object is still in the cluster with its breakglass: a person must look.
    let left = env
        .env
        .sim
        .object(&key("pay-web"))
        .expect("the rollback could not delete it");
    assert_eq!(pod_label(&left), Some(&Value::from("true")), "{left}");
    assert_eq!(env.env.sim.write_count(&key("pay-web")).deletes, 0);

    let trail = trail(&env, &id).await;
    let steps = actions(&trail);
    assert_eq!(steps.last(), Some(&"request.needs_attention"), "{steps:?}");
    assert!(!steps.contains(&"request.failed"), "{steps:?}");
    assert!(!steps.contains(&"request.applied"), "{steps:?}");
    let (_, detail) = trail.last().expect("the event");
    assert_eq!(detail["error"], error);
}

#[tokio::test]
async fn an_undo_the_cluster_refuses_needs_attention_with_an_audit_event() {
    let env = TestEnv::start().await;
    let id = env.activate("reports", 30).await;
    // At expiry the cluster refuses the broker's delete (say, its RBAC was narrowed).
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(403),
        methods: Some(vec!["DELETE".into()]),
        ..Failure::default()
    }));

    env.clock.advance(Duration::from_secs(31 * 60));
    let body = env.wait_for_state(&id, "needs_attention").await;
    env.env.sim.set_failure_mode(None);

    let error = body["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("the undo was refused"), "{body}");
    assert!(error.contains("HTTP 403"), "{body}");
    assert!(
        env.env.sim.object(&key("reports")).is_some(),
        "the delete did not land"
    );

    let trail = trail(&env, &id).await;
    let steps = actions(&trail);
    assert_eq!(steps.last(), Some(&"request.needs_attention"), "{steps:?}");
    assert!(!steps.contains(&"request.expired"), "{steps:?}");
    let (_, detail) = trail.last().expect("the event");
    assert!(
        detail["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 403")),
        "the event says what the cluster refused: {detail}"
    );
}

#[tokio::test]
async fn a_restore_the_cluster_refuses_at_close_needs_attention() {
    let env = TestEnv::start().await;
    crate::flow::deploy_normally(&env, "invoices", ATTESTED).await;
    let id = env.activate("invoices", 60).await;
    // Putting back what ran before is a replace (PUT); the cluster refuses it.
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(403),
        methods: Some(vec!["PUT".into()]),
        ..Failure::default()
    }));

    let (status, body) = env
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/close"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = env.wait_for_state(&id, "needs_attention").await;
    env.env.sim.set_failure_mode(None);

    assert!(
        body["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("the undo was refused")),
        "{body}"
    );
    let live = env.env.sim.object(&key("invoices")).expect("exists");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"], HOTFIX_IMAGE,
        "the restore did not land"
    );
    let steps = trail(&env, &id).await;
    let steps = actions(&steps);
    assert_eq!(steps.last(), Some(&"request.needs_attention"), "{steps:?}");
    assert!(!steps.contains(&"request.closed"), "{steps:?}");
}
