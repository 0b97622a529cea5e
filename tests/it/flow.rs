//! The whole story over HTTP: request, approve, apply, expire, audit.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::ObjectKey;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use reqwest::StatusCode;

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", "prod", name)
}

/// The broker's own kube client for Deployments in prod, as anyone holding deploy rights
/// would use it.
pub(crate) async fn deployer(env: &TestEnv) -> Api<DynamicObject> {
    deploy_rights(env, "apps", "v1", "Deployment", "deployments").await
}

/// Someone with deploy rights writes this Deployment in prod by server-side apply, as
/// `manager`.
pub(crate) async fn deploy_as(env: &TestEnv, manager: &str, body: &serde_json::Value) {
    let name = body["metadata"]["name"].as_str().expect("name").to_owned();
    deployer(env)
        .await
        .patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(body),
        )
        .await
        .expect("the write is admitted");
}

/// An ordinary deploy, by `ci`, of Deployment `name` running `image` in prod.
pub(crate) async fn deploy_normally(env: &TestEnv, name: &str, image: &str) {
    let body = serde_saphyr::from_str(&deployment(name, image)).expect("manifest");
    deploy_as(env, "ci", &body).await;
}

/// The broker's own kube client for one resource type in prod.
pub(crate) async fn deploy_rights(
    env: &TestEnv,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let kubeconfig = kube::config::Kubeconfig::read_from(env.dir.path().join("broker-kubeconfig"))
        .expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client, "prod", &resource)
}

#[tokio::test]
async fn breakglass_request_is_approved_applied_expired_and_audited() {
    let env = TestEnv::start().await;
    let manifest = deployment("payments-api", HOTFIX_IMAGE);

    // alice asks for an emergency deploy of an unattested image.
    let (id, digest) = env.file_ok(&manifest, 60).await;

    // Without the broker, the cluster refuses that image.
    let body: serde_json::Value = serde_saphyr::from_str(&manifest).expect("manifest");
    let denied = deployer(&env)
        .await
        .patch(
            "payments-api",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect_err("unattested image is denied");
    assert!(
        denied
            .to_string()
            .contains("denied by Binary Authorization"),
        "{denied}"
    );
    assert!(env.env.sim.object(&key("payments-api")).is_none());

    // bob and carol approve exactly this digest.
    let (status, after_bob) = env.approve("bob", &id, &digest).await;
    assert_eq!(status, StatusCode::OK, "{after_bob}");
    assert_eq!(after_bob["state"], "pending");
    let (status, after_carol) = env.approve("carol", &id, &digest).await;
    assert_eq!(status, StatusCode::OK, "{after_carol}");

    // The broker applies it with the label on the pod template and the ticket stamped.
    let active = env.wait_for_state(&id, "active").await;
    assert!(active["expires_at"].is_string());
    let applied = env
        .env
        .sim
        .object(&key("payments-api"))
        .expect("deployment exists");
    let template = &applied["spec"]["template"]["metadata"];
    assert_eq!(
        template["labels"]["image-policy.k8s.io/break-glass"],
        "true"
    );
    assert_eq!(
        template["labels"]["breakglass-broker.io/request-id"],
        id.as_str()
    );
    assert_eq!(
        applied["metadata"]["labels"]["breakglass-broker.io/ticket"],
        "INC-4242"
    );
    assert_eq!(
        applied["metadata"]["annotations"]["breakglass-broker.io/approvers"],
        "bob,carol"
    );
    let admissions = env.env.sim.breakglass_admissions();
    assert_eq!(admissions.len(), 1);
    assert_eq!(admissions[0].images, vec![HOTFIX_IMAGE.to_owned()]);

    // The duration passes on the test clock; the broker undoes the deploy.
    env.clock.advance(Duration::from_secs(61 * 60));
    env.wait_for_state(&id, "expired").await;
    assert!(
        env.env.sim.object(&key("payments-api")).is_none(),
        "the deployment is gone"
    );
    let writes = env.env.sim.write_count(&key("payments-api"));
    assert_eq!((writes.applied(), writes.deletes), (1, 1));

    // The audit lists every step with its actor.
    let steps = steps(&env, &id).await;
    let (status, events) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let expected = [
        ("request.created", "alice"),
        ("request.approved", "bob"),
        ("request.approved", "carol"),
        ("request.fully_approved", "carol"),
        ("request.applying", "breakglass-broker"),
        ("request.applied", "breakglass-broker"),
        ("request.expired", "breakglass-broker"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(steps, expected);
    for event in events.as_array().expect("events") {
        assert_eq!(event["request_id"], id.as_str());
        assert_eq!(event["ticket"], "INC-4242");
        assert!(event["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    }
}

#[tokio::test]
async fn closing_early_restores_what_ran_before() {
    let env = TestEnv::start().await;
    // Something already runs under that name, admitted normally with an attested image.
    let attested = "us-docker.pkg.dev/acme/release/api@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    deploy_normally(&env, "checkout", attested).await;

    let id = env.activate("checkout", 120).await;
    let live = env.env.sim.object(&key("checkout")).expect("exists");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        HOTFIX_IMAGE
    );

    let (status, body) = env
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/close"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.wait_for_state(&id, "closed").await;
    let restored = env.env.sim.object(&key("checkout")).expect("still exists");
    assert_eq!(
        restored["spec"]["template"]["spec"]["containers"][0]["image"],
        attested
    );
    assert!(
        restored["spec"]["template"]["metadata"]["labels"]
            .get("image-policy.k8s.io/break-glass")
            .is_none()
    );
}

#[tokio::test]
async fn kubectl_lists_the_active_breakglass_deployment() {
    let env = TestEnv::start().await;
    env.activate("search-api", 60).await;
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.env.kubeconfig)
        .args([
            "get",
            "deployments",
            "-n",
            "prod",
            "-l",
            "image-policy.k8s.io/break-glass=true",
        ])
        .output()
        .await
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("search-api"), "{stdout}");
}

#[tokio::test]
async fn an_unapproved_request_lapses_when_its_window_closes() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("late", HOTFIX_IMAGE), 60).await;
    env.clock.advance(Duration::from_secs(31 * 60));
    env.wait_for_state(&id, "lapsed").await;
    let (status, body) = env.approve("bob", &id, &digest).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(env.env.sim.object(&key("late")).is_none());
}

#[tokio::test]
async fn a_version_bump_that_left_the_brokers_spec_alone_does_not_block_the_undo() {
    let env = TestEnv::start().await;
    let id = env.activate("noisy", 30).await;
    // A controller-style write: metadata only, the version moves, the spec is untouched.
    let touch = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "noisy", "annotations": { "deployment.kubernetes.io/revision": "1" } }
    });
    deployer(&env)
        .await
        .patch(
            "noisy",
            &PatchParams::apply("deployment-controller"),
            &Patch::Apply(&touch),
        )
        .await
        .expect("metadata write admitted");

    env.clock.advance(Duration::from_secs(31 * 60));
    env.wait_for_state(&id, "expired").await;
    assert!(
        env.env.sim.object(&key("noisy")).is_none(),
        "the broker's deployment is gone"
    );
}

/// The request's audit actions, oldest first, with their actors.
async fn steps(env: &TestEnv, id: &str) -> Vec<(String, String)> {
    let (status, events) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let mut steps: Vec<(String, String)> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["actor"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    steps.reverse();
    steps
}

#[tokio::test]
async fn the_requester_cancels_a_pending_request_nobody_else_can_and_it_stays_cancelled() {
    let env = TestEnv::start().await;
    let (id, digest) = env
        .file_ok(&deployment("withdrawn", HOTFIX_IMAGE), 60)
        .await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    let cancel = format!("/api/v1/requests/{id}/cancel");

    // An approver (who sees the request) and another requester who may approve it cannot
    // cancel it; someone who cannot see it is told it does not exist.
    for persona in ["bob", "erin"] {
        let (status, body) = env.post(persona, &cancel, serde_json::json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{persona}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("only the requester, alice")),
            "{body}"
        );
    }
    let (status, _) = env.post("mallory", &cancel, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, still) = env.get("alice", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(still["state"], "pending", "{still}");

    let (status, body) = env.post("alice", &cancel, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert!(body["ended_at"].is_string(), "{body}");

    // The approval that would have completed it is refused, and so is a second cancel.
    let (status, body) = env.approve("carol", &id, &digest).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("cancelled")),
        "{body}"
    );
    let (status, _) = env.post("alice", &cancel, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, after) = env.get("alice", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(after["state"], "cancelled", "{after}");
    assert_eq!(after["approvals"].as_array().map(Vec::len), Some(1));
    assert!(
        env.env.sim.writes().is_empty(),
        "nothing reached the cluster"
    );

    let expected: Vec<(String, String)> = [
        ("request.created", "alice"),
        ("request.approved", "bob"),
        ("request.cancelled", "alice"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(steps(&env, &id).await, expected);
}

#[tokio::test]
async fn an_active_request_cannot_be_cancelled_only_closed() {
    let env = TestEnv::start().await;
    let id = env.activate("running", 60).await;
    let (status, body) = env
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot cancel a request that is active")),
        "{body}"
    );
    let (_, after) = env.get("alice", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(after["state"], "active");
    assert!(env.env.sim.object(&key("running")).is_some());
}

#[tokio::test]
async fn the_request_list_filters_by_state_and_ticket_and_limits_newest_first() {
    let env = TestEnv::start().await;
    let file_under = |name: &'static str, ticket: &'static str| {
        let env = &env;
        async move {
            env.file_under("alice", "prod", &deployment(name, HOTFIX_IMAGE), ticket, 60)
                .await
        }
    };
    let pending = file_under("list-a", "INC-4242").await;
    env.clock.advance(Duration::from_secs(1));
    let other_ticket = file_under("list-b", "INC-5").await;
    env.clock.advance(Duration::from_secs(1));
    let cancelled = file_under("list-c", "INC-4242").await;
    let (status, _) = env
        .post(
            "alice",
            &format!("/api/v1/requests/{cancelled}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    env.clock.advance(Duration::from_secs(1));
    let active = env.activate("list-d", 60).await;

    let list = |query: &'static str| {
        let env = &env;
        async move {
            let (status, body) = env.get("dave", &format!("/api/v1/requests{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body.as_array()
                .expect("a list")
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_owned())
                .collect::<Vec<String>>()
        }
    };
    assert_eq!(
        list("").await,
        [&active, &cancelled, &other_ticket, &pending].map(String::clone),
        "everything, newest first"
    );
    assert_eq!(
        list("?state=pending").await,
        [&other_ticket, &pending].map(String::clone)
    );
    assert_eq!(
        list("?state=cancelled").await,
        [&cancelled].map(String::clone)
    );
    assert_eq!(list("?state=active").await, [&active].map(String::clone));
    assert!(list("?state=expired").await.is_empty());
    assert_eq!(
        list("?ticket=INC-5").await,
        [&other_ticket].map(String::clone)
    );
    assert_eq!(
        list("?ticket=INC-4242").await,
        [&active, &cancelled, &pending].map(String::clone)
    );
    assert_eq!(
        list("?ticket=INC-4242&state=pending").await,
        [&pending].map(String::clone)
    );
    assert_eq!(
        list("?limit=2").await,
        [&active, &cancelled].map(String::clone)
    );
    assert_eq!(
        list("?state=pending&limit=1").await,
        [&other_ticket].map(String::clone)
    );

    for bad in [
        "?limit=0",
        "?limit=501",
        "?limit=two",
        "?state=bogus",
        "?owner=alice",
    ] {
        let (status, body) = env.get("dave", &format!("/api/v1/requests{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    // The filters never widen what a person sees: someone with no role sees nothing at all.
    let (status, _) = env.get("mallory", "/api/v1/requests?ticket=INC-4242").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_list_limit_counts_only_requests_the_person_may_see() {
    let env = TestEnv::start().await;
    let (alices, _) = env.file_ok(&deployment("mine", HOTFIX_IMAGE), 60).await;
    env.clock.advance(Duration::from_secs(1));
    for name in ["theirs-a", "theirs-b"] {
        let (status, body) = env.file("erin", &deployment(name, HOTFIX_IMAGE), 60).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // alice may not decide on erin's requests, so she sees only her own.
    let (status, listed) = env.get("alice", "/api/v1/requests?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, [alices.as_str()], "{listed}");
}
