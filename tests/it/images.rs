//! Images-only requests: a workload and new images instead of a manifest. The broker reads the
//! live workload (on the simulated cluster, on dev-gke over HTTPS and on the simulated Cloud
//! Run), changes only the named containers, and at the end everything is as it ran before;
//! what it cannot build is refused with a 4xx and nothing is filed.

use std::time::Duration;

use breakglass_broker::dev::{RUN_RELEASE_IMAGE, RUN_SERVICE, RUN_SERVICE_ACCOUNT, RUN_TARGET};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv};
use crate::end::ended;
use crate::flow::{deploy_as, deployer};

const RELEASE_API: &str = "us-docker.pkg.dev/acme/release/api@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const RELEASE_PROXY: &str = "us-docker.pkg.dev/acme/release/proxy@sha256:2222222222222222222222222222222222222222222222222222222222222222";
const RELEASE_MIGRATE: &str = "us-docker.pkg.dev/acme/release/migrate@sha256:3333333333333333333333333333333333333333333333333333333333333333";
const JUSTIFICATION: &str = "payments API crashloops; hotfix image built from release branch";

/// A Deployment with an init container, two containers, environment, replicas and labels, as
/// its owners deploy it.
fn payments() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "payments-api", "labels": { "app": "payments-api", "team": "payments" },
                      "annotations": { "owner": "payments" } },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "payments-api" } },
            "template": {
                "metadata": { "labels": { "app": "payments-api", "team": "payments" } },
                "spec": {
                    "initContainers": [{ "name": "migrate", "image": RELEASE_MIGRATE }],
                    "containers": [
                        { "name": "api", "image": RELEASE_API,
                          "env": [{ "name": "MODE", "value": "live" }] },
                        { "name": "proxy", "image": RELEASE_PROXY,
                          "env": [{ "name": "UPSTREAM", "value": "localhost:8080" }] },
                    ],
                },
            },
        },
    })
}

fn images_body(target: &str, namespace: &str, workload: Value, images: Value) -> Value {
    let mut body = json!({
        "target": target,
        "workload": workload,
        "images": images,
        "ticket": "INC-77",
        "justification": JUSTIFICATION,
        "duration_minutes": 30,
    });
    if !namespace.is_empty() {
        body["namespace"] = json!(namespace);
    }
    body
}

/// The parts of a Deployment that the images-only request must leave alone.
fn kept(deployment: &Value) -> Value {
    let spec = &deployment["spec"]["template"]["spec"];
    json!({
        "replicas": deployment["spec"]["replicas"],
        "app": deployment["metadata"]["labels"]["app"],
        "team": deployment["metadata"]["labels"]["team"],
        "owner": deployment["metadata"]["annotations"]["owner"],
        "template_team": deployment["spec"]["template"]["metadata"]["labels"]["team"],
        "migrate": spec["initContainers"][0]["image"],
        "proxy": spec["containers"][1],
        "api_env": spec["containers"][0]["env"],
    })
}

async fn live_payments(env: &TestEnv) -> Value {
    let object = deployer(env)
        .await
        .get("payments-api")
        .await
        .expect("payments-api exists");
    serde_json::to_value(object).expect("json")
}

async fn approve_both(env: &TestEnv, id: &str, digest: &str) {
    assert_eq!(env.approve("bob", id, digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", id, digest).await.0, StatusCode::OK);
}

async fn requests_filed(env: &TestEnv) -> usize {
    let (status, body) = env.get("dave", "/api/v1/requests").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("a list").len()
}

#[tokio::test]
async fn an_images_only_request_changes_only_the_named_container_of_a_deployment_and_the_end_brings_it_all_back()
 {
    let env = TestEnv::start().await;
    deploy_as(&env, "ci", &payments()).await;
    let before = live_payments(&env).await;
    let body = images_body(
        "dev-cluster",
        "prod",
        json!({ "kind": "Deployment", "name": "payments-api" }),
        json!({ "api": HOTFIX_IMAGE }),
    );

    // The preview shows the manifest the broker built, and pasting that same manifest gives
    // the same digest: the built request is checked like any other.
    let (status, preview) = env
        .post("alice", "/api/v1/requests/preview", body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let built = &preview["objects"][0];
    assert_eq!(
        built["spec"]["template"]["spec"]["containers"][0]["image"],
        HOTFIX_IMAGE
    );
    for server_set in [
        "uid",
        "resourceVersion",
        "managedFields",
        "creationTimestamp",
    ] {
        assert!(built["metadata"].get(server_set).is_none(), "{built}");
    }
    assert!(built.get("status").is_none(), "{built}");
    let pasted = json!({
        "target": "dev-cluster", "namespace": "prod",
        "manifest": serde_json::to_string(built).expect("json"),
        "ticket": "INC-77", "justification": JUSTIFICATION, "duration_minutes": 30,
    });
    let (_, pasted) = env.post("alice", "/api/v1/requests/preview", pasted).await;
    assert_eq!(pasted["digest"], preview["digest"], "{pasted}");

    let (status, filed) = env.post("alice", "/api/v1/requests", body).await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    assert_eq!(filed["digest"], preview["digest"]);
    let id = filed["id"].as_str().expect("id").to_owned();
    approve_both(&env, &id, filed["digest"].as_str().expect("digest")).await;
    env.wait_for_state(&id, "active").await;

    let during = live_payments(&env).await;
    assert_eq!(
        during["spec"]["template"]["spec"]["containers"][0]["image"],
        HOTFIX_IMAGE
    );
    assert_eq!(kept(&during), kept(&before), "{during}");
    assert_eq!(
        during["spec"]["template"]["metadata"]["labels"]["image-policy.k8s.io/break-glass"],
        "true"
    );

    env.clock.advance(Duration::from_secs(31 * 60));
    let ended = ended(&env, &id, "active").await;
    assert_eq!(ended["state"], "expired", "{ended}");
    let after = live_payments(&env).await;
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["image"],
        RELEASE_API
    );
    assert_eq!(kept(&after), kept(&before), "{after}");
    assert!(
        after["spec"]["template"]["metadata"]["labels"]
            .get("image-policy.k8s.io/break-glass")
            .is_none(),
        "{after}"
    );

    // The audit says what the request was built from.
    let (_, events) = env
        .get(
            "dave",
            &format!("/api/v1/audit?request={id}&action=request.created"),
        )
        .await;
    let created = events
        .as_array()
        .and_then(|e| e.iter().find(|e| e["action"] == "request.created"))
        .expect("a request.created event");
    assert_eq!(
        created["detail"]["built_from"],
        json!({ "workload": "Deployment/payments-api", "images": { "api": HOTFIX_IMAGE } })
    );
}

#[tokio::test]
async fn an_images_only_request_on_cloud_run_changes_only_the_named_container_and_the_end_brings_the_service_back()
 {
    let env = TestEnv::start().await;
    let run = &env.env.run;
    run.write_as(
        "owner@dev-project.iam",
        RUN_SERVICE,
        json!({
            "labels": { "app": RUN_SERVICE, "team": "shop" },
            "scaling": { "minInstanceCount": 2 },
            "template": {
                "labels": { "app": RUN_SERVICE },
                "serviceAccount": RUN_SERVICE_ACCOUNT,
                "containers": [
                    { "name": "app", "image": RUN_RELEASE_IMAGE,
                      "env": [{ "name": "MODE", "value": "live" }],
                      "ports": [{ "containerPort": 8080 }] },
                    { "name": "proxy", "image": RELEASE_PROXY },
                ],
            },
        }),
    )
    .expect("the owner's deploy is admitted");
    let before = run.service(RUN_SERVICE).expect("checkout");
    let body = images_body(
        RUN_TARGET,
        "",
        json!({ "kind": "Service", "name": RUN_SERVICE }),
        json!({ "app": HOTFIX_IMAGE }),
    );

    let (status, filed) = env.post("alice", "/api/v1/requests", body).await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    let id = filed["id"].as_str().expect("id").to_owned();
    approve_both(&env, &id, filed["digest"].as_str().expect("digest")).await;
    env.wait_for_state(&id, "active").await;

    let during = run.service(RUN_SERVICE).expect("checkout");
    let containers = &during["template"]["containers"];
    assert_eq!(containers[0]["image"], HOTFIX_IMAGE);
    assert_eq!(
        containers[0]["env"],
        before["template"]["containers"][0]["env"]
    );
    assert_eq!(containers[1], before["template"]["containers"][1]);
    assert_eq!(during["scaling"], before["scaling"]);
    assert_eq!(during["ingress"], before["ingress"]);
    assert_eq!(during["labels"]["team"], "shop");
    assert!(
        during
            .pointer("/binaryAuthorization/breakglassJustification")
            .and_then(Value::as_str)
            .is_some_and(|j| j.contains(&id)),
        "{during}"
    );

    env.clock.advance(Duration::from_secs(31 * 60));
    let ended = ended(&env, &id, "active").await;
    assert_eq!(ended["state"], "expired", "{ended}");
    let after = run.service(RUN_SERVICE).expect("checkout");
    assert_eq!(
        after["template"]["containers"],
        before["template"]["containers"]
    );
    assert_eq!(after["scaling"], before["scaling"]);
    assert_eq!(after["labels"]["team"], "shop");
    assert!(
        after
            .pointer("/binaryAuthorization/breakglassJustification")
            .is_none(),
        "{after}"
    );
}

#[tokio::test]
async fn an_unnamed_cloud_run_container_is_named_by_its_place() {
    let env = TestEnv::start().await;
    let body = images_body(
        RUN_TARGET,
        "",
        json!({ "kind": "Service", "name": RUN_SERVICE }),
        json!({ "0": HOTFIX_IMAGE }),
    );
    let (status, preview) = env.post("alice", "/api/v1/requests/preview", body).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let service = &preview["objects"][0];
    assert_eq!(
        service["spec"]["template"]["spec"]["containers"][0]["image"],
        HOTFIX_IMAGE
    );
    assert!(service["spec"].get("ingress").is_none(), "{service}");
}

#[tokio::test]
async fn images_only_requests_that_cannot_be_built_are_refused_with_a_4xx_and_nothing_is_filed() {
    let env = TestEnv::start().await;
    deploy_as(&env, "ci", &payments()).await;
    let workload = json!({ "kind": "Deployment", "name": "payments-api" });
    let refusals = [
        (
            "an unknown container",
            images_body(
                "dev-cluster",
                "prod",
                workload.clone(),
                json!({ "sidecar": HOTFIX_IMAGE }),
            ),
            "images.sidecar names no container of Deployment/payments-api; its containers are: api, proxy (init containers: migrate)",
        ),
        (
            "an unknown workload",
            images_body(
                "dev-cluster",
                "prod",
                json!({ "kind": "Deployment", "name": "nope" }),
                json!({ "api": HOTFIX_IMAGE }),
            ),
            "workload Deployment/nope in prod was not found on target dev-cluster",
        ),
        (
            "a kind the target does not take",
            images_body(
                "dev-cluster",
                "prod",
                json!({ "kind": "Service", "name": "payments-api" }),
                json!({ "api": HOTFIX_IMAGE }),
            ),
            "workload.kind \"Service\" may not be requested on target dev-cluster",
        ),
        (
            "no images",
            images_body("dev-cluster", "prod", workload.clone(), json!({})),
            "images is empty",
        ),
        (
            "a namespace the target does not open",
            images_body(
                "dev-cluster",
                "kube-system",
                workload.clone(),
                json!({ "api": HOTFIX_IMAGE }),
            ),
            "namespace \"kube-system\" is not open to breakglass",
        ),
        (
            "a Cloud Run service not in the list",
            images_body(
                RUN_TARGET,
                "",
                json!({ "kind": "Service", "name": "billing" }),
                json!({ "0": HOTFIX_IMAGE }),
            ),
            "\"billing\" is not a service breakglass may change on target dev-run",
        ),
    ];
    let mut both = images_body(
        "dev-cluster",
        "prod",
        workload.clone(),
        json!({ "api": HOTFIX_IMAGE }),
    );
    both["manifest"] = json!(crate::common::deployment("payments-api", HOTFIX_IMAGE));
    let mut images_alone = images_body(
        "dev-cluster",
        "prod",
        json!(null),
        json!({ "api": HOTFIX_IMAGE }),
    );
    images_alone
        .as_object_mut()
        .expect("object")
        .remove("workload");
    images_alone["manifest"] = json!(crate::common::deployment("payments-api", HOTFIX_IMAGE));
    let refusals = refusals.into_iter().chain([
        (
            "both a manifest and a workload",
            both,
            "manifest was given together with workload",
        ),
        (
            "images without a workload",
            images_alone,
            "images needs workload",
        ),
    ]);

    for (what, body, says) in refusals {
        for path in ["/api/v1/requests/preview", "/api/v1/requests"] {
            let (status, answer) = env.post("alice", path, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{what} at {path}: {answer}"
            );
            let error = answer["error"].as_str().expect("an error");
            assert!(error.contains(says), "{what}: {error}");
        }
    }
    assert_eq!(requests_filed(&env).await, 0);
    // The workload is as its owners left it.
    assert_eq!(
        live_payments(&env).await["spec"]["template"]["spec"]["containers"][0]["image"],
        RELEASE_API
    );
}

#[tokio::test]
async fn a_workload_field_the_api_does_not_know_is_a_client_error() {
    let env = TestEnv::start().await;
    let body = images_body(
        "dev-cluster",
        "prod",
        json!({ "kind": "Deployment", "name": "payments-api", "namespace": "kube-system" }),
        json!({ "api": HOTFIX_IMAGE }),
    );
    let (status, answer) = env.post("alice", "/api/v1/requests", body).await;
    assert!(status.is_client_error(), "{status}: {answer}");
    assert_eq!(requests_filed(&env).await, 0);
}

/// Someone with deploy rights on `dev-gke` (a token from the simulated metadata server)
/// writes this Deployment in prod by server-side apply, over HTTPS with the cluster's CA.
async fn deploy_on_gke(env: &TestEnv, body: &Value) {
    let gke = &env.env.gke;
    let token = crate::cloud_run::metadata_token(env).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(gke.ca_pem.as_bytes()).expect("the cluster's CA"),
        )
        .build()
        .expect("client");
    let name = body["metadata"]["name"].as_str().expect("name");
    let response = client
        .patch(format!(
            "{}/apis/apps/v1/namespaces/prod/deployments/{name}?fieldManager=ci&force=true",
            gke.cluster_url
        ))
        .bearer_auth(token)
        .header("content-type", "application/apply-patch+yaml")
        .body(body.to_string())
        .send()
        .await
        .expect("the cluster answers");
    let status = response.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        response.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn an_images_only_request_on_dev_gke_is_built_from_the_workload_read_over_https() {
    let env = TestEnv::start().await;
    deploy_on_gke(&env, &payments()).await;
    let body = images_body(
        "dev-gke",
        "prod",
        json!({ "kind": "Deployment", "name": "payments-api" }),
        json!({ "proxy": HOTFIX_IMAGE }),
    );

    let (status, preview) = env.post("alice", "/api/v1/requests/preview", body).await;

    assert_eq!(status, StatusCode::OK, "{preview}");
    let built = &preview["objects"][0];
    let spec = &built["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][1]["image"], HOTFIX_IMAGE);
    assert_eq!(spec["containers"][0]["image"], RELEASE_API);
    assert_eq!(spec["containers"][0]["env"][0]["value"], "live");
    assert_eq!(spec["initContainers"][0]["image"], RELEASE_MIGRATE);
    assert_eq!(built["spec"]["replicas"], 3);
    // dev-cluster has no such Deployment: the read went to the GKE cluster.
    let (status, elsewhere) = env
        .post(
            "alice",
            "/api/v1/requests/preview",
            images_body(
                "dev-cluster",
                "prod",
                json!({ "kind": "Deployment", "name": "payments-api" }),
                json!({ "proxy": HOTFIX_IMAGE }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{elsewhere}");
}
