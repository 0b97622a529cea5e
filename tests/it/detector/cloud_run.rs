//! Cloud Run findings: a justification the broker did not set, and on a target with
//! `on_unbrokered = "remove"`, what the broker does about it.

use super::*;

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

/// A dev environment with a second Cloud Run target on the same project that takes off what
/// it finds.
async fn start_with_run_remove() -> TestEnv {
    let remove = breakglass_broker::config::TargetConfig {
        name: "dev-run-remove".into(),
        on_unbrokered: OnUnbrokered::Remove,
        // The simulated Cloud Run's address is filled in at start.
        ..dev::dev_run_target("http://127.0.0.1:9").expect("a Cloud Run target")
    };
    TestEnv::start_with(|options| dev::start_with_targets(options, vec![remove])).await
}

/// Waits (real time) until the removing target's finding for `uid` records what was done.
async fn removal_for(env: &TestEnv, uid: &str) -> Value {
    let start = Instant::now();
    loop {
        let found = alerts(env, "").await;
        if let Some(f) = found
            .iter()
            .find(|f| f["uid"] == uid && f["target"] == "dev-run-remove" && f["removed"].is_array())
        {
            return f.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no removal recorded for {uid}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn short(revision: &Value) -> String {
    revision
        .as_str()
        .and_then(|n| n.rsplit('/').next())
        .expect("a revision name")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_breakglass_on_checkout_sends_its_traffic_back_to_the_last_revision_admitted_without_breakglass()
 {
    use breakglass_broker::dev::{RUN_SERVICE, RUN_SERVICE_ACCOUNT};
    let env = start_with_run_remove().await;
    let run = &env.env.run;
    let clean = short(&run.service(RUN_SERVICE).expect("checkout")["latestReadyRevision"]);
    run.write_as(
        "mallory@example.com",
        RUN_SERVICE,
        json!({
            "binaryAuthorization": { "breakglassJustification": "urgent, trust me" },
            "template": { "serviceAccount": RUN_SERVICE_ACCOUNT, "containers": [{ "image": EVIL }] },
        }),
    )
    .expect("mallory's deploy");
    let revisions = run.revisions(RUN_SERVICE);
    assert_eq!(revisions.len(), 2);
    assert_eq!(
        revisions[1]["annotations"]["run.googleapis.com/binary-authorization-breakglass"],
        "urgent, trust me",
        "the revision admitted with breakglass shows it: {}",
        revisions[1]
    );
    assert!(
        revisions[0]["annotations"]["run.googleapis.com/binary-authorization-breakglass"].is_null()
    );
    let evil = short(&revisions[1]["name"]);
    let service = run.service(RUN_SERVICE).expect("checkout");
    assert_eq!(service["trafficStatuses"][0]["revision"], evil.as_str());
    let uid = service["uid"].as_str().expect("uid").to_owned();

    let finding = removal_for(&env, &uid).await;
    assert_eq!(reasons(&finding), ["not_by_the_broker"]);
    assert_eq!(
        finding["removed"],
        json!([{
            "kind": "Service", "name": RUN_SERVICE, "uid": uid,
            "action": "traffic_to_revision", "revision": clean,
        }])
    );
    let service = run.service(RUN_SERVICE).expect("checkout is still there");
    assert_eq!(
        service["traffic"],
        json!([{ "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": clean, "percent": 100 }])
    );
    assert_eq!(
        service["trafficStatuses"],
        json!([{ "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": clean, "percent": 100 }])
    );
    assert!(
        service["binaryAuthorization"]["breakglassJustification"].is_null(),
        "{service}"
    );
    assert_eq!(
        run.revisions(RUN_SERVICE).len(),
        2,
        "moving traffic makes no revision"
    );
    a_few_scans().await;
    assert_eq!(
        audit_count(&env, "breakglass.removed").await,
        1,
        "taken off once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_run_service_whose_every_revision_needed_breakglass_is_deleted_and_the_brokers_own_is_left_alone()
 {
    use breakglass_broker::dev::{RUN_SERVICE, RUN_SERVICE_ACCOUNT};
    let env = start_with_run_remove().await;
    let manifest = format!(
        "apiVersion: run.googleapis.com/v2\nkind: Service\nmetadata:\n  name: {RUN_SERVICE}\n  labels: {{app: {RUN_SERVICE}}}\nspec:\n  template:\n    metadata:\n      labels: {{app: {RUN_SERVICE}}}\n    spec:\n      serviceAccount: {RUN_SERVICE_ACCOUNT}\n      containers:\n      - image: {}\n        ports: [{{containerPort: 8080}}]\n",
        crate::common::HOTFIX_IMAGE
    );
    let (status, body) = env
        .post(
            "alice",
            "/api/v1/requests",
            json!({
                "target": dev::RUN_TARGET, "manifest": manifest, "ticket": "INC-78",
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
    let checkout_writes = run.write_count(RUN_SERVICE);

    // Refused by Binary Authorization first (no ready revision), then admitted with breakglass.
    run.seed("ledger", EVIL, RUN_SERVICE_ACCOUNT);
    run.write_as(
        "mallory@example.com",
        "ledger",
        json!({
            "binaryAuthorization": { "breakglassJustification": "urgent, trust me" },
            "template": { "serviceAccount": RUN_SERVICE_ACCOUNT, "containers": [{ "image": "docker.io/attacker/miner:2" }] },
        }),
    )
    .expect("mallory's deploy");
    let uid = run.service("ledger").expect("ledger")["uid"]
        .as_str()
        .expect("uid")
        .to_owned();
    assert_eq!(run.revisions("ledger").len(), 2);

    let finding = removal_for(&env, &uid).await;
    assert_eq!(
        finding["removed"],
        json!([{ "kind": "Service", "name": "ledger", "uid": uid, "action": "deleted" }])
    );
    assert!(run.service("ledger").is_none(), "ledger was deleted");
    a_few_scans().await;
    assert_eq!(audit_count(&env, "breakglass.removed").await, 1);
    assert_eq!(
        run.write_count(RUN_SERVICE),
        checkout_writes,
        "the broker's own breakglass on checkout is not touched"
    );
    let checkout = run.service(RUN_SERVICE).expect("checkout");
    assert!(checkout["binaryAuthorization"]["breakglassJustification"].is_string());
    let all = alerts(&env, "").await;
    assert!(
        all.iter().all(|f| f["name"] != RUN_SERVICE),
        "the broker's own checkout is no finding: {all:?}"
    );
}

#[tokio::test]
async fn the_simulated_cloud_run_refuses_traffic_to_a_revision_the_service_does_not_have() {
    use breakglass_broker::dev::RUN_SERVICE;
    let env = TestEnv::start().await;
    let run = &env.env.run;
    let token = crate::cloud_run::metadata_token(&env).await;
    let before = run.service(RUN_SERVICE).expect("checkout");
    let mut body = before.clone();
    body["traffic"] = json!([{
        "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "checkout-09999-zzz", "percent": 100,
    }]);
    let response = reqwest::Client::new()
        .patch(format!(
            "{}/v2/{}",
            env.env.run_url,
            run.service_name(RUN_SERVICE)
        ))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("Google's error shape");
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("checkout-09999-zzz")),
        "{error}"
    );
    assert_eq!(run.service(RUN_SERVICE), Some(before), "nothing changed");
}
