//! Approval rules over HTTP, on a target that needs one approval from each of two groups
//! (`approvers` AND `oncall`, standing in for `sre` AND `security`).

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::TestEnv;
use crate::policy_env::{start_with_strict_target, strict_deployment, strict_request};

async fn file_strict(env: &TestEnv, persona: &str, name: &str) -> (String, String) {
    let (status, body) = env
        .post(
            persona,
            "/api/v1/requests",
            strict_request(&strict_deployment(name)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["digest"].as_str().expect("digest").to_owned(),
    )
}

/// Who counted for which group, as the API reports it.
fn counted(request: &Value) -> Vec<(String, Vec<String>)> {
    request["approval"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["group"].as_str().expect("group").to_owned(),
                r["counted"]
                    .as_array()
                    .expect("counted")
                    .iter()
                    .map(|c| c.as_str().expect("name").to_owned())
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn policy_needs_one_from_each_group_and_a_person_in_both_counts_once() {
    let env = start_with_strict_target().await;
    let (id, digest) = file_strict(&env, "alice", "both-groups").await;

    // Erin is in both groups: her approval fills one of them, not both.
    let (status, body) = env.approve("erin", &id, &digest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["state"], "pending",
        "one person cannot satisfy two groups"
    );
    let (_, request) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    let slots: usize = counted(&request).iter().map(|(_, c)| c.len()).sum();
    assert_eq!(slots, 1, "erin counts once: {request}");
    assert_eq!(request["approval"]["satisfied"], false);

    // Bob is only in approvers; erin moves to oncall, and both rules are met.
    let (status, body) = env.approve("bob", &id, &digest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let request = env.wait_for_state(&id, "active").await;
    let mut rules = counted(&request);
    rules.sort();
    assert_eq!(
        rules,
        vec![
            ("approvers".to_owned(), vec!["bob".to_owned()]),
            ("oncall".to_owned(), vec!["erin".to_owned()]),
        ]
    );
    assert_eq!(env.env.sim.breakglass_admissions().len(), 1);
}

#[tokio::test]
async fn policy_does_not_count_a_requester_who_is_also_an_approver() {
    let env = start_with_strict_target().await;
    let (id, digest) = file_strict(&env, "erin", "erins-own").await;

    let (status, body) = env.approve("erin", &id, &digest).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Bob fills approvers; oncall still needs someone other than erin.
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    let (_, request) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(request["state"], "pending", "{request}");
    let rules = counted(&request);
    assert!(
        rules.iter().all(|(_, c)| !c.contains(&"erin".to_owned())),
        "{request}"
    );

    // Alice (oncall) is not the requester here, so she counts.
    assert_eq!(env.approve("alice", &id, &digest).await.0, StatusCode::OK);
    env.wait_for_state(&id, "active").await;
}

#[tokio::test]
async fn policy_needs_both_groups_so_two_approvers_from_one_group_are_not_enough() {
    let env = start_with_strict_target().await;
    let (id, digest) = file_strict(&env, "alice", "one-group").await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let (_, request) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(request["state"], "pending", "{request}");
    assert!(env.env.sim.breakglass_admissions().is_empty());
}
