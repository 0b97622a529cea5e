//! The detector end to end: `deployer@example.com` writes to the simulated cluster with a
//! token of their own (the admission policy on or off), the broker's detector lists the
//! cluster, and auditors and approvers read the findings from `/api/v1/alerts`.
//!
//! The simulated cluster runs no controllers, so the tests write a Deployment's ReplicaSet
//! and Pods themselves, with the ownerReferences kube-controller-manager would set.

use std::time::{Duration, Instant};

use breakglass_broker::config::OnUnbrokered;
use breakglass_broker::dev;
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
    let remove = breakglass_broker::config::TargetConfig {
        name: "dev-remove".into(),
        on_unbrokered: OnUnbrokered::Remove,
        ..dev::dev_target(std::path::Path::new("unused"))
    };
    TestEnv::start_with(|options| dev::start_with_targets(options, vec![remove])).await
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

mod audit_logs;
mod cloud_run;
mod deployer;
mod kubernetes;
mod notify;
mod replicas;
mod watch;
