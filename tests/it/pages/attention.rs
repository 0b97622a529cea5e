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
async fn only_the_first_page_view_asks_the_cluster_and_later_ones_show_that_look_with_its_age() {
    let env = TestEnv::start().await;
    let (id, _) = env
        .file_ok(
            &crate::common::deployment("slow", crate::common::HOTFIX_IMAGE),
            30,
        )
        .await;
    let bob = sign_in(&env, "bob").await;
    let (status, html) = page(&env, &bob, &format!("/requests/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Checked against the cluster just now"),
        "{html}"
    );
    assert!(
        html.contains("Without breakglass:"),
        "the first view's look found the hotfix image unattested: {html}"
    );

    // From now on every call to the cluster is held for a minute, and counted.
    env.env.sim.set_failure_mode(Some(Failure {
        delay_ms: 60_000,
        ..Failure::default()
    }));
    env.clock.advance(std::time::Duration::from_secs(180));
    for _ in 0..5 {
        let (status, html) = page(&env, &bob, &format!("/requests/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains("Checked against the cluster 3 min ago"),
            "{html}"
        );
        assert!(
            html.contains(&format!("action=\"/requests/{id}/approve\"")),
            "and can be approved from"
        );
    }
    assert_eq!(
        env.env.sim.failure_state().affected,
        0,
        "no page view asked the cluster"
    );

    // Asking to check again asks it once, however often it is asked within ten seconds, and a
    // stalled cluster is reported rather than stalling the page.
    let csrf = csrf_of(&html).await;
    for _ in 0..3 {
        let again = bob
            .post(env.url(&format!("/requests/{id}/look")))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .expect("post");
        assert_eq!(again.status(), StatusCode::SEE_OTHER);
    }
    let (_, html) = page(&env, &bob, &format!("/requests/{id}")).await;
    env.env.sim.set_failure_mode(None);
    assert!(
        html.contains("Checked against the cluster just now"),
        "{html}"
    );
    assert!(html.contains("no answer within"), "{html}");
    assert_eq!(
        env.env.sim.failure_state().affected,
        2,
        "one look: a dry run and a read"
    );
}
