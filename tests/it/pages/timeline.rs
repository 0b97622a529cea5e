//! The timeline people read: sentences, not action names, on the request and ticket pages,
//! and the sentence beside the stored action on the audit page.

use reqwest::StatusCode;
use serde_json::json;

use super::{page, sign_in};
use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

#[tokio::test]
async fn the_request_page_tells_its_timeline_in_sentences_with_the_approval_count() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("worded", HOTFIX_IMAGE), 60).await;
    let (status, _) = env
        .post(
            "bob",
            &format!("/api/v1/requests/{id}/approve"),
            json!({ "digest": digest, "comment": "matches the incident" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let dave = sign_in(&env, "dave").await;
    let (status, html) = page(&env, &dave, &format!("/requests/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("bob approved (1 of 2): matches the incident"),
        "{html}"
    );
    assert!(
        html.contains("asked for breakglass for 1 h on Deployment"),
        "{html}"
    );
    assert!(html.contains("UTC (just now)"), "{html}");
    assert!(
        html.contains("to decide"),
        "the decision window counts down: {html}"
    );

    let (_, ticket) = page(&env, &dave, "/tickets/INC-4242").await;
    assert!(
        ticket.contains("approved (1 of 2): matches the incident"),
        "{ticket}"
    );
    let (_, audit) = page(&env, &dave, "/audit").await;
    assert!(audit.contains("<code>request.approved</code>"), "{audit}");
    assert!(
        audit.contains("approved (1 of 2): matches the incident"),
        "{audit}"
    );
}

#[tokio::test]
async fn an_active_request_page_says_when_it_was_applied_and_how_long_is_left() {
    let env = TestEnv::start().await;
    let id = env.activate("worded-active", 60).await;
    env.clock.advance(std::time::Duration::from_secs(180));
    let dave = sign_in(&env, "dave").await;
    let (_, html) = page(&env, &dave, &format!("/requests/{id}")).await;
    assert!(html.contains("Applied with breakglass until"), "{html}");
    assert!(html.contains("(3 min ago)"), "{html}");
    assert!(html.contains("57m left"), "{html}");
    assert!(
        html.contains("data-action=\"request.fully_approved\""),
        "{html}"
    );
    assert!(!html.contains(" request.fully_approved</li>"), "{html}");
    assert!(html.contains("Fully approved ("), "{html}");
}
