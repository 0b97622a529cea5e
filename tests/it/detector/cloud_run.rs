//! Cloud Run findings: a justification the broker did not set.

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
