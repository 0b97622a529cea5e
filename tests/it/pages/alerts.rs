//! The detector's findings on people's pages: a banner on the dashboards of auditors and
//! approvers, the `/alerts` page (others get 403), and its acknowledge form.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use super::{csrf_of, page, sign_in};
use crate::common::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbrokered_breakglass_is_a_banner_for_auditors_and_approvers_and_is_acknowledged_from_the_alerts_page()
 {
    let env = TestEnv::start().await;
    env.env.sim.set_admission_policy(false);
    let body = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "miner" },
        "spec": { "selector": { "matchLabels": { "app": "miner" } }, "template": {
            "metadata": { "labels": { "app": "miner", "image-policy.k8s.io/break-glass": "true" } },
            "spec": { "containers": [{ "name": "m", "image": "docker.io/attacker/miner:<1>" }] } } },
    });
    let created = env
        .http
        .post(format!(
            "{}/apis/apps/v1/namespaces/prod/deployments?fieldManager=kubectl",
            env.env.cluster_url
        ))
        .bearer_auth(&env.env.deployer.token)
        .json(&body)
        .send()
        .await
        .expect("cluster answers");
    assert_eq!(created.status(), StatusCode::CREATED);
    let start = Instant::now();
    let dave = sign_in(&env, "dave").await;
    loop {
        let (status, html) = page(&env, &dave, "/").await;
        assert_eq!(status, StatusCode::OK);
        if html.contains("Breakglass the broker did not make") {
            assert!(html.contains("1 open alert:"), "{html}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no banner in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bob = sign_in(&env, "bob").await;
    let (_, html) = page(&env, &bob, "/").await;
    assert!(
        html.contains("href=\"/alerts\""),
        "approvers get the banner"
    );
    for persona in ["alice", "mallory"] {
        let client = sign_in(&env, persona).await;
        let (_, html) = page(&env, &client, "/").await;
        assert!(!html.contains("did not make"), "{persona} gets no banner");
        let (status, _) = page(&env, &client, "/alerts").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{persona}");
    }
    let (status, html) = page(&env, &bob, "/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Deployment prod/miner on dev-cluster"),
        "{html}"
    );
    assert!(
        html.contains("docker.io/attacker/miner:&#60;1&#62;"),
        "escaped image: {html}"
    );
    assert!(!html.contains("miner:<1>"));
    let (_, alerts) = env.get("dave", "/api/v1/alerts").await;
    let id = alerts[0]["id"].as_str().expect("id").to_owned();
    let csrf = csrf_of(&html).await;
    let forged = bob
        .post(env.url(&format!("/alerts/{id}/acknowledge")))
        .form(&[("csrf", "wrong"), ("comment", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let done = bob
        .post(env.url(&format!("/alerts/{id}/acknowledge")))
        .form(&[
            ("csrf", csrf.as_str()),
            ("comment", "deployer's drill, INC-9"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&env, &bob, "/alerts").await;
    assert!(html.contains("No open alerts."));
    assert!(
        html.contains("Acknowledged by bob: deployer&#39;s drill, INC-9")
            || html.contains("Acknowledged by bob: deployer&#x27;s drill, INC-9"),
        "{html}"
    );
    let (_, html) = page(&env, &dave, "/").await;
    assert!(
        !html.contains("did not make"),
        "no banner once acknowledged"
    );
}
