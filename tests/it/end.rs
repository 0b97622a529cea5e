//! The end of a breakglass keeps its promise against ordinary sequences and people with deploy
//! rights: nothing outlives its approval, the broker never takes over an object it did not
//! record, one breakglass holds an object at a time, and an end the cluster refused is an
//! alarm an approver can answer.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::{Failure, ObjectKey};
use breakglass_broker::domain::{BREAKGLASS_ANNOTATION, BREAKGLASS_LABEL, BROKER_PREFIX};
use kube::api::{Patch, PatchParams};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};
use crate::flow::{deploy_as, deployer};

const ATTESTED: &str = "us-docker.pkg.dev/acme/release/api@sha256:3333333333333333333333333333333333333333333333333333333333333333";

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", "prod", name)
}

/// Every object in the simulated cluster that carries a breakglass mark or a broker stamp,
/// on itself or on its pod template.
fn marked_objects(env: &TestEnv) -> Vec<String> {
    let marked = |meta: &Value| {
        ["labels", "annotations"].iter().any(|field| {
            meta.get(*field)
                .and_then(Value::as_object)
                .is_some_and(|m| {
                    m.keys().any(|k| {
                        k == BREAKGLASS_LABEL
                            || k == BREAKGLASS_ANNOTATION
                            || k.starts_with(BROKER_PREFIX)
                    })
                })
        })
    };
    env.env
        .sim
        .writes()
        .into_iter()
        .filter_map(|w| env.env.sim.object(&w.key).map(|o| (w.key, o)))
        .filter(|(_, o)| marked(&o["metadata"]) || marked(&o["spec"]["template"]["metadata"]))
        .map(|(key, _)| format!("{key:?}"))
        .collect()
}

/// The breakglass object as someone scaling it with server-side apply writes it.
fn scaled_breakglass(name: &str, replicas: u32) -> Value {
    let mut scaled = manifest(name, HOTFIX_IMAGE);
    scaled["spec"]["replicas"] = json!(replicas);
    scaled["spec"]["template"]["metadata"]["labels"][BREAKGLASS_LABEL] = json!("true");
    scaled
}

/// Moves the clock past a 30-minute breakglass and waits for its end.
async fn expire(env: &TestEnv, id: &str) -> Value {
    env.clock.advance(Duration::from_secs(31 * 60));
    ended(env, id, "active").await
}

fn manifest(name: &str, image: &str) -> Value {
    serde_saphyr::from_str(&deployment(name, image)).expect("manifest")
}

async fn audit_of(env: &TestEnv, id: &str) -> Vec<Value> {
    let (status, body) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("events").clone()
}

/// Waits until the request leaves the state `from`, however it ends.
pub(crate) async fn ended(env: &TestEnv, id: &str, from: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
        if body["state"] != from {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {from}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_breakglass_someone_scaled_is_still_ended_and_the_audit_names_who_scaled_it() {
    let env = TestEnv::start().await;
    let id = env.activate("payments-api", 30).await;
    deploy_as(&env, "kubectl-scale", &scaled_breakglass("payments-api", 5)).await;

    let body = expire(&env, &id).await;

    assert_eq!(body["state"], "expired", "{body}");
    assert!(
        env.env.sim.object(&key("payments-api")).is_none(),
        "the unattested Deployment the broker created does not outlive the approval"
    );
    assert!(
        marked_objects(&env).is_empty(),
        "{:?}",
        marked_objects(&env)
    );
    let events = audit_of(&env, &id).await;
    let end = events
        .iter()
        .find(|e| e["action"] == "request.expired")
        .expect("the end is audited");
    let object = &end["detail"]["objects"][0];
    assert_eq!(object["object"], "Deployment/payments-api");
    assert_eq!(object["did"], "deleted");
    assert!(
        object["changed_by_others"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m.as_str().is_some_and(|m| m.starts_with("kubectl-scale")))),
        "{end}"
    );
}

#[tokio::test]
async fn a_changed_object_gets_its_prior_template_back_and_keeps_the_scale_others_gave_it() {
    let env = TestEnv::start().await;
    deploy_as(&env, "ci", &manifest("orders", ATTESTED)).await;
    let id = env.activate("orders", 30).await;
    deploy_as(&env, "hpa", &scaled_breakglass("orders", 5)).await;

    let body = expire(&env, &id).await;

    assert_eq!(body["state"], "expired", "{body}");
    let left = env
        .env
        .sim
        .object(&key("orders"))
        .expect("it existed before");
    assert_eq!(left["spec"]["replicas"], 5, "the scale is kept: {left}");
    assert_eq!(
        left["spec"]["template"]["spec"]["containers"][0]["image"], ATTESTED,
        "the attested image runs again: {left}"
    );
    assert!(
        marked_objects(&env).is_empty(),
        "{:?}",
        marked_objects(&env)
    );
}

#[tokio::test]
async fn a_template_others_replaced_with_an_attested_deploy_is_left_and_only_unstamped() {
    let env = TestEnv::start().await;
    let id = env.activate("ledger", 30).await;
    // A normal deploy replaces the pod template with an attested image and no breakglass
    // label (a whole-object replace, as `kubectl replace` or a CD tool does).
    let api = deployer(&env).await;
    let live = api.get("ledger").await.expect("live");
    let mut replaced = serde_json::to_value(&live).expect("json");
    replaced["spec"]["template"] = manifest("ledger", ATTESTED)["spec"]["template"].clone();
    let replaced: kube::api::DynamicObject = serde_json::from_value(replaced).expect("object");
    api.replace(
        "ledger",
        &kube::api::PostParams {
            field_manager: Some("ci".into()),
            ..Default::default()
        },
        &replaced,
    )
    .await
    .expect("the attested deploy is admitted");
    let deletes_before = env.env.sim.write_count(&key("ledger")).deletes;

    let body = expire(&env, &id).await;

    assert_eq!(body["state"], "expired", "{body}");
    let left = env
        .env
        .sim
        .object(&key("ledger"))
        .expect("their deploy stays");
    assert_eq!(
        left["spec"]["template"]["spec"]["containers"][0]["image"],
        ATTESTED
    );
    assert_eq!(
        env.env.sim.write_count(&key("ledger")).deletes,
        deletes_before
    );
    assert!(
        marked_objects(&env).is_empty(),
        "{:?}",
        marked_objects(&env)
    );
}

#[tokio::test]
async fn an_object_another_team_created_while_the_first_write_was_retried_is_never_taken_over() {
    let env = TestEnv::start().await;
    // The broker's create fails while the cluster is unwell; other writes go through.
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(503),
        methods: Some(vec!["POST".into()]),
        ..Failure::default()
    }));
    let (id, digest) = env.file_ok(&deployment("payments", HOTFIX_IMAGE), 30).await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
        if body["last_error"].is_string() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile the payments team deploys their own Deployment under that name.
    let mut theirs = manifest("payments", ATTESTED);
    theirs["spec"]["replicas"] = json!(3);
    theirs["metadata"]["labels"]["team"] = json!("payments");
    deploy_as(&env, "payments-ci", &theirs).await;
    let writes_before = env.env.sim.write_count(&key("payments"));
    env.env.sim.set_failure_mode(None);

    // The retry comes after its backoff.
    env.clock.advance(Duration::from_secs(5));
    let body = ended(&env, &id, "approved").await;

    assert_eq!(body["state"], "failed", "{body}");
    assert!(
        body["last_error"].as_str().is_some_and(|e| e
            .contains("Deployment/payments appeared in prod after the request was approved; the broker did not touch it")),
        "{body}"
    );
    let left = env
        .env
        .sim
        .object(&key("payments"))
        .expect("their Deployment stays");
    assert_eq!(left["spec"]["replicas"], 3);
    assert_eq!(left["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        left["spec"]["template"]["spec"]["containers"][0]["image"],
        ATTESTED
    );
    assert_eq!(
        env.env.sim.write_count(&key("payments")),
        writes_before,
        "untouched"
    );
    assert!(
        marked_objects(&env).is_empty(),
        "{:?}",
        marked_objects(&env)
    );
    let events = audit_of(&env, &id).await;
    assert!(events.iter().any(|e| e["action"] == "request.failed"));
}

#[tokio::test]
async fn a_second_request_for_an_object_an_active_breakglass_holds_is_refused_naming_the_holder() {
    let env = TestEnv::start().await;
    let first = env.activate("checkout", 30).await;

    let (status, body) = env
        .file("erin", &deployment("checkout", HOTFIX_IMAGE), 30)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(&first), "names the holder: {body}");
    assert!(
        error.contains(&format!("/requests/{first}")),
        "links to it: {body}"
    );

    // Once the first has ended, the object is free again.
    env.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(ended(&env, &first, "active").await["state"], "expired");
    let (status, body) = env
        .file("erin", &deployment("checkout", HOTFIX_IMAGE), 30)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        marked_objects(&env).is_empty(),
        "{:?}",
        marked_objects(&env)
    );
}

#[tokio::test]
async fn of_two_pending_requests_for_one_object_only_the_first_fully_approved_takes_it() {
    let env = TestEnv::start().await;
    let (a, a_digest) = env
        .file_ok(&deployment("inventory", HOTFIX_IMAGE), 30)
        .await;
    let (b, b_digest) = env
        .file_ok(&deployment("inventory", HOTFIX_IMAGE), 45)
        .await;
    for who in ["bob", "carol"] {
        assert_eq!(env.approve(who, &a, &a_digest).await.0, StatusCode::OK);
    }
    assert_eq!(env.approve("bob", &b, &b_digest).await.0, StatusCode::OK);
    let (status, body) = env.approve("carol", &b, &b_digest).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains(&a)),
        "{body}"
    );
    env.wait_for_state(&a, "active").await;
    let (_, b_now) = env.get("dave", &format!("/api/v1/requests/{b}")).await;
    assert_eq!(
        b_now["state"], "pending",
        "the refused approval changed nothing"
    );
}

/// A request approved before holds existed holds nothing yet: the apply takes its holds, and
/// one whose object another breakglass holds by then fails, naming the holder, and leaves the
/// holder's object alone.
#[tokio::test]
async fn an_approval_that_took_no_holds_is_held_at_apply_or_fails_naming_the_holder() {
    let env = TestEnv::start().await;
    let (a, a_digest) = env
        .file_ok(&deployment("inventory", HOTFIX_IMAGE), 30)
        .await;
    let (b, _) = env
        .file_ok(&deployment("inventory", HOTFIX_IMAGE), 45)
        .await;
    for who in ["bob", "carol"] {
        assert_eq!(env.approve(who, &a, &a_digest).await.0, StatusCode::OK);
    }
    env.wait_for_state(&a, "active").await;
    let applied = env.env.sim.object(&key("inventory")).expect("a's object");

    // B approved the way a broker without holds approved it: the state moved, nothing held.
    let store = &env.env.broker.state.store;
    sqlx::query("UPDATE requests SET state = 'approved' WHERE id = $1")
        .bind(&b)
        .execute(store.pool())
        .await
        .expect("approve without holds");
    // The worker finds it on its next look at the store.
    env.clock.advance(Duration::from_secs(16));
    let failed = env.wait_for_state(&b, "failed").await;
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&a) && error.contains("one breakglass per object"),
        "{failed}"
    );
    assert_eq!(
        env.env.sim.object(&key("inventory")).expect("a's object"),
        applied,
        "the holder's object is untouched"
    );
    let (_, a_now) = env.get("dave", &format!("/api/v1/requests/{a}")).await;
    assert_eq!(a_now["state"], "active");
}

/// Someone with access to the database swaps the image of a filed request and leaves its
/// digest: the approvals name the digest and are taken, but the apply finds the objects no
/// longer give it, applies nothing and fails, saying why.
#[tokio::test]
async fn objects_changed_in_the_database_after_filing_are_never_applied() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("billing", HOTFIX_IMAGE), 30).await;
    let other = "us-docker.pkg.dev/acme/hotfix/api@sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let store = &env.env.broker.state.store;
    let swapped = sqlx::query(
        "UPDATE requests SET objects = REPLACE(objects, $1, $2), manifest = REPLACE(manifest, $1, $2)
         WHERE id = $3",
    )
    .bind(HOTFIX_IMAGE)
    .bind(other)
    .bind(&id)
    .execute(store.pool())
    .await
    .expect("swap the image");
    assert_eq!(swapped.rows_affected(), 1);
    for who in ["bob", "carol"] {
        assert_eq!(env.approve(who, &id, &digest).await.0, StatusCode::OK);
    }
    let failed = env.wait_for_state(&id, "failed").await;
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no longer matches what was approved") && error.contains(&digest),
        "{failed}"
    );
    assert!(
        env.env.sim.object(&key("billing")).is_none(),
        "nothing reached the cluster"
    );
}

#[tokio::test]
async fn an_approver_ends_a_breakglass_that_needs_attention_and_the_object_is_gone() {
    let env = TestEnv::start().await;
    let id = env.activate("refunds", 30).await;
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(403),
        methods: Some(vec!["DELETE".into()]),
        ..Failure::default()
    }));
    let body = expire(&env, &id).await;
    assert_eq!(body["state"], "needs_attention", "{body}");
    assert!(
        env.env.sim.object(&key("refunds")).is_some(),
        "the delete was refused"
    );

    // It heads the dashboard of approvers; an auditor may not end it; an approver must say why.
    let path = format!("/api/v1/requests/{id}/close");
    let (status, _) = env.post("dave", &path, json!({ "comment": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = env.post("bob", &path, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    env.env.sim.set_failure_mode(None);
    let (status, body) = env
        .post("bob", &path, json!({ "comment": "RBAC fixed; ending it" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = ended(&env, &id, "needs_attention").await;
    assert_eq!(body["state"], "closed", "{body}");
    assert!(env.env.sim.object(&key("refunds")).is_none());
    assert!(
        marked_objects(&env).is_empty(),
        "{:?}",
        marked_objects(&env)
    );
    let events = audit_of(&env, &id).await;
    let asked = events
        .iter()
        .find(|e| e["action"] == "request.close_requested")
        .expect("who ended it is audited");
    assert_eq!(asked["actor"], "bob");
    assert_eq!(asked["detail"]["comment"], "RBAC fixed; ending it");
}

#[tokio::test]
async fn a_breakglass_object_someone_deleted_and_made_again_is_an_alarm_not_a_quiet_end() {
    let env = TestEnv::start().await;
    let id = env.activate("web5", 30).await;
    let api = deployer(&env).await;
    api.delete("web5", &Default::default())
        .await
        .expect("deleted");
    let mut again = manifest("web5", HOTFIX_IMAGE);
    again["spec"]["template"]["metadata"]["labels"][BREAKGLASS_LABEL] = json!("true");
    deploy_as(&env, "attacker", &again).await;

    let body = expire(&env, &id).await;

    assert_eq!(body["state"], "needs_attention", "{body}");
    assert!(
        body["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("made again by someone else")),
        "{body}"
    );
    assert!(
        env.env.sim.object(&key("web5")).is_some(),
        "the broker does not write an object it did not write"
    );
}

#[tokio::test]
async fn a_write_that_landed_unanswered_and_lost_its_request_label_is_an_alarm_not_a_failure() {
    let env = TestEnv::start().await;
    // The broker's create lands, but its answer is lost.
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(503),
        methods: Some(vec!["POST".into()]),
        after_commit: true,
        ..Failure::default()
    }));
    let (id, digest) = env.file_ok(&deployment("rc2", HOTFIX_IMAGE), 30).await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.env.sim.object(&key("rc2")).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the create never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.env.sim.set_failure_mode(None);
    // Someone strips the request label from the object and its template.
    let label = format!("{BROKER_PREFIX}request-id");
    let strip = json!({
        "metadata": { "labels": { label.clone(): null } },
        "spec": { "template": { "metadata": { "labels": { label: null } } } },
    });
    deployer(&env)
        .await
        .patch("rc2", &PatchParams::default(), &Patch::Merge(&strip))
        .await
        .expect("stripped");

    env.clock.advance(Duration::from_secs(5));
    let body = ended(&env, &id, "approved").await;

    assert_eq!(body["state"], "needs_attention", "{body}");
    assert!(
        body["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("a person must look")),
        "{body}"
    );
}
