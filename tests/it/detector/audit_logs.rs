//! Cloud Audit Logs as a second witness, on `dev-gke` (`audit_logs = true` in dev): the
//! deployer's breakglass on the simulated GKE cluster, deleted before the broker could list
//! it, is still a finding, read from the simulated Logging API; the broker's own live
//! breakglass is not; a restart adds nothing; and the simulated Logging API refuses what the
//! real one refuses (`api.rs`). `check-config` (`config.rs`) and the reader's store
//! (`store.rs`, on SQLite and PostgreSQL) have their own files.
//!
//! The broker cannot list a cluster it has no token for: these tests start with the simulated
//! metadata server down, let the deployer write and delete, then bring it back, so the
//! detector never sees what the log alone recorded.

use std::sync::Arc;

use breakglass_broker::dev::deployer::DEPLOYER;
use breakglass_broker::dev::sim_cluster::{BROKER_USER, ObjectKey};
use breakglass_broker::workers::audit_logs::AuditLogReader;

use super::*;
use crate::common::{HOTFIX_IMAGE, deployment};

mod api;
mod config;
mod store;

const GKE: &str = "dev-gke";

/// Writes `body` to the simulated GKE cluster as the deployer, over HTTPS with its CA.
async fn on_gke(
    env: &TestEnv,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let gke = &env.env.gke;
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(gke.ca_pem.as_bytes()).expect("the cluster's CA"),
        )
        .build()
        .expect("client");
    let mut request = client
        .request(method, format!("{}{path}", gke.cluster_url))
        .bearer_auth(&env.env.deployer.token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("the GKE cluster answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create_on_gke(env: &TestEnv, plural_path: &str, body: &Value) -> Value {
    let (status, created) = on_gke(
        env,
        reqwest::Method::POST,
        &format!("{plural_path}?fieldManager=kubectl-create"),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

fn labelled_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name, LABEL: "true" } },
        "spec": { "containers": [{ "name": "app", "image": EVIL }] },
    })
}

/// A dev environment whose broker cannot reach the GKE cluster (nor its log) yet.
async fn start_blind() -> TestEnv {
    let env = TestEnv::start_with(dev::start_with_metadata_down).await;
    env.env.gke.sim.set_admission_policy(false);
    env
}

/// The deployer's labelled Pod on the GKE cluster, deleted at once; returns its UID.
async fn pod_only_in_the_log(env: &TestEnv, name: &str) -> String {
    let pod = create_on_gke(env, "/api/v1/namespaces/prod/pods", &labelled_pod(name)).await;
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    let (status, _) = on_gke(
        env,
        reqwest::Method::DELETE,
        &format!("/api/v1/namespaces/prod/pods/{name}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        env.env
            .gke
            .sim
            .object(&ObjectKey::new("v1", "Pod", "prod", name))
            .is_none()
    );
    uid
}

fn database(env: &TestEnv) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        env.dir.path().join("broker.db").display()
    )
}

async fn reader(env: &TestEnv) -> Arc<AuditLogReader> {
    let store = Store::connect(&database(env))
        .await
        .expect("the same database");
    AuditLogReader::new(
        store,
        env.clock.clone(),
        env.env.broker.state.lifecycle.targets.clone(),
        None,
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_seen_only_in_the_audit_logs_becomes_a_finding_with_the_writers_identity() {
    let env = start_blind().await;
    let uid = pod_only_in_the_log(&env, "miner").await;
    let logged = env.env.logging.entries();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        logged[0]["protoPayload"]["authenticationInfo"]["principalEmail"],
        DEPLOYER
    );

    env.env.gke.metadata.set_down(false);
    let (finding, took) = finding_for(&env, &uid, Duration::from_secs(60)).await;
    // The credentials' retry after the outage (up to 10 s) and one read (every 5 s).
    eprintln!("log-only finding {took:?} after the metadata server came back");

    assert_eq!(finding["target"], GKE);
    assert_eq!(
        (&finding["namespace"], &finding["kind"], &finding["name"]),
        (&json!("prod"), &json!("Pod"), &json!("miner"))
    );
    assert_eq!(finding["images"], json!([EVIL]));
    let writers = finding["writers"].as_array().expect("writers");
    assert!(writers.contains(&json!(DEPLOYER)), "{finding}");
    let names = reasons(&finding);
    assert!(
        names.contains(&"seen_only_in_audit_logs".to_owned()),
        "{finding}"
    );
    assert!(names.contains(&"not_by_the_broker".to_owned()), "{finding}");
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_deployment_its_replicaset_and_pods_in_the_log_make_one_finding_under_the_deployment()
 {
    let env = start_blind().await;
    let deployment = create_on_gke(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("miner"),
    )
    .await;
    let template = deployment["spec"]["template"].clone();
    let replicaset = create_on_gke(
        &env,
        "/apis/apps/v1/namespaces/prod/replicasets",
        &json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": { "name": "miner-5d8f", "ownerReferences": owner(&deployment) },
            "spec": { "selector": { "matchLabels": { "app": "miner" } }, "template": template },
        }),
    )
    .await;
    create_on_gke(
        &env,
        "/api/v1/namespaces/prod/pods",
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "miner-5d8f-a1", "labels": template["metadata"]["labels"],
                          "ownerReferences": owner(&replicaset) },
            "spec": template["spec"],
        }),
    )
    .await;
    let (status, _) = on_gke(
        &env,
        reqwest::Method::DELETE,
        "/apis/apps/v1/namespaces/prod/deployments/miner",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(env.env.logging.entries().len(), 3);

    env.env.gke.metadata.set_down(false);
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let (finding, _) = finding_for(&env, uid, Duration::from_secs(60)).await;
    let reader = reader(&env).await;
    let entry = env
        .env
        .broker
        .state
        .lifecycle
        .targets
        .get(GKE)
        .expect("target");
    let report = reader.read(entry).await.expect("reads");

    assert_eq!(report.entries, 3, "{report:?}");
    assert!(report.new.is_empty(), "{report:?}");
    let all = alerts(&env, "").await;
    assert_eq!(all.len(), 1, "one object, one finding: {all:?}");
    assert_eq!(finding["kind"], "Deployment");
    assert!(
        finding["writers"]
            .as_array()
            .expect("writers")
            .contains(&json!(DEPLOYER))
    );
    // What the log shows ran under it is listed in it, as the detector lists it.
    let members: Vec<&str> = all[0]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(members, ["miner-5d8f-a1", "miner-5d8f"], "{}", all[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_and_replicas_reading_the_same_log_add_no_second_finding() {
    let env = start_blind().await;
    let uid = pod_only_in_the_log(&env, "miner").await;
    env.env.gke.metadata.set_down(false);
    // Two more readers on the same database, racing the broker's own.
    let entry = env
        .env
        .broker
        .state
        .lifecycle
        .targets
        .get(GKE)
        .expect("target")
        .clone();
    let (a, b) = (reader(&env).await, reader(&env).await);
    let racing = [a, b].map(|r| {
        let entry = entry.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match r.read(&entry).await {
                    Ok(report) => return report,
                    Err(e) => assert!(Instant::now() < deadline, "never read the log: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    for report in futures_util::future::join_all(racing).await {
        let report = report.expect("joins");
        assert_eq!(report.entries, 1, "{report:?}");
    }
    finding_for(&env, &uid, Duration::from_secs(30)).await;
    a_few_scans().await;
    assert_eq!(alerts(&env, "").await.len(), 1);
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 1);

    // The cursor is kept: a restart reads on from the entry, not from an hour back.
    let store = Store::connect(&database(&env)).await.expect("store");
    let cursor = store
        .audit_log_cursor(GKE)
        .await
        .expect("reads")
        .expect("a cursor");
    let logged_at = chrono::DateTime::parse_from_rfc3339(
        env.env.logging.entries()[0]["timestamp"]
            .as_str()
            .expect("timestamp"),
    )
    .expect("RFC 3339")
    .timestamp_millis();
    assert!(cursor >= logged_at, "{cursor} < {logged_at}");
    let restarted = reader(&env).await;
    let started = Instant::now();
    let report = restarted.read(&entry).await.expect("reads");
    eprintln!(
        "a restarted reader's first read took {:?}",
        started.elapsed()
    );
    assert!(report.new.is_empty(), "{report:?}");
    // Even with its cursor lost, a restart reads the entry again and adds nothing.
    sqlx::query("DELETE FROM audit_log_cursors")
        .execute(store.pool())
        .await
        .expect("deletes");
    let report = reader(&env).await.read(&entry).await.expect("reads");
    assert_eq!((report.entries, report.new.len()), (1, 0), "{report:?}");
    assert_eq!(alerts(&env, "").await.len(), 1);
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_own_live_breakglass_never_becomes_a_finding_through_the_logs() {
    let env = TestEnv::start().await;
    let (status, body) = env
        .post(
            "alice",
            "/api/v1/requests",
            json!({
                "target": GKE,
                "namespace": "prod",
                "manifest": deployment("payments-api", HOTFIX_IMAGE),
                "ticket": "INC-7001",
                "justification": "payments API crashloops on GKE; hotfix image from the release branch",
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
    let key = ObjectKey::new("apps/v1", "Deployment", "prod", "payments-api");
    let applied = env
        .env
        .gke
        .sim
        .object(&key)
        .expect("applied on the GKE cluster");
    let uid = applied["metadata"]["uid"].as_str().expect("uid");
    let logged = env.env.logging.entries();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        logged[0]["protoPayload"]["authenticationInfo"]["principalEmail"],
        BROKER_USER
    );
    assert_eq!(
        logged[0]["protoPayload"]["response"]["metadata"]["uid"],
        uid
    );

    let entry = env
        .env
        .broker
        .state
        .lifecycle
        .targets
        .get(GKE)
        .expect("target");
    let report = reader(&env).await.read(entry).await.expect("reads");
    a_few_scans().await;

    assert_eq!((report.entries, report.brokered), (1, 1), "{report:?}");
    assert!(report.new.is_empty(), "{report:?}");
    assert!(alerts(&env, "").await.is_empty());
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 0);
}
