//! Kubernetes findings: the deployer's breakglass found once with what is under it, forged
//! stamps, the legacy annotation, leftovers, acknowledgement, and removal.

use super::*;

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
    // The episode ends once the object has been missing from a complete view for
    // `ABSENCE`, at the next evaluation after that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (all, removing) = loop {
        let all = alerts(&env, "").await;
        let removing = all
            .iter()
            .find(|f| f["target"] == "dev-remove" && f["uid"] == uid)
            .expect("the removing target's finding")
            .clone();
        if removing["gone_at"].is_string() || tokio::time::Instant::now() > deadline {
            break (all, removing);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
async fn a_removal_the_cluster_refuses_still_records_every_finding_and_is_tried_again() {
    use breakglass_broker::dev::sim_cluster::{Failure, ObjectKey};
    let env = start_with_remove().await;
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(403),
        methods: Some(vec!["DELETE".into()]),
        ..Failure::default()
    }));
    env.env.sim.set_admission_policy(false);
    let mut uids = Vec::new();
    for name in ["one", "two"] {
        let (status, stored) = deploy(
            &env,
            "/apis/apps/v1/namespaces/prod/deployments",
            &labelled(name),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        uids.push(stored["metadata"]["uid"].as_str().expect("uid").to_owned());
    }
    for uid in &uids {
        finding_for(&env, uid, Duration::from_secs(5)).await;
    }
    let key = |name: &str| ObjectKey::new("apps/v1", "Deployment", "prod", name);
    assert!(env.env.sim.object(&key("one")).is_some());
    assert!(env.env.sim.object(&key("two")).is_some());
    let all = alerts(&env, "").await;
    assert!(all.iter().all(|f| f["removed"].is_null()), "{all:?}");
    env.env.sim.set_failure_mode(None);
    let start = Instant::now();
    while env.env.sim.object(&key("one")).is_some() || env.env.sim.object(&key("two")).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not removed once allowed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a_few_scans().await;
    let removing: Vec<Value> = alerts(&env, "")
        .await
        .into_iter()
        .filter(|f| f["target"] == "dev-remove")
        .collect();
    assert_eq!(removing.len(), 2);
    assert!(
        removing.iter().all(|f| f["removed"].is_array()),
        "{removing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_pod_that_names_another_teams_deployment_as_owner_is_removed_alone() {
    let env = start_with_remove().await;
    // Another team's attested Deployment, no breakglass anywhere.
    let (status, payments) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &deployment_body(
            "payments",
            pod_template(json!({ "app": "payments" }), json!({}), ATTESTED),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{payments}");
    env.env.sim.set_admission_policy(false);
    // The attacker's labelled Pod claims it as its owner, and another claims an owner nobody
    // can find.
    let mut pods = Vec::new();
    for (name, owners) in [
        ("intruder", owner(&payments)),
        (
            "orphan",
            json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "payments-0",
                     "uid": "00000000-0000-0000-0000-000000000000", "controller": true }]),
        ),
    ] {
        let (status, pod) = deploy(
            &env,
            "/api/v1/namespaces/prod/pods",
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": name, "labels": { LABEL: "true" }, "ownerReferences": owners },
                "spec": { "containers": [{ "name": "app", "image": EVIL }] },
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{pod}");
        pods.push(pod);
    }
    for pod in &pods {
        let uid = pod["metadata"]["uid"].as_str().expect("uid");
        let (finding, _) = finding_for(&env, uid, Duration::from_secs(5)).await;
        assert_eq!(finding["kind"], "Pod", "{finding}");
        assert_eq!(finding["images"], json!([EVIL]));
    }
    let key = |kind: &str, name: &str| {
        let api = if kind == "Pod" { "v1" } else { "apps/v1" };
        breakglass_broker::dev::sim_cluster::ObjectKey::new(api, kind, "prod", name)
    };
    let start = Instant::now();
    while ["intruder", "orphan"]
        .iter()
        .any(|name| env.env.sim.object(&key("Pod", name)).is_some())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the attacker's pods were not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a_few_scans().await;
    assert!(
        env.env.sim.object(&key("Deployment", "payments")).is_some(),
        "the Deployment it named as owner is untouched"
    );
    assert!(
        alerts(&env, "")
            .await
            .iter()
            .all(|f| f["name"] != "payments"),
        "and never blamed"
    );
}
