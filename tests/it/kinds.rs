//! Every kind a target allows, applied and undone through the real broker and the simulated
//! cluster: stamped with the breakglass label, the request, the requester and the expiry on
//! the object and on its pod template, and nothing marked left once the request ends.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::ObjectKey;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// The label Binary Authorization's breakglass reads, and the broker's own prefix: both are
/// what admission policies and Cloud Audit Log queries outside the broker rely on, so they
/// are spelled out here rather than taken from the code under test.
const BREAKGLASS: &str = "image-policy.k8s.io/break-glass";
const PREFIX: &str = "breakglass-broker.io/";

/// An image that runs without breakglass.
const ATTESTED: &str = "us-docker.pkg.dev/acme/release/api@sha256:4444444444444444444444444444444444444444444444444444444444444444";

/// How long each request here runs.
const MINUTES: u64 = 45;

/// One object of a request: where the simulated cluster keeps it, and where its pod
/// template is (a JSON pointer; empty for a Pod, whose own metadata is the pod's).
struct Expect {
    key: ObjectKey,
    template: &'static str,
}

fn expect(api_version: &str, kind: &str, name: &str, template: &'static str) -> Expect {
    Expect {
        key: ObjectKey::new(api_version, kind, "prod", name),
        template,
    }
}

fn statefulset(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {name}\nspec:\n  serviceName: {name}\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: {name}\n        image: {HOTFIX_IMAGE}\n"
    )
}

fn daemonset(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: {name}\n        image: {HOTFIX_IMAGE}\n"
    )
}

fn job(name: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  backoffLimit: 0\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: {name}\n        image: {HOTFIX_IMAGE}\n"
    )
}

fn cronjob(name: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: {name}\nspec:\n  schedule: \"*/5 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        metadata:\n          labels: {{app: {name}}}\n        spec:\n          restartPolicy: OnFailure\n          containers:\n          - name: {name}\n            image: {HOTFIX_IMAGE}\n"
    )
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  containers:\n  - name: {name}\n    image: {HOTFIX_IMAGE}\n"
    )
}

/// Asserts the broker's stamps on one metadata-bearing part (`what` says which, for messages).
fn assert_stamped(holder: &Value, id: &str, expires_at: &str, what: &str) {
    let labels = &holder["metadata"]["labels"];
    let annotations = &holder["metadata"]["annotations"];
    assert_eq!(labels[BREAKGLASS], "true", "{what}: {holder}");
    assert_eq!(
        labels[format!("{PREFIX}request-id")],
        id,
        "{what}: {holder}"
    );
    assert_eq!(
        labels[format!("{PREFIX}ticket")],
        "INC-4242",
        "{what}: {holder}"
    );
    assert_eq!(
        annotations[format!("{PREFIX}requester")],
        "alice",
        "{what}: {holder}"
    );
    assert_eq!(
        annotations[format!("{PREFIX}expires-at")],
        expires_at,
        "{what}: {holder}"
    );
    assert_eq!(
        annotations[format!("{PREFIX}approvers")],
        "bob,carol",
        "{what}: {holder}"
    );
}

/// Whether any key anywhere in `value` is the breakglass label or one of the broker's.
fn marked(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == BREAKGLASS || k.starts_with(PREFIX) || marked(v)),
        Value::Array(items) => items.iter().any(marked),
        _ => false,
    }
}

/// Every object the simulated cluster holds that still carries a mark, by key.
fn marked_objects(env: &TestEnv) -> Vec<String> {
    env.env
        .sim
        .writes()
        .into_iter()
        .filter_map(|record| {
            let object = env.env.sim.object(&record.key)?;
            marked(&object).then(|| format!("{:?}", record.key))
        })
        .collect()
}

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

/// Files `manifest`, has it approved and applied, checks every object's stamps, lets it
/// expire and checks what is left. Returns the request id.
async fn apply_then_expire(env: &TestEnv, manifest: &str, objects: &[Expect]) -> String {
    let (id, digest) = env.file_ok(manifest, MINUTES).await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let active = env.wait_for_state(&id, "active").await;
    let expires_at = active["expires_at"]
        .as_str()
        .expect("expires_at")
        .to_owned();
    let applied_at = active["applied_at"].as_str().expect("applied_at");
    assert_eq!(
        millis(&expires_at) - millis(applied_at),
        i64::try_from(MINUTES * 60_000).expect("fits"),
        "expires the requested duration after it was applied: {active}"
    );

    let admitted: Vec<ObjectKey> = env
        .env
        .sim
        .breakglass_admissions()
        .into_iter()
        .map(|a| a.key)
        .collect();
    for expected in objects {
        let live = env
            .env
            .sim
            .object(&expected.key)
            .unwrap_or_else(|| panic!("{:?} was applied", expected.key));
        assert_stamped(&live, &id, &expires_at, "the object");
        if !expected.template.is_empty() {
            let template = live
                .pointer(expected.template)
                .unwrap_or_else(|| panic!("{:?} has {}", expected.key, expected.template));
            assert_stamped(template, &id, &expires_at, expected.template);
        }
        assert_eq!(
            live.pointer(&format!("{}/spec/containers/0/image", expected.template)),
            Some(&Value::from(HOTFIX_IMAGE)),
            "{live}"
        );
        assert!(
            admitted.contains(&expected.key),
            "admitted as breakglass: {:?}",
            expected.key
        );
    }

    env.clock.advance(Duration::from_secs(MINUTES * 60 + 60));
    env.wait_for_state(&id, "expired").await;
    let marked = marked_objects(env);
    assert!(marked.is_empty(), "still marked after the end: {marked:?}");
    id
}

/// Asserts each object the request created is gone, after one apply and one delete.
fn assert_created_then_deleted(env: &TestEnv, objects: &[Expect]) {
    for expected in objects {
        assert!(
            env.env.sim.object(&expected.key).is_none(),
            "{:?} was deleted",
            expected.key
        );
        let writes = env.env.sim.write_count(&expected.key);
        assert_eq!(
            (writes.applied(), writes.deletes, writes.total()),
            (1, 1, 2),
            "{:?}: one apply, one delete",
            expected.key
        );
    }
}

async fn one_kind(manifest: String, expected: Expect) {
    let env = TestEnv::start().await;
    let objects = [expected];
    apply_then_expire(&env, &manifest, &objects).await;
    assert_created_then_deleted(&env, &objects);
}

#[tokio::test]
async fn a_statefulset_is_applied_stamped_and_undone() {
    one_kind(
        statefulset("ledger-db"),
        expect("apps/v1", "StatefulSet", "ledger-db", "/spec/template"),
    )
    .await;
}

#[tokio::test]
async fn a_daemonset_is_applied_stamped_and_undone() {
    one_kind(
        daemonset("node-agent"),
        expect("apps/v1", "DaemonSet", "node-agent", "/spec/template"),
    )
    .await;
}

#[tokio::test]
async fn a_job_is_applied_stamped_and_undone() {
    one_kind(
        job("reindex"),
        expect("batch/v1", "Job", "reindex", "/spec/template"),
    )
    .await;
}

#[tokio::test]
async fn a_cronjob_is_applied_stamped_on_its_pod_template_and_undone() {
    one_kind(
        cronjob("nightly-report"),
        expect(
            "batch/v1",
            "CronJob",
            "nightly-report",
            "/spec/jobTemplate/spec/template",
        ),
    )
    .await;
}

#[tokio::test]
async fn a_bare_pod_is_applied_stamped_and_undone() {
    one_kind(pod("debug-shell"), expect("v1", "Pod", "debug-shell", "")).await;
}

#[tokio::test]
async fn a_request_of_several_kinds_is_applied_and_undone_as_one() {
    let env = TestEnv::start().await;
    // One of the objects runs already, admitted normally: the end puts it back.
    crate::flow::deploy_normally(&env, "shop-web", ATTESTED).await;
    let manifest = [
        deployment("shop-web", HOTFIX_IMAGE),
        statefulset("shop-db"),
        cronjob("shop-report"),
        pod("shop-debug"),
    ]
    .join("---\n");
    let created = [
        expect("apps/v1", "StatefulSet", "shop-db", "/spec/template"),
        expect(
            "batch/v1",
            "CronJob",
            "shop-report",
            "/spec/jobTemplate/spec/template",
        ),
        expect("v1", "Pod", "shop-debug", ""),
    ];
    let changed = expect("apps/v1", "Deployment", "shop-web", "/spec/template");
    let mut all = vec![changed];
    all.extend(created);

    let id = apply_then_expire(&env, &manifest, &all).await;

    let (changed, created) = all.split_first().expect("four");
    assert_created_then_deleted(&env, created);
    let restored = env
        .env
        .sim
        .object(&changed.key)
        .expect("what ran before runs again");
    assert_eq!(
        restored["spec"]["template"]["spec"]["containers"][0]["image"], ATTESTED,
        "{restored}"
    );
    let writes = env.env.sim.write_count(&changed.key);
    assert_eq!(
        (writes.applies, writes.replaces, writes.deletes),
        (2, 1, 0),
        "ci's apply, the broker's, and one restore"
    );

    // One request, applied once and ended once, with all four objects in its audit.
    let (_, events) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    let events = events.as_array().expect("events");
    let applied: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "request.applied")
        .collect();
    assert_eq!(applied.len(), 1);
    assert_eq!(
        applied[0]["detail"]["objects"],
        serde_json::json!([
            "Deployment/shop-web",
            "StatefulSet/shop-db",
            "CronJob/shop-report",
            "Pod/shop-debug"
        ])
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["action"] == "request.expired")
            .count(),
        1
    );
}
