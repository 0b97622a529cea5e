//! People are (issuer, subject): two people who call themselves the same are two people in
//! every record, and a decision from the browser rests on a recent sign-in with the groups the
//! provider gives now.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::ObjectKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    bare, browser, callback_url, choose_persona, csrf_of, location, page, set_cookie, sign_in,
};
use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// The subjects of two different people whose provider calls them both `bob`.
const FIRST_BOB: &str = "bob-1111-aaaa";
const SECOND_BOB: &str = "bob-2222-bbbb";

/// Approves `id` through the API as the dev persona `persona`, under another subject and name.
async fn approve_as(env: &TestEnv, knobs: &str, id: &str, digest: &str) {
    let token = env.token_with(knobs).await;
    let (status, body) = env
        .call(
            reqwest::Method::POST,
            Some(&token),
            &format!("/api/v1/requests/{id}/approve"),
            Some(json!({ "digest": digest, "comment": "ok" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{knobs}: {body}");
}

/// The audit events about a request, oldest first, as an auditor reads them.
async fn audit_of(env: &TestEnv, id: &str) -> Vec<Value> {
    let (status, body) = env
        .get("dave", &format!("/api/v1/audit?request={id}&limit=100"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut events = body.as_array().expect("events").clone();
    events.reverse();
    events
}

#[tokio::test]
async fn two_people_with_one_name_are_two_people_in_every_record() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("twins", HOTFIX_IMAGE), 30).await;
    approve_as(
        &env,
        &format!("persona=bob&subject={FIRST_BOB}"),
        &id,
        &digest,
    )
    .await;
    approve_as(
        &env,
        &format!("persona=bob&subject={SECOND_BOB}"),
        &id,
        &digest,
    )
    .await;
    let active = env.wait_for_state(&id, "active").await;

    // The API: one name, two people.
    let (_, request) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    let approvals = request["approvals"].as_array().expect("approvals");
    let people: Vec<(&str, &str, &str)> = approvals
        .iter()
        .map(|a| {
            (
                a["approver"].as_str().unwrap_or_default(),
                a["approver_subject"].as_str().unwrap_or_default(),
                a["approver_issuer"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let issuer = env.env.issuer.as_str();
    assert_eq!(
        people,
        [("bob", FIRST_BOB, issuer), ("bob", SECOND_BOB, issuer)],
        "{request}"
    );
    assert_eq!(active["requester_subject"], "alice");
    assert_eq!(active["requester_issuer"], issuer);

    // The audit history: each approval names its person, inside the hash chain.
    let events = audit_of(&env, &id).await;
    let approvers: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["action"] == "request.approved")
        .map(|e| {
            (
                e["actor_subject"].as_str().unwrap_or_default(),
                e["actor_issuer"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(approvers, [(FIRST_BOB, issuer), (SECOND_BOB, issuer)]);
    let (status, verified) = env
        .post("dave", "/api/v1/audit/verification", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    assert_eq!(verified["intact"], true, "{verified}");
    let (_, by_subject) = env
        .get("dave", &format!("/api/v1/audit?subject={SECOND_BOB}"))
        .await;
    let found: Vec<&Value> = by_subject
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["actor_subject"] == SECOND_BOB)
        .collect();
    assert_eq!(
        found.len(),
        by_subject.as_array().map_or(0, Vec::len),
        "only the second bob's events: {by_subject}"
    );
    assert!(
        found.iter().any(|e| e["action"] == "request.approved"),
        "{by_subject}"
    );

    // The stamp on the object in the cluster tells them apart.
    let applied = env
        .env
        .sim
        .object(&ObjectKey::new("apps/v1", "Deployment", "prod", "twins"))
        .expect("applied");
    assert_eq!(
        applied["metadata"]["annotations"]["breakglass-broker.io/approvers"],
        "bob (bob-1111…),bob (bob-2222…)"
    );

    // So does the request page, in its decisions and its timeline.
    let alice = sign_in(&env, "alice").await;
    let (status, html) = page(&env, &alice, &format!("/requests/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<strong>bob (bob-1111…)</strong>")
            && html.contains("<strong>bob (bob-2222…)</strong>"),
        "{html}"
    );
}

#[tokio::test]
async fn someone_else_with_the_requesters_name_never_reads_as_the_requester() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("mirror", HOTFIX_IMAGE), 30).await;
    // An approver whose provider lets them call themselves alice.
    approve_as(
        &env,
        "persona=bob&username=alice&subject=alice-lookalike",
        &id,
        &digest,
    )
    .await;

    let events = audit_of(&env, &id).await;
    let approval = events
        .iter()
        .find(|e| e["action"] == "request.approved")
        .expect("the approval");
    assert_eq!(approval["actor"], "alice");
    assert_eq!(approval["actor_subject"], "alice-lookalike");
    let filing = events
        .iter()
        .find(|e| e["action"] == "request.created")
        .expect("the filing");
    assert_eq!(filing["actor_subject"], "alice");

    let (_, request) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(
        request["approval"]["rules"][0]["counted"],
        json!(["alice (alice-lo…)"]),
        "the tally never reads as alice approving her own request: {request}"
    );

    let carol = sign_in(&env, "carol").await;
    let (_, html) = page(&env, &carol, &format!("/requests/{id}")).await;
    assert!(
        html.contains("alice (alice)") && html.contains("alice (alice-lo…)"),
        "the page tells the requester and the lookalike apart: {html}"
    );
}

/// Sends the approve form of request `id` as `client`, with `comment`.
async fn approve_form(
    env: &TestEnv,
    client: &reqwest::Client,
    id: &str,
    digest: &str,
    comment: &str,
) -> reqwest::Response {
    let html = page(env, client, &format!("/requests/{id}")).await.1;
    let csrf = csrf_of(&html).await;
    client
        .post(env.url(&format!("/requests/{id}/approve")))
        .form(&[
            ("csrf", csrf.as_str()),
            ("digest", digest),
            ("comment", comment),
        ])
        .send()
        .await
        .expect("post")
}

/// Follows a decision sent back through sign-in: to the provider (asking for a fresh
/// authentication), where `persona` is chosen, and back; returns where the broker then sends
/// the browser.
async fn sign_in_again(
    env: &TestEnv,
    client: &reqwest::Client,
    sent_back: &reqwest::Response,
    persona: &str,
) -> String {
    assert_eq!(sent_back.status(), StatusCode::SEE_OTHER);
    let start = location(sent_back);
    assert!(start.starts_with("/auth/login?fresh=1&next="), "{start}");
    let to_provider = client.get(env.url(&start)).send().await.expect("start");
    let authorize = url::Url::parse(&location(&to_provider)).expect("authorize URL");
    assert!(
        authorize
            .query_pairs()
            .any(|(k, v)| k == "max_age" && v == "900"),
        "the provider is asked for an authentication within decision_max_age: {authorize}"
    );
    let callback = choose_persona(env, client, &authorize, persona).await;
    let back = client.get(&callback).send().await.expect("callback");
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    location(&back)
}

async fn approvals_of(env: &TestEnv, id: &str) -> usize {
    let (_, request) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    request["approvals"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn an_old_sign_in_approves_only_after_signing_in_again_and_lands_on_the_same_form() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("fresh", HOTFIX_IMAGE), 30).await;
    let bob = sign_in(&env, "bob").await;
    env.clock.advance(Duration::from_secs(16 * 60));

    let sent_back = approve_form(&env, &bob, &id, &digest, "matches INC-4242").await;
    assert_eq!(
        approvals_of(&env, &id).await,
        0,
        "an old sign-in decides nothing"
    );
    let landed = sign_in_again(&env, &bob, &sent_back, "bob").await;
    assert!(
        landed.starts_with(&format!("/requests/{id}?resume=approve&comment=matches")),
        "{landed}"
    );
    let (_, html) = page(&env, &bob, &landed).await;
    assert!(html.contains("You signed in again"), "{html}");
    assert!(
        html.contains(">matches INC-4242</textarea>"),
        "the comment is back in its form: {html}"
    );

    let sent = approve_form(&env, &bob, &id, &digest, "matches INC-4242").await;
    assert_eq!(sent.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&sent), format!("/requests/{id}"));
    assert_eq!(approvals_of(&env, &id).await, 1, "a fresh sign-in decides");
}

#[tokio::test]
async fn an_approver_removed_from_the_group_cannot_approve_after_signing_in_again() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("revoked", HOTFIX_IMAGE), 30).await;
    let carol = sign_in(&env, "carol").await;
    // At the provider, carol leaves the approvers; her session still says she is one.
    assert!(env.env.idp.set_groups("carol", Vec::new()));
    env.clock.advance(Duration::from_secs(16 * 60));

    let sent_back = approve_form(&env, &carol, &id, &digest, "ok").await;
    let landed = sign_in_again(&env, &carol, &sent_back, "carol").await;
    assert_eq!(approvals_of(&env, &id).await, 0);
    let (status, html) = page(&env, &carol, &landed).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the new sign-in's groups count: she no longer even sees the request: {html}"
    );
    assert!(!html.contains("Approve exactly this"), "{html}");
    let csrf = csrf_of(&page(&env, &carol, "/").await.1).await;
    let refused = carol
        .post(env.url(&format!("/requests/{id}/approve")))
        .form(&[("csrf", csrf.as_str()), ("digest", digest.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        approvals_of(&env, &id).await,
        0,
        "her approval never counts"
    );
}

#[tokio::test]
async fn a_recent_sign_in_decides_at_once_and_the_old_session_ends_at_a_new_sign_in() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("recent", HOTFIX_IMAGE), 30).await;
    let bob = browser();
    let first = bob
        .get(callback_url(&env, &bob, "bob").await)
        .send()
        .await
        .expect("callback");
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let old = set_cookie(&first, "bg_session").expect("a session");
    let old = old.split(';').next().expect("name=value").to_owned();
    env.clock.advance(Duration::from_secs(14 * 60));
    let sent = approve_form(&env, &bob, &id, &digest, "").await;
    assert_eq!(location(&sent), format!("/requests/{id}"));
    assert_eq!(approvals_of(&env, &id).await, 1);

    // Signing in again in this browser ends the session it had.
    let again = bob
        .get(callback_url(&env, &bob, "bob").await)
        .send()
        .await
        .expect("callback");
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let with_old = bare()
        .get(env.url("/"))
        .header(reqwest::header::COOKIE, &old)
        .send()
        .await
        .expect("dashboard");
    assert_eq!(
        with_old.status(),
        StatusCode::SEE_OTHER,
        "the old session is gone"
    );
    let with_new = page(&env, &bob, "/").await;
    assert_eq!(with_new.0, StatusCode::OK);
}

/// A sign-in gate: the dev broker's configuration, letting in only `example.com` people.
#[tokio::test]
async fn someone_the_broker_does_not_let_in_gets_a_clear_page_and_no_session() {
    let env = TestEnv::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut config = (*env.env.broker.state.config).clone();
    config.listen = addr;
    config.public_url = format!("http://{addr}").parse().expect("url");
    config.database_url = format!(
        "sqlite://{}?mode=rwc",
        env.dir.path().join("gate.db").display()
    );
    config.oidc.required_groups = vec!["oncall".into()];
    let broker = breakglass_broker::app::Broker::build(config, env.clock.clone())
        .await
        .expect("broker builds");
    let router = broker.router();
    tokio::spawn(async move { breakglass_broker::app::serve(listener, router).await });

    let client = browser();
    let start = client
        .get(format!("http://{addr}/auth/login?next=/"))
        .send()
        .await
        .expect("start");
    let authorize = url::Url::parse(&location(&start)).expect("authorize URL");
    let callback = choose_persona(&env, &client, &authorize, "mallory").await;
    let refused = client.get(&callback).send().await.expect("callback");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap_or_default().starts_with("bg_session=")),
        "no session"
    );
    let html = refused.text().await.expect("html");
    assert!(html.contains("lets in only members of oncall"), "{html}");
    let dashboard = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(
        dashboard.status(),
        StatusCode::SEE_OTHER,
        "still signed out"
    );
}
