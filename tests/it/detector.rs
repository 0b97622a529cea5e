//! The detector end to end: `deployer@example.com` writes to the simulated cluster with a
//! token of their own (the admission policy on or off), the broker's detector lists the
//! cluster, and auditors and approvers read the findings from `/api/v1/alerts`.
//!
//! The simulated cluster runs no controllers, so the tests write a Deployment's ReplicaSet
//! and Pods themselves, with the ownerReferences kube-controller-manager would set.

use std::time::{Duration, Instant};

use breakglass_broker::clock::Clock;
use breakglass_broker::config::OnUnbrokered;
use breakglass_broker::dev::{self, DevOptions};
use breakglass_broker::store::Store;
use breakglass_broker::workers::detect::Detector;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestEnv;

const LABEL: &str = "image-policy.k8s.io/break-glass";
const EVIL: &str = "docker.io/attacker/miner:1";
const ATTESTED: &str = "us-docker.pkg.dev/acme/release/api@sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A dev environment with a second target on the same cluster that removes what it finds.
async fn start_with_remove() -> TestEnv {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let remove = breakglass_broker::config::TargetConfig {
        name: "dev-remove".into(),
        on_unbrokered: OnUnbrokered::Remove,
        ..dev::dev_target(std::path::Path::new("unused"))
    };
    let env = dev::start_with_targets(
        DevOptions {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().to_owned(),
            clock: clock.clone(),
            decision_max_age: dev::DECISION_MAX_AGE,
        },
        vec![remove],
    )
    .await
    .expect("dev environment starts");
    TestEnv {
        env,
        clock,
        http: reqwest::Client::new(),
        dir,
    }
}

/// Writes `body` as the deployer (POST to the collection), with kubectl's field manager.
async fn deploy(env: &TestEnv, plural_path: &str, body: &Value) -> (StatusCode, Value) {
    let response = env
        .http
        .post(format!(
            "{}{plural_path}?fieldManager=kubectl-create",
            env.env.cluster_url
        ))
        .bearer_auth(&env.env.deployer.token)
        .json(body)
        .send()
        .await
        .expect("cluster answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn pod_template(labels: Value, annotations: Value, image: &str) -> Value {
    json!({
        "metadata": { "labels": labels, "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": image }] },
    })
}

fn deployment_body(name: &str, template: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "selector": { "matchLabels": { "app": name } }, "template": template },
    })
}

fn labelled(name: &str) -> Value {
    deployment_body(
        name,
        pod_template(json!({ "app": name, LABEL: "true" }), json!({}), EVIL),
    )
}

fn owner(object: &Value) -> Value {
    json!([{
        "apiVersion": object["apiVersion"], "kind": object["kind"],
        "name": object["metadata"]["name"], "uid": object["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    }])
}

/// The deployer's labelled Deployment, with the ReplicaSet and two Pods its controllers
/// would make; returns the Deployment as stored.
async fn labelled_deployment_with_pods(env: &TestEnv, name: &str) -> Value {
    let (status, deployment) = deploy(
        env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled(name),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    let template = deployment["spec"]["template"].clone();
    let (status, replicaset) = deploy(
        env,
        "/apis/apps/v1/namespaces/prod/replicasets",
        &json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": { "name": format!("{name}-5d8f"), "ownerReferences": owner(&deployment) },
            "spec": { "selector": { "matchLabels": { "app": name } }, "template": template },
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{replicaset}");
    for suffix in ["a1", "b2"] {
        let (status, pod) = deploy(
            env,
            "/api/v1/namespaces/prod/pods",
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": format!("{name}-5d8f-{suffix}"), "labels": template["metadata"]["labels"],
                              "ownerReferences": owner(&replicaset) },
                "spec": template["spec"],
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{pod}");
    }
    deployment
}

async fn alerts(env: &TestEnv, query: &str) -> Vec<Value> {
    let (status, body) = env.get("dave", &format!("/api/v1/alerts{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("a list").clone()
}

/// Waits (real time: the detector lists on a timer) until a finding for `uid` appears.
async fn finding_for(env: &TestEnv, uid: &str, within: Duration) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let found = alerts(env, "").await;
        if let Some(f) = found.iter().find(|f| f["uid"] == uid) {
            return (f.clone(), start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "no finding for {uid} within {within:?}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Long enough for every replica's detector to have listed the cluster twice more.
async fn a_few_scans() {
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

async fn audit_count(env: &TestEnv, action: &str) -> usize {
    let (status, body) = env
        .get("dave", &format!("/api/v1/audit?action={action}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().map_or(0, Vec::len)
}

fn reasons(finding: &Value) -> Vec<String> {
    finding["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["reason"].as_str().expect("a reason").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployer_deploys_attested_images_but_the_policy_refuses_their_breakglass() {
    let env = TestEnv::start().await;
    let plain = deployment_body(
        "web",
        pod_template(json!({ "app": "web" }), json!({}), ATTESTED),
    );
    let (status, body) = deploy(&env, "/apis/apps/v1/namespaces/prod/deployments", &plain).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("evil"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may only be set by the breakglass broker"),
        "{message}"
    );
    assert!(message.contains("deployer@example.com"), "{message}");
    // Nobody but the cluster's administrator turns the policy off.
    let refused = env
        .http
        .post(format!("{}/sim/v1/admission-policy", env.env.cluster_url))
        .bearer_auth(&env.env.deployer.token)
        .json(&json!({ "enabled": false }))
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(env.env.sim.admission_policy());
    // The broker's token turns it off, as an administrator would uninstall it.
    let kubeconfig =
        std::fs::read_to_string(env.dir.path().join("broker-kubeconfig")).expect("kubeconfig");
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token")
        .trim_matches('"')
        .to_owned();
    let done = env
        .http
        .post(format!("{}/sim/v1/admission-policy", env.env.cluster_url))
        .bearer_auth(token)
        .json(&json!({ "enabled": false }))
        .send()
        .await
        .expect("answers");
    assert_eq!(done.status(), StatusCode::OK);
    assert!(!env.env.sim.admission_policy());
    let (status, _) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("evil"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployers_breakglass_is_found_within_five_seconds_once_with_its_replicaset_and_pods() {
    let env = TestEnv::start().await;
    env.env.sim.set_admission_policy(false);
    let deployment = labelled_deployment_with_pods(&env, "miner").await;
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let (finding, took) = finding_for(&env, uid, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(finding["kind"], "Deployment");
    assert_eq!(finding["name"], "miner");
    assert_eq!(finding["namespace"], "prod");
    assert_eq!(finding["target"], "dev-cluster");
    assert_eq!(finding["state"], "open");
    assert_eq!(finding["images"], json!([EVIL]));
    assert_eq!(finding["writers"], json!(["kubectl-create"]));
    assert_eq!(reasons(&finding), ["not_by_the_broker"]);
    let members: Vec<&str> = finding["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(members, ["Pod", "Pod", "ReplicaSet"]);
    a_few_scans().await;
    let all = alerts(&env, "").await;
    assert_eq!(
        all.len(),
        1,
        "one finding, not one per pod or per scan: {all:?}"
    );
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 1);
    assert!(all[0]["last_seen"].as_str() >= finding["last_seen"].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_and_approvers_see_alerts_and_an_acknowledgement_needs_a_comment() {
    let env = TestEnv::start().await;
    env.env.sim.set_admission_policy(false);
    let deployment = labelled_deployment_with_pods(&env, "miner").await;
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let (finding, _) = finding_for(&env, uid, Duration::from_secs(5)).await;
    for persona in ["alice", "mallory"] {
        let (status, body) = env.get(persona, "/api/v1/alerts").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{persona}: {body}");
    }
    let (status, body) = env.get("bob", "/api/v1/alerts?state=open").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().map(Vec::len), Some(1));
    let (status, body) = env.get("dave", "/api/v1/alerts?state=closed").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let path = format!(
        "/api/v1/alerts/{}/acknowledge",
        finding["id"].as_str().expect("id")
    );
    let (status, body) = env.post("bob", &path, json!({ "comment": "  " })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("comment")
    );
    let (status, _) = env.post("alice", &path, json!({ "comment": "mine" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = env
        .post(
            "bob",
            &path,
            json!({ "comment": "deployer's test; image deleted" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acknowledged_by"], "bob");
    let (status, _) = env
        .post("carol", &path, json!({ "comment": "again" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(alerts(&env, "?state=open").await.is_empty());
    assert_eq!(alerts(&env, "?state=acknowledged").await.len(), 1);
    let (_, events) = env
        .get("dave", "/api/v1/audit?action=alert.acknowledged")
        .await;
    let events = events.as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["detail"]["comment"],
        "deployer's test; image deleted"
    );
    assert_eq!(events[0]["actor"], "bob");
    let (status, _) = env
        .post(
            "bob",
            "/api/v1/alerts/no-such-id/acknowledge",
            json!({ "comment": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stamps_and_the_legacy_annotation_are_findings_and_the_brokers_own_breakglass_is_not()
 {
    let env = TestEnv::start().await;
    // A real request, ended: its id copied onto a workload is a forgery.
    let ended = env.activate("api", 30).await;
    let (status, body) = env
        .post(
            "alice",
            &format!("/api/v1/requests/{ended}/close"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.wait_for_state(&ended, "closed").await;
    // A live one, whose own Deployment must never be a finding.
    let live = env.activate("checkout", 30).await;
    let ours = env
        .env
        .sim
        .object(&breakglass_broker::dev::sim_cluster::ObjectKey::new(
            "apps/v1",
            "Deployment",
            "prod",
            "checkout",
        ))
        .expect("the broker's deployment");
    env.env.sim.set_admission_policy(false);
    let stamped = |name: &str, id: &str| {
        deployment_body(
            name,
            pod_template(
                json!({ "app": name, LABEL: "true", "breakglass-broker.io/request-id": id }),
                json!({}),
                EVIL,
            ),
        )
    };
    let mut uids = Vec::new();
    for body in [
        stamped("made-up", "00000000-0000-0000-0000-000000000000"),
        stamped("ended-stamp", &ended),
        stamped("copied-stamp", &live),
        deployment_body(
            "annotated",
            pod_template(
                json!({ "app": "annotated" }),
                json!({ "alpha.image-policy.k8s.io/break-glass": "true" }),
                EVIL,
            ),
        ),
    ] {
        let (status, stored) =
            deploy(&env, "/apis/apps/v1/namespaces/prod/deployments", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{stored}");
        uids.push(stored["metadata"]["uid"].as_str().expect("uid").to_owned());
    }
    let mut found = Vec::new();
    for uid in &uids {
        found.push(reasons(
            &finding_for(&env, uid, Duration::from_secs(5)).await.0,
        ));
    }
    assert_eq!(
        found,
        [
            vec!["made_up_request"],
            vec!["ended_request"],
            vec!["copied_stamp"],
            vec!["legacy_annotation"],
        ]
    );
    a_few_scans().await;
    let all = alerts(&env, "").await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|f| f["uid"] != ours["metadata"]["uid"]));
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_put_back_after_a_request_ended_are_a_finding() {
    let env = TestEnv::start().await;
    // The deployer's own Deployment; a request puts breakglass on it and ends.
    let plain = deployment_body(
        "api",
        pod_template(json!({ "app": "api" }), json!({}), ATTESTED),
    );
    let (status, _) = deploy(&env, "/apis/apps/v1/namespaces/prod/deployments", &plain).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = env.activate("api", 30).await;
    let (status, body) = env
        .post("alice", &format!("/api/v1/requests/{id}/close"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.wait_for_state(&id, "closed").await;
    env.env.sim.set_admission_policy(false);
    // The label goes back on the same object (same UID) after the end.
    let patched = env
        .http
        .patch(format!(
            "{}/apis/apps/v1/namespaces/prod/deployments/api?fieldManager=kubectl-patch",
            env.env.cluster_url
        ))
        .bearer_auth(&env.env.deployer.token)
        .header("content-type", "application/merge-patch+json")
        .body(
            json!({ "spec": { "template": { "metadata": { "labels": { LABEL: "true" } } } } })
                .to_string(),
        )
        .send()
        .await
        .expect("answers");
    assert_eq!(patched.status(), StatusCode::OK);
    let stored: Value = patched.json().await.expect("json");
    let (finding, _) = finding_for(
        &env,
        stored["metadata"]["uid"].as_str().expect("uid"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(reasons(&finding), ["left_after_end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_deletes_the_deployment_with_everything_under_it_and_never_the_brokers_own() {
    let env = start_with_remove().await;
    let live = env.activate("checkout", 30).await;
    env.env.sim.set_admission_policy(false);
    let deployment = labelled_deployment_with_pods(&env, "miner").await;
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let start = Instant::now();
    let key = |kind: &str, name: &str| {
        let api = if kind == "Pod" { "v1" } else { "apps/v1" };
        breakglass_broker::dev::sim_cluster::ObjectKey::new(api, kind, "prod", name)
    };
    while env.env.sim.object(&key("Deployment", "miner")).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not removed in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (kind, name) in [
        ("ReplicaSet", "miner-5d8f"),
        ("Pod", "miner-5d8f-a1"),
        ("Pod", "miner-5d8f-b2"),
    ] {
        assert!(
            env.env.sim.object(&key(kind, name)).is_none(),
            "{kind} {name} is still there"
        );
    }
    assert!(
        env.env.sim.object(&key("Deployment", "checkout")).is_some(),
        "the broker's own stays"
    );
    a_few_scans().await;
    let all = alerts(&env, "").await;
    let removing = all
        .iter()
        .find(|f| f["target"] == "dev-remove" && f["uid"] == uid)
        .expect("the removing target's finding");
    let removed: Vec<&str> = removing["removed"]
        .as_array()
        .expect("what was removed")
        .iter()
        .map(|r| r["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(removed, ["Deployment", "Pod", "Pod", "ReplicaSet"]);
    assert!(
        removing["gone_at"].is_string(),
        "the episode ended: {removing}"
    );
    assert_eq!(audit_count(&env, "breakglass.removed").await, 1);
    assert!(all.iter().all(|f| f["name"] != "checkout"), "{all:?}");
    let (_, request) = env.get("alice", &format!("/api/v1/requests/{live}")).await;
    assert_eq!(request["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_database_record_one_finding_and_a_restart_finds_it_again_without_a_duplicate()
 {
    let env = TestEnv::start().await;
    let url = format!(
        "sqlite://{}?mode=rwc",
        env.dir.path().join("broker.db").display()
    );
    let targets = env.env.broker.state.lifecycle.targets.clone();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = Store::connect(&url).await.expect("the same database");
        let detector = Detector::new(store, env.clock.clone(), targets.clone());
        replicas.push(tokio::spawn(detector.run()));
    }
    env.env.sim.set_admission_policy(false);
    let deployment = labelled_deployment_with_pods(&env, "miner").await;
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    finding_for(&env, uid, Duration::from_secs(5)).await;
    a_few_scans().await;
    assert_eq!(alerts(&env, "").await.len(), 1);
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 1);
    for replica in replicas {
        replica.abort();
    }
    // A fresh process on the same database: it sees the object again and adds nothing.
    let restarted = Detector::new(
        Store::connect(&url).await.expect("store"),
        env.clock.clone(),
        targets.clone(),
    );
    env.clock.advance(Duration::from_secs(60));
    let entry = targets.get("dev-cluster").expect("target");
    let report = restarted.scan(entry).await.expect("scans");
    assert_eq!(report.seen, 1);
    assert!(report.new.is_empty());
    let all = alerts(&env, "").await;
    assert_eq!(all.len(), 1);
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 1);
    assert_eq!(
        all[0]["last_seen"],
        breakglass_broker::clock::rfc3339(env.clock.now())
    );
    // Gone, then back: a new episode, a new finding.
    let deleted = env
        .http
        .delete(format!(
            "{}/apis/apps/v1/namespaces/prod/deployments/miner",
            env.env.cluster_url
        ))
        .bearer_auth(&env.env.deployer.token)
        .send()
        .await
        .expect("answers");
    assert_eq!(deleted.status(), StatusCode::OK);
    assert!(restarted.scan(entry).await.expect("scans").new.is_empty());
    let (status, again) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("miner"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(again["metadata"]["uid"], uid);
    let report = restarted.scan(entry).await.expect("scans");
    assert!(report.new.len() <= 1);
    finding_for(
        &env,
        again["metadata"]["uid"].as_str().expect("uid"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(alerts(&env, "").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_run_justification_the_broker_did_not_set_is_a_finding_and_its_own_is_not() {
    use breakglass_broker::dev::{RUN_SERVICE, RUN_SERVICE_ACCOUNT, RUN_TARGET};
    let env = TestEnv::start().await;
    let manifest = format!(
        "apiVersion: run.googleapis.com/v2\nkind: Service\nmetadata:\n  name: {RUN_SERVICE}\n  labels: {{app: {RUN_SERVICE}}}\nspec:\n  template:\n    metadata:\n      labels: {{app: {RUN_SERVICE}}}\n    spec:\n      serviceAccount: {RUN_SERVICE_ACCOUNT}\n      containers:\n      - image: {}\n        ports: [{{containerPort: 8080}}]\n",
        crate::common::HOTFIX_IMAGE
    );
    let (status, body) = env
        .post(
            "alice",
            "/api/v1/requests",
            json!({
                "target": RUN_TARGET, "manifest": manifest, "ticket": "INC-77",
                "justification": "checkout returns 500s; hotfix image from the release branch",
                "duration_minutes": 30,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (id, digest) = (
        body["id"].as_str().expect("id"),
        body["digest"].as_str().expect("digest"),
    );
    assert_eq!(env.approve("bob", id, digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", id, digest).await.0, StatusCode::OK);
    env.wait_for_state(id, "active").await;
    let run = &env.env.run;
    run.seed("ledger", ATTESTED, RUN_SERVICE_ACCOUNT);
    run.write_as(
        "mallory@example.com",
        "ledger",
        json!({
            "binaryAuthorization": { "breakglassJustification": "urgent, trust me" },
            "template": { "serviceAccount": RUN_SERVICE_ACCOUNT, "containers": [{ "image": EVIL }] },
        }),
    )
    .expect("mallory's deploy");
    let uid = run.service("ledger").expect("ledger")["uid"]
        .as_str()
        .expect("uid")
        .to_owned();
    let (finding, took) = finding_for(&env, &uid, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5));
    assert_eq!(finding["target"], RUN_TARGET);
    assert_eq!(finding["kind"], "Service");
    assert_eq!(finding["name"], "ledger");
    assert_eq!(finding["images"], json!([EVIL]));
    assert!(
        finding["writers"]
            .as_array()
            .expect("writers")
            .contains(&json!("mallory@example.com"))
    );
    assert_eq!(reasons(&finding), ["not_by_the_broker"]);
    a_few_scans().await;
    let all = alerts(&env, "").await;
    assert_eq!(
        all.len(),
        1,
        "the broker's own checkout is no finding: {all:?}"
    );
}

/// Runs kubectl as the deployer, with dev mode's `deployer-kubeconfig` (HTTPS, a token).
async fn kubectl_as_deployer(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let home = env.dir.path().join("kubectl-home");
    std::fs::create_dir_all(&home).expect("home");
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.env.deployer.kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(args)
        .env("HOME", &home)
        .output()
        .await
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployers_kubectl_writes_with_its_kubeconfig_and_is_refused_breakglass_by_the_policy()
{
    let env = TestEnv::start().await;
    assert!(env.env.deployer.kubeconfig.ends_with("deployer-kubeconfig"));
    let manifests = env.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("dir");
    let plain = manifests.join("web.json");
    let attested = deployment_body(
        "web",
        pod_template(json!({ "app": "web" }), json!({}), ATTESTED),
    );
    std::fs::write(&plain, attested.to_string()).expect("write");
    let (ok, out) = kubectl_as_deployer(
        &env,
        &[
            "-n",
            "prod",
            "create",
            "--validate=false",
            "-f",
            plain.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{out}");
    let stored = env
        .env
        .sim
        .object(&breakglass_broker::dev::sim_cluster::ObjectKey::new(
            "apps/v1",
            "Deployment",
            "prod",
            "web",
        ))
        .expect("created by the deployer");
    assert_eq!(
        stored["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    let evil = manifests.join("evil.json");
    std::fs::write(&evil, labelled("evil").to_string()).expect("write");
    let (ok, out) = kubectl_as_deployer(
        &env,
        &[
            "-n",
            "prod",
            "create",
            "--validate=false",
            "-f",
            evil.to_str().expect("path"),
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("may only be set by the breakglass broker"),
        "{out}"
    );
    env.env.sim.set_admission_policy(false);
    let (ok, out) = kubectl_as_deployer(
        &env,
        &[
            "-n",
            "prod",
            "create",
            "--validate=false",
            "-f",
            evil.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgresql_scanning_at_once_record_one_finding_per_object() {
    let env = TestEnv::start().await;
    let database = crate::store::FreshPostgres::create().await;
    let targets = env.env.broker.state.lifecycle.targets.clone();
    let entry = targets.get("dev-cluster").expect("target").clone();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let store = Store::connect(&database.url).await.expect("postgres");
        replicas.push(Detector::new(store, env.clock.clone(), targets.clone()));
    }
    env.env.sim.set_admission_policy(false);
    labelled_deployment_with_pods(&env, "miner").await;
    let (status, other) = deploy(
        &env,
        "/apis/apps/v1/namespaces/default/deployments",
        &labelled("miner"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    // Every replica scans at the same moment, three rounds.
    let mut new = 0;
    for _ in 0..3 {
        let scans = replicas.iter().map(|r| {
            let (r, entry) = (r.clone(), entry.clone());
            tokio::spawn(async move { r.scan(&entry).await.expect("scans") })
        });
        for scan in futures_util::future::join_all(scans).await {
            let report = scan.expect("joins");
            assert_eq!(report.seen, 2);
            new += report.new.len();
        }
    }
    assert_eq!(new, 2, "each object recorded once, by one replica");
    let store = Store::connect(&database.url).await.expect("postgres");
    let findings = store.findings(None, 10).await.expect("lists");
    assert_eq!(findings.len(), 2);
    let namespaces: std::collections::BTreeSet<&str> =
        findings.iter().map(|f| f.namespace.as_str()).collect();
    assert_eq!(namespaces, ["default", "prod"].into());
    let events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'breakglass.unbrokered'",
    )
    .fetch_one(store.pool())
    .await
    .expect("counts");
    assert_eq!(events, 2);
    store.pool().close().await;
}
