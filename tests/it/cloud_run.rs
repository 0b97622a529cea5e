//! Cloud Run breakglass on `dev-run`, over the real Admin API v2 client and the simulated
//! Cloud Run: the justification names the ticket, the request and its approvers; the revision
//! serves; at the end the prior template comes back and the justification goes; the broker
//! never writes over a service someone else changed; and the policy refuses what a breakglass
//! may not do.

use std::time::Duration;

use breakglass_broker::dev::{RUN_RELEASE_IMAGE, RUN_SERVICE, RUN_SERVICE_ACCOUNT, RUN_TARGET};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv};
use crate::end::ended;

const OTHERS_RELEASE: &str = "us-docker.pkg.dev/acme/release/checkout@sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// A request for `service` running `image`, in the request shape of a Cloud Run service.
fn service(name: &str, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: run.googleapis.com/v2\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n{extra_spec}  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      serviceAccount: {RUN_SERVICE_ACCOUNT}\n      containers:\n      - image: {image}\n        ports: [{{containerPort: 8080}}]\n"
    )
}

async fn file_run(env: &TestEnv, manifest: &str) -> (StatusCode, Value) {
    env.post(
        "alice",
        "/api/v1/requests",
        json!({
            "target": RUN_TARGET,
            "manifest": manifest,
            "ticket": "INC-123",
            "justification": "checkout returns 500s; hotfix image built from the release branch",
            "duration_minutes": 30,
        }),
    )
    .await
}

/// Files the hotfix for `checkout` and returns (id, digest).
async fn file_hotfix(env: &TestEnv) -> (String, String) {
    let (status, body) = file_run(env, &service(RUN_SERVICE, HOTFIX_IMAGE, "")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["digest"].as_str().expect("digest").to_owned(),
    )
}

async fn approve_both(env: &TestEnv, id: &str, digest: &str) {
    assert_eq!(env.approve("bob", id, digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", id, digest).await.0, StatusCode::OK);
}

fn image_of(service: &Value) -> &str {
    service["template"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

fn justification_of(service: &Value) -> Option<&str> {
    service
        .pointer("/binaryAuthorization/breakglassJustification")
        .and_then(Value::as_str)
}

/// Every label or annotation key of the service or its template that the broker owns.
fn broker_keys(service: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for at in ["", "/template"] {
        for field in ["labels", "annotations"] {
            let map = service.pointer(&format!("{at}/{field}"));
            for key in map
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if key.starts_with("breakglass-broker") {
                    keys.push(format!("{at}/{field}/{key}"));
                }
            }
        }
    }
    keys
}

/// An access token from the simulated metadata server: the only kind the simulated Cloud Run
/// takes.
pub(crate) async fn metadata_token(env: &TestEnv) -> String {
    let body: Value = env
        .http
        .get(format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            env.env.gke.metadata_url
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("the metadata server answers")
        .json()
        .await
        .expect("a token");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn expire(env: &TestEnv, id: &str) -> Value {
    env.clock.advance(Duration::from_secs(31 * 60));
    ended(env, id, "active").await
}

#[tokio::test]
async fn a_cloud_run_breakglass_serves_with_its_justification_and_ends_with_the_prior_template_back()
 {
    let env = TestEnv::start().await;
    let banner = breakglass_broker::dev::banner(&env.env);
    assert!(
        banner.contains(&format!("simulated Cloud Run: {}\n", env.env.run_url)),
        "{banner}"
    );
    assert!(env.env.run_url.starts_with("http://127.0.0.1:"));
    let run = &env.env.run;
    let before = run.service(RUN_SERVICE).expect("checkout exists");
    assert_eq!(image_of(&before), RUN_RELEASE_IMAGE);

    let (id, digest) = file_hotfix(&env).await;
    approve_both(&env, &id, &digest).await;
    env.wait_for_state(&id, "active").await;

    let live = run.service(RUN_SERVICE).expect("checkout");
    assert_eq!(image_of(&live), HOTFIX_IMAGE);
    let justification = justification_of(&live).expect("a justification");
    for part in ["INC-123", id.as_str(), "bob", "carol"] {
        assert!(justification.contains(part), "{part} in {justification}");
    }
    assert_eq!(live["terminalCondition"]["state"], "CONDITION_SUCCEEDED");
    assert_eq!(live["latestReadyRevision"], live["latestCreatedRevision"]);
    let revision = live["latestReadyRevision"].as_str().expect("revision");
    assert_eq!(
        live["trafficStatuses"][0]["revision"],
        revision.rsplit('/').next().expect("short name")
    );
    assert_eq!(live["labels"]["breakglass-broker-request-id"], id.as_str());
    assert_eq!(
        live["template"]["labels"]["breakglass-broker-ticket"],
        "inc-123"
    );
    assert_eq!(
        live["annotations"]["breakglass-broker.io/ticket"],
        "INC-123"
    );
    assert_eq!(
        live["labels"]["app"], "checkout",
        "the service's own labels stay"
    );
    assert_eq!(live["ingress"], before["ingress"], "ingress is kept");
    let admissions = run.breakglass_admissions();
    assert_eq!(admissions.len(), 1, "{admissions:?}");
    assert_eq!(admissions[0].revision, revision);
    assert_eq!(admissions[0].images, [HOTFIX_IMAGE]);
    assert_eq!(
        admissions[0].by,
        breakglass_broker::dev::google::SERVICE_ACCOUNT,
        "written with the broker's Google identity, from the metadata server"
    );

    let ended = expire(&env, &id).await;
    assert_eq!(ended["state"], "expired", "{ended}");
    let after = run.service(RUN_SERVICE).expect("checkout stays");
    assert_eq!(image_of(&after), RUN_RELEASE_IMAGE);
    assert_eq!(
        after["template"], before["template"],
        "the prior template is back"
    );
    assert_eq!(justification_of(&after), None, "{after}");
    assert_eq!(broker_keys(&after), Vec::<String>::new());
    assert_eq!(after["terminalCondition"]["state"], "CONDITION_SUCCEEDED");
    assert_eq!(after["latestReadyRevision"], after["latestCreatedRevision"]);
    assert_eq!(
        run.breakglass_admissions().len(),
        1,
        "the end needs no breakglass"
    );
}

#[tokio::test]
async fn without_a_justification_binary_authorization_refuses_the_revision_as_cloud_run_does() {
    let env = TestEnv::start().await;
    let run = &env.env.run;
    let token = metadata_token(&env).await;
    let response = reqwest::Client::new()
        .patch(format!(
            "{}/v2/{}",
            env.env.run_url,
            run.service_name(RUN_SERVICE)
        ))
        .bearer_auth(&token)
        .json(&json!({ "template": { "containers": [{ "image": HOTFIX_IMAGE }] } }))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    let operation: Value = response.json().await.expect("an operation");
    assert_eq!(operation["done"], false, "{operation}");
    let name = operation["name"].as_str().expect("name");
    let done: Value = reqwest::Client::new()
        .post(format!("{}/v2/{name}:wait", env.env.run_url))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("an operation");
    assert_eq!(done["done"], true);
    let message = done["error"]["message"].as_str().expect("an error");
    assert!(
        message.contains("not admitted by Binary Authorization"),
        "{message}"
    );
    let service = run.service(RUN_SERVICE).expect("checkout");
    assert_eq!(service["terminalCondition"]["state"], "CONDITION_FAILED");
    assert_eq!(service["terminalCondition"]["message"], message);
    assert_ne!(
        service["latestReadyRevision"],
        service["latestCreatedRevision"]
    );
    assert!(run.breakglass_admissions().is_empty());
    let anonymous = reqwest::get(format!(
        "{}/v2/{}",
        env.env.run_url,
        run.service_name(RUN_SERVICE)
    ))
    .await
    .expect("answers");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_service_changed_after_approval_is_not_written_by_the_broker() {
    let env = TestEnv::start().await;
    let run = &env.env.run;
    let (id, digest) = file_hotfix(&env).await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    // Someone deploys between the broker's record of the service and its write.
    run.cue_write_before_next(
        "ci@dev-project.iam.gserviceaccount.com",
        RUN_SERVICE,
        json!({ "template": { "serviceAccount": RUN_SERVICE_ACCOUNT, "containers": [{ "image": OTHERS_RELEASE }] } }),
    );
    let writes = run.write_count(RUN_SERVICE);
    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let failed = ended(&env, &id, "approved").await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["last_error"].as_str().is_some_and(|e| e.contains(
            "Service/checkout changed after the request was approved; the broker did not touch it"
        )),
        "{failed}"
    );
    let live = run.service(RUN_SERVICE).expect("checkout");
    assert_eq!(image_of(&live), OTHERS_RELEASE, "their deploy stands");
    assert_eq!(justification_of(&live), None);
    assert_eq!(run.write_count(RUN_SERVICE), writes + 1, "only their write");
    assert!(run.breakglass_admissions().is_empty());
}

#[tokio::test]
async fn at_the_end_others_changes_are_kept_and_their_own_deploy_only_loses_the_stamps() {
    let env = TestEnv::start().await;
    let run = &env.env.run;
    let (id, digest) = file_hotfix(&env).await;
    approve_both(&env, &id, &digest).await;
    env.wait_for_state(&id, "active").await;
    // Someone labels the service while the breakglass runs: the breakglass still runs, so
    // the prior template comes back, and their label stays.
    let mut labels = run.service(RUN_SERVICE).expect("checkout")["labels"].clone();
    labels["owner"] = json!("payments");
    run.write_as(
        "ops@dev-project.iam",
        RUN_SERVICE,
        json!({ "labels": labels }),
    )
    .expect("their write");
    let ended = expire(&env, &id).await;
    assert_eq!(ended["state"], "expired", "{ended}");
    let after = run.service(RUN_SERVICE).expect("checkout");
    assert_eq!(image_of(&after), RUN_RELEASE_IMAGE);
    assert_eq!(after["labels"]["owner"], "payments");
    assert_eq!(justification_of(&after), None);
    assert_eq!(broker_keys(&after), Vec::<String>::new());

    // A second breakglass, replaced by an ordinary attested deploy that drops the
    // justification: only the broker's stamps go, their image stays.
    let (id, digest) = file_hotfix(&env).await;
    approve_both(&env, &id, &digest).await;
    env.wait_for_state(&id, "active").await;
    let mut template = run.service(RUN_SERVICE).expect("checkout")["template"].clone();
    template["containers"][0]["image"] = json!(OTHERS_RELEASE);
    run.write_as(
        "ci@dev-project.iam",
        RUN_SERVICE,
        json!({ "template": template, "binaryAuthorization": { "useDefault": true } }),
    )
    .expect("their deploy");
    let ended = expire(&env, &id).await;
    assert_eq!(ended["state"], "expired", "{ended}");
    let after = run.service(RUN_SERVICE).expect("checkout");
    assert_eq!(image_of(&after), OTHERS_RELEASE, "their deploy stays");
    assert_eq!(broker_keys(&after), Vec::<String>::new(), "{after}");
    assert_eq!(after["binaryAuthorization"], json!({ "useDefault": true }));
}

#[tokio::test]
async fn a_breakglass_may_not_change_ingress_touch_unlisted_services_or_run_unpinned_images() {
    let env = TestEnv::start().await;
    let cases = [
        (
            service(
                RUN_SERVICE,
                HOTFIX_IMAGE,
                "  ingress: INGRESS_TRAFFIC_ALL\n",
            ),
            "Service/checkout: spec.ingress may not be changed in a breakglass",
        ),
        (
            service("billing", HOTFIX_IMAGE, ""),
            "Service/billing: metadata.name \"billing\" is not a service breakglass may change on target dev-run (allowed: checkout)",
        ),
        (
            service(
                RUN_SERVICE,
                "us-docker.pkg.dev/acme/hotfix/checkout:latest",
                "",
            ),
            "is not pinned by digest (target dev-run requires digests)",
        ),
    ];
    for (manifest, expected) in cases {
        let (status, body) = file_run(&env, &manifest).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(expected)),
            "{expected} in {body}"
        );
    }
    let (status, body) = env
        .post(
            "alice",
            "/api/v1/requests",
            json!({
                "target": RUN_TARGET, "namespace": "prod",
                "manifest": service(RUN_SERVICE, HOTFIX_IMAGE, ""),
                "ticket": "INC-1", "justification": "checkout returns 500s all over",
                "duration_minutes": 30,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Cloud Run services have no namespace")),
        "{body}"
    );
    assert_eq!(env.env.run.write_count(RUN_SERVICE), 1, "only its creation");
}
