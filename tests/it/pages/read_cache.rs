//! The request page and the API read come from the store's read cache: a decision shows at
//! once on the replica that took it, signing out there ends the session at once, and a form
//! posted after another replica ended the session is refused (posts read the session from the
//! database, never from the cache).

use breakglass_broker::store::Store;
use reqwest::StatusCode;

use super::{csrf_of, location, page, sign_in};
use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// A second store on the dev environment's database: what another replica would write.
async fn another_replica(env: &TestEnv) -> Store {
    Store::connect(&env.env.broker.state.config.database_url)
        .await
        .expect("a second store on the same database")
}

async fn api_read(env: &TestEnv, id: &str) -> serde_json::Value {
    let (status, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn a_decision_shows_on_the_page_and_in_the_api_at_once() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("cached", HOTFIX_IMAGE), 60).await;
    let path = format!("/requests/{id}");
    let bob = sign_in(&env, "bob").await;

    // Both views read (and cached) before the decision.
    let (status, html) = page(&env, &bob, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Approve exactly this"), "{html}");
    assert_eq!(
        api_read(&env, &id).await["approvals"],
        serde_json::json!([])
    );

    let approved = bob
        .post(env.url(&format!("{path}/approve")))
        .form(&[
            ("csrf", csrf_of(&html).await.as_str()),
            ("digest", digest.as_str()),
            ("comment", "looks right to me"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);

    let (_, html) = page(&env, &bob, &path).await;
    assert!(html.contains("looks right to me"), "{html}");
    assert!(!html.contains("Approve exactly this"), "{html}");
    let read = api_read(&env, &id).await;
    assert_eq!(
        read["approvals"][0]["comment"], "looks right to me",
        "{read}"
    );
    assert_eq!(
        read["approval"]["rules"][0]["counted"],
        serde_json::json!(["bob"]),
        "{read}"
    );
}

/// Signs `persona` in as a browser would; returns the session cookie as `name=value`.
async fn session_cookie(env: &TestEnv, persona: &str) -> String {
    let client = super::browser();
    let callback = super::callback_url(env, &client, persona).await;
    let done = client.get(&callback).send().await.expect("callback");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let set = super::set_cookie(&done, "bg_session").expect("a session cookie");
    set.split(';').next().expect("name=value").to_owned()
}

async fn page_with(env: &TestEnv, cookie: &str, path: &str) -> reqwest::Response {
    super::bare()
        .get(env.url(path))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("page")
}

#[tokio::test]
async fn signing_out_ends_the_session_at_once_on_this_replica() {
    let env = TestEnv::start().await;
    let (id, _) = env.file_ok(&deployment("signout", HOTFIX_IMAGE), 60).await;
    let path = format!("/requests/{id}");
    let cookie = session_cookie(&env, "bob").await;
    let shown = page_with(&env, &cookie, &path).await;
    assert_eq!(shown.status(), StatusCode::OK);
    let html = shown.text().await.expect("html");

    let out = super::bare()
        .post(env.url("/auth/logout"))
        .header(reqwest::header::COOKIE, &cookie)
        .form(&[("csrf", csrf_of(&html).await)])
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&out), "/login");

    // The same cookie again, as someone who copied it would send it: no page.
    let again = page_with(&env, &cookie, &path).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&again).starts_with("/login"),
        "{}",
        location(&again)
    );
}

#[tokio::test]
async fn a_form_posted_after_another_replica_ended_the_session_is_refused() {
    let env = TestEnv::start().await;
    let (id, digest) = env
        .file_ok(&deployment("elsewhere", HOTFIX_IMAGE), 60)
        .await;
    let path = format!("/requests/{id}");
    let bob = sign_in(&env, "bob").await;
    let (status, html) = page(&env, &bob, &path).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&html).await;

    // bob signs out on another replica: his session row goes; this replica may still have it
    // in its read cache for pages.
    let other = another_replica(&env).await;
    let gone = sqlx::query("DELETE FROM sessions WHERE subject = 'bob'")
        .execute(other.pool())
        .await
        .expect("delete");
    assert_eq!(gone.rows_affected(), 1);

    let refused = bob
        .post(env.url(&format!("{path}/approve")))
        .form(&[
            ("csrf", csrf.as_str()),
            ("digest", digest.as_str()),
            ("comment", "too late"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&refused).starts_with("/login"),
        "{}",
        location(&refused)
    );
    let read = api_read(&env, &id).await;
    assert_eq!(read["state"], "pending", "{read}");
    assert_eq!(read["approvals"], serde_json::json!([]), "{read}");
    other.pool().close().await;
}
