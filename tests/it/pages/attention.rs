//! A breakglass the broker could not end is an alarm on the dashboard of the target's approvers
//! and of auditors, and an approver ends it from its page, saying why.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::{Failure, ObjectKey};
use reqwest::StatusCode;

use super::{csrf_of, page, sign_in};
use crate::common::TestEnv;

#[tokio::test]
async fn a_breakglass_that_needs_attention_heads_approvers_dashboards_and_an_approver_ends_it_from_its_page()
 {
    let env = TestEnv::start().await;
    let id = env.activate("refunds", 30).await;
    env.env.sim.set_failure_mode(Some(Failure {
        status: Some(403),
        methods: Some(vec!["DELETE".into()]),
        ..Failure::default()
    }));
    env.clock.advance(Duration::from_secs(31 * 60));
    env.wait_for_state(&id, "needs_attention").await;

    for persona in ["bob", "dave"] {
        let client = sign_in(&env, persona).await;
        let (status, html) = page(&env, &client, "/").await;
        assert_eq!(status, StatusCode::OK);
        let alarm = html.find("Needs attention").expect("an alarm section");
        let mine = html.find("My open requests").expect("the usual sections");
        assert!(alarm < mine, "{persona}: the alarm comes first");
        assert!(
            html[alarm..mine].contains(&id),
            "{persona}: it lists the request"
        );
    }
    let mallory = sign_in(&env, "mallory").await;
    let (_, html) = page(&env, &mallory, "/").await;
    assert!(!html.contains("Needs attention") && !html.contains(&id));

    env.env.sim.set_failure_mode(None);
    let bob = sign_in(&env, "bob").await;
    let (_, html) = page(&env, &bob, &format!("/requests/{id}")).await;
    assert!(
        html.contains(&format!("action=\"/requests/{id}/close\"")),
        "bob may end it"
    );
    let csrf = csrf_of(&html).await;
    let without_reason = bob
        .post(env.url(&format!("/requests/{id}/close")))
        .form(&[("csrf", csrf.as_str()), ("comment", "")])
        .send()
        .await
        .expect("post");
    assert_eq!(without_reason.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let ended = bob
        .post(env.url(&format!("/requests/{id}/close")))
        .form(&[("csrf", csrf.as_str()), ("comment", "RBAC fixed")])
        .send()
        .await
        .expect("post");
    assert_eq!(ended.status(), StatusCode::SEE_OTHER);
    env.wait_for_state(&id, "closed").await;
    let key = ObjectKey::new("apps/v1", "Deployment", "prod", "refunds");
    assert!(env.env.sim.object(&key).is_none());
}

#[tokio::test]
async fn a_stalled_cluster_does_not_stall_the_request_page() {
    let env = TestEnv::start().await;
    let (id, _) = env
        .file_ok(
            &crate::common::deployment("slow", crate::common::HOTFIX_IMAGE),
            30,
        )
        .await;
    // Every call to the cluster is held for a minute.
    env.env.sim.set_failure_mode(Some(Failure {
        delay_ms: 60_000,
        ..Failure::default()
    }));
    let bob = sign_in(&env, "bob").await;
    let (status, html) = page(&env, &bob, &format!("/requests/{id}")).await;
    env.env.sim.set_failure_mode(None);
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("no answer within"),
        "the page says the cluster did not answer"
    );
    assert!(
        html.contains(&format!("action=\"/requests/{id}/approve\"")),
        "and can still be approved from"
    );
}
