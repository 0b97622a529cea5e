//! The new-request page's images-only path: look a workload up, see what each container runs
//! now, give new images, file.

use reqwest::StatusCode;

use super::{csrf_of, page, sign_in};
use crate::common::{HOTFIX_IMAGE, TestEnv};
use crate::flow::deploy_normally;

const RELEASE: &str = "us-docker.pkg.dev/acme/release/api@sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn fields<'a>(csrf: &'a str, intent: &'a str, name: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("target", "dev-cluster"),
        ("namespace", "prod"),
        ("workload_kind", "Deployment"),
        ("workload_name", name),
        ("ticket", "INC-9"),
        ("justification", "the checkout service is down"),
        ("duration_minutes", "30"),
        ("manifest", ""),
        ("intent", intent),
    ]
}

#[tokio::test]
async fn looking_up_a_workload_shows_each_containers_current_image_and_filing_new_ones_changes_only_those()
 {
    let env = TestEnv::start().await;
    deploy_normally(&env, "payments-api", RELEASE).await;
    let alice = sign_in(&env, "alice").await;
    let (status, html) = page(&env, &alice, "/requests/new").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("name=\"workload_name\""), "{html}");
    let csrf = csrf_of(&html).await;

    let looked = alice
        .post(env.url("/requests/new"))
        .form(&fields(&csrf, "lookup", "payments-api"))
        .send()
        .await
        .expect("look up");
    assert_eq!(looked.status(), StatusCode::OK);
    let html = looked.text().await.expect("html");
    assert!(
        html.contains("Deployment/payments-api in prod runs now"),
        "{html}"
    );
    assert!(html.contains(&format!("<code>{RELEASE}</code>")), "{html}");
    assert!(html.contains("name=\"image.payments-api\""), "{html}");

    let mut filing = fields(&csrf, "submit", "payments-api");
    filing.push(("image.payments-api", HOTFIX_IMAGE));
    let filed = alice
        .post(env.url("/requests/new"))
        .form(&filing)
        .send()
        .await
        .expect("file");
    assert_eq!(filed.status(), StatusCode::SEE_OTHER);
    let location = filed
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("a location")
        .to_owned();
    let id = location.trim_start_matches("/requests/");
    let (_, request) = env.get("alice", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(request["state"], "pending", "{request}");
    let (_, preview) = env
        .post(
            "alice",
            "/api/v1/requests/preview",
            serde_json::json!({
                "target": "dev-cluster", "namespace": "prod",
                "workload": { "kind": "Deployment", "name": "payments-api" },
                "images": { "payments-api": HOTFIX_IMAGE },
                "ticket": "INC-9", "justification": "the checkout service is down",
                "duration_minutes": 30,
            }),
        )
        .await;
    assert_eq!(request["digest"], preview["digest"], "{request} {preview}");
}

#[tokio::test]
async fn looking_up_a_missing_workload_or_container_says_so_beside_the_fields_and_escapes_what_was_typed()
 {
    let env = TestEnv::start().await;
    deploy_normally(&env, "payments-api", RELEASE).await;
    let alice = sign_in(&env, "alice").await;
    let csrf = csrf_of(&page(&env, &alice, "/requests/new").await.1).await;

    let missing = alice
        .post(env.url("/requests/new"))
        .form(&fields(&csrf, "lookup", "nope"))
        .send()
        .await
        .expect("look up");
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = missing.text().await.expect("html");
    assert!(
        html.contains("Deployment/nope in prod was not found on target dev-cluster"),
        "{html}"
    );

    let hostile = "<script>alert(1)</script>";
    let mut filing = fields(&csrf, "preview", "payments-api");
    let field = format!("image.{hostile}");
    filing.push((&field, HOTFIX_IMAGE));
    let refused = alice
        .post(env.url("/requests/new"))
        .form(&filing)
        .send()
        .await
        .expect("preview");
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = refused.text().await.expect("html");
    assert!(!html.contains(hostile), "{html}");
    assert!(
        html.contains(
            "names no container of Deployment/payments-api; its containers are: payments-api"
        ),
        "{html}"
    );
    let (_, listed) = env.get("dave", "/api/v1/requests").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}
