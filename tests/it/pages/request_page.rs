//! The request page: cancelling from it, and what it says about each object before anyone
//! decides (would the cluster admit it without breakglass, and what would change).

use breakglass_broker::dev::ATTESTED_PREFIX;
use breakglass_broker::dev::sim_cluster::ObjectKey;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use reqwest::StatusCode;

use super::{csrf_of, location, page, sign_in};
use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// An image the simulated Binary Authorization treats as attested (and the policy allows).
pub(super) fn attested_image() -> String {
    format!(
        "{ATTESTED_PREFIX}api@sha256:1111111111111111111111111111111111111111111111111111111111111111"
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", "prod", name)
}

/// A deploy-rights kube client, as the ordinary pipeline would use it.
pub(super) async fn deployer(env: &TestEnv) -> Api<DynamicObject> {
    let kubeconfig = kube::config::Kubeconfig::read_from(env.dir.path().join("broker-kubeconfig"))
        .expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "Deployment"),
        "deployments",
    );
    Api::namespaced_with(client, "prod", &resource)
}

fn cancel_form(id: &str) -> String {
    format!("action=\"/requests/{id}/cancel\"")
}

async fn state_of(env: &TestEnv, id: &str) -> serde_json::Value {
    let (status, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["state"].clone()
}

#[tokio::test]
async fn the_requester_cancels_a_pending_request_from_its_page_and_nobody_else_can() {
    let env = TestEnv::start().await;
    let (id, _) = env
        .file_ok(&deployment("cancelled", HOTFIX_IMAGE), 60)
        .await;
    let path = format!("/requests/{id}");

    // bob may see and decide it, but it is not his to cancel: no button, and a post is refused.
    let bob = sign_in(&env, "bob").await;
    let (status, html) = page(&env, &bob, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Approve exactly this"), "{html}");
    assert!(!html.contains(&cancel_form(&id)), "{html}");
    let refused = bob
        .post(env.url(&format!("{path}/cancel")))
        .form(&[("csrf", csrf_of(&html).await)])
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let text = refused.text().await.expect("html");
    assert!(text.contains("only the requester, alice"), "{text}");
    assert_eq!(state_of(&env, &id).await, "pending");

    // alice filed it: her page has the button, and it cancels.
    let alice = sign_in(&env, "alice").await;
    let (status, html) = page(&env, &alice, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&cancel_form(&id)) && html.contains("Cancel request"),
        "{html}"
    );
    let done = alice
        .post(env.url(&format!("{path}/cancel")))
        .form(&[("csrf", csrf_of(&html).await)])
        .send()
        .await
        .expect("post");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), path);
    assert_eq!(state_of(&env, &id).await, "cancelled");
    let (_, html) = page(&env, &alice, &path).await;
    assert!(
        html.contains("Cancelled by the requester") && html.contains("request.cancelled"),
        "{html}"
    );
    assert!(!html.contains(&cancel_form(&id)), "nothing left to cancel");
    // bob can no longer approve it, and nothing reached the cluster.
    assert!(
        !page(&env, &bob, &path)
            .await
            .1
            .contains("Approve exactly this")
    );
    assert!(env.env.sim.object(&key("cancelled")).is_none());
}

#[tokio::test]
async fn the_request_page_says_whether_the_cluster_would_admit_each_object_without_breakglass() {
    let env = TestEnv::start().await;
    let (unattested, _) = env
        .file_ok(&deployment("unattested", HOTFIX_IMAGE), 60)
        .await;
    let (attested, _) = env
        .file_ok(&deployment("attested", &attested_image()), 60)
        .await;
    let bob = sign_in(&env, "bob").await;

    let (status, html) = page(&env, &bob, &format!("/requests/{unattested}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Without breakglass:")
            && html.contains("denied by Binary Authorization")
            && html.contains("hotfix/api"),
        "the denial and the image it names: {html}"
    );
    assert!(
        !html.contains("would admit this without breakglass"),
        "{html}"
    );

    let (status, html) = page(&env, &bob, &format!("/requests/{attested}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Binary Authorization would admit this without breakglass."),
        "{html}"
    );
    assert!(!html.contains("Without breakglass:"), "{html}");

    // Asking was a dry run: nothing was written, not even the image the cluster admits.
    assert!(env.env.sim.object(&key("attested")).is_none());
    assert!(
        env.env.sim.writes().is_empty(),
        "{:?}",
        env.env.sim.writes()
    );
}

/// The text of each diff line of a given class (`del` or `ins`) on a request page.
fn diff_lines(html: &str, class: &str) -> Vec<String> {
    let Some(start) = html.find("<pre class=\"diff\">") else {
        return Vec::new();
    };
    let diff = &html[start..];
    let diff = &diff[..diff.find("</pre>").expect("end of diff")];
    let marker = format!("<span class=\"{class}\">");
    diff.split(&marker)
        .skip(1)
        .map(|rest| rest.split("</span>").next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_request_page_shows_an_existing_objects_changed_image_as_a_change() {
    let env = TestEnv::start().await;
    // What runs now: the attested release image, deployed the ordinary way.
    let release: serde_json::Value =
        serde_saphyr::from_str(&deployment("checkout", &attested_image())).expect("manifest");
    deployer(&env)
        .await
        .patch(
            "checkout",
            &PatchParams::apply("pipeline").force(),
            &Patch::Apply(&release),
        )
        .await
        .expect("the release is admitted");
    let (changed, _) = env.file_ok(&deployment("checkout", HOTFIX_IMAGE), 60).await;
    let (new, _) = env
        .file_ok(&deployment("brand-new", HOTFIX_IMAGE), 60)
        .await;
    let bob = sign_in(&env, "bob").await;

    let (status, html) = page(&env, &bob, &format!("/requests/{changed}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Change against what runs now"), "{html}");
    let removed = diff_lines(&html, "del");
    let added = diff_lines(&html, "ins");
    let release_digest = "1111111111111111";
    let hotfix_digest = "8f4e9a1c2b3d4e5f";
    assert!(
        removed
            .iter()
            .any(|l| l.starts_with('-') && l.contains(release_digest)),
        "the running image goes: {removed:?} / {added:?}"
    );
    assert!(
        added
            .iter()
            .any(|l| l.starts_with('+') && l.contains(hotfix_digest)),
        "the hotfix image comes: {added:?}"
    );
    assert!(
        !removed.iter().any(|l| l.contains(hotfix_digest))
            && !added.iter().any(|l| l.contains(release_digest)),
        "removed {removed:?} added {added:?}"
    );
    // The unchanged parts are not shown as changes.
    assert!(
        !removed
            .iter()
            .chain(&added)
            .any(|l| l.contains("name: checkout")),
        "removed {removed:?} added {added:?}"
    );

    // An object that does not exist yet has nothing to compare against.
    let (status, html) = page(&env, &bob, &format!("/requests/{new}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("Change against what runs now"), "{html}");
}

#[tokio::test]
async fn the_requester_asks_for_more_time_from_the_page_of_a_running_breakglass() {
    let env = TestEnv::start().await;
    let id = env.activate("extend-from-page", 60).await;
    let path = format!("/requests/{id}");
    let form = format!("action=\"/requests/{id}/extend\"");

    let bob = sign_in(&env, "bob").await;
    assert!(
        !page(&env, &bob, &path).await.1.contains(&form),
        "not bob's to extend"
    );

    let alice = sign_in(&env, "alice").await;
    let (_, html) = page(&env, &alice, &path).await;
    assert!(html.contains(&form), "{html}");
    let bad = alice
        .post(env.url(&format!("{path}/extend")))
        .form(&[
            ("csrf", csrf_of(&html).await),
            ("minutes", "soon".into()),
            ("justification", "still mitigating".into()),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let done = alice
        .post(env.url(&format!("{path}/extend")))
        .form(&[
            ("csrf", csrf_of(&html).await),
            ("minutes", "30".into()),
            ("justification", "still mitigating".into()),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let extension = location(&done);
    assert_ne!(extension, path);
    let (_, html) = page(&env, &alice, &extension).await;
    assert!(
        html.contains(&format!("href=\"/requests/{id}\">request {id}</a>")),
        "{html}"
    );
    let (_, original) = page(&env, &alice, &path).await;
    assert!(
        original.contains("alice asked to extend it by 30 min"),
        "{original}"
    );
}

#[tokio::test]
async fn the_requester_writes_the_review_of_an_ended_breakglass_on_its_page() {
    let env = TestEnv::start().await;
    let id = env.activate("review-from-page", 30).await;
    env.clock.advance(std::time::Duration::from_secs(31 * 60));
    env.wait_for_state(&id, "expired").await;
    let path = format!("/requests/{id}");
    let form = format!("action=\"/requests/{id}/review\"");
    let bob = sign_in(&env, "bob").await;
    assert!(
        !page(&env, &bob, &path).await.1.contains(&form),
        "not bob's to review"
    );

    let alice = sign_in(&env, "alice").await;
    let (_, html) = page(&env, &alice, &path).await;
    assert!(html.contains(&form), "{html}");
    let done = alice
        .post(env.url(&format!("{path}/review")))
        .form(&[
            ("csrf", csrf_of(&html).await),
            ("review", "bad config push; postmortem PM-12".into()),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&env, &alice, &path).await;
    assert!(!html.contains(&form), "written once: {html}");
    assert!(html.contains("bad config push; postmortem PM-12"), "{html}");
    assert!(
        html.contains("alice wrote the review: bad config push"),
        "{html}"
    );
}
