//! The pages over real HTTP with a cookie-keeping client: sign-in through the dev issuer,
//! sessions, CSRF, and escaping.

mod alerts;
mod attention;
mod cookies;
mod headers;
mod images;
mod notices;
mod people;
mod read_cache;
mod rendering;
mod request_page;
mod timeline;

use breakglass_broker::dev::idp::Misbehaviour;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// A browser-like client: keeps cookies, does not follow redirects (so each step is checked).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A client that keeps no cookies: it sends only the `Cookie` header a test gives it.
fn bare() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The `Set-Cookie` header of `response` that sets cookie `name`, if there is one.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The attributes of a `Set-Cookie` header after its `name=value`, trimmed.
fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .collect()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("a redirect")
        .to_owned()
}

/// Follows the broker's sign-in to the dev issuer, picks `persona`, and stops at the callback.
async fn callback_url(env: &TestEnv, client: &reqwest::Client, persona: &str) -> String {
    let start = client
        .get(env.url("/auth/login?next=/"))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let authorize = url::Url::parse(&location(&start)).expect("authorize URL");
    choose_persona(env, client, &authorize, persona).await
}

/// On the dev issuer's sign-in page at `authorize`, picks `persona`; returns the callback URL
/// the issuer sends the browser back to.
async fn choose_persona(
    env: &TestEnv,
    client: &reqwest::Client,
    authorize: &url::Url,
    persona: &str,
) -> String {
    let page = client
        .get(authorize.clone())
        .send()
        .await
        .expect("sign-in page");
    let html = page.text().await.expect("html");
    assert!(
        html.contains(&format!(">{persona}</button>")),
        "persona buttons: {html}"
    );
    let mut form: Vec<(String, String)> = authorize
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("persona".into(), persona.into()));
    let chosen = client
        .post(format!("{}/authorize", env.env.issuer))
        .form(&form)
        .send()
        .await
        .expect("choose");
    assert_eq!(chosen.status(), StatusCode::SEE_OTHER);
    location(&chosen)
}

async fn sign_in(env: &TestEnv, persona: &str) -> reqwest::Client {
    let client = browser();
    let callback = callback_url(env, &client, persona).await;
    let done = client.get(&callback).send().await.expect("callback");
    assert_eq!(
        done.status(),
        StatusCode::SEE_OTHER,
        "{}",
        done.text().await.unwrap_or_default()
    );
    client
}

async fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}

/// GETs a page as `client` and returns its status and HTML.
async fn page(env: &TestEnv, client: &reqwest::Client, path: &str) -> (StatusCode, String) {
    let response = client.get(env.url(path)).send().await.expect("page");
    (response.status(), response.text().await.expect("html"))
}

/// Fills in and submits the new-request form as a signed-in browser would.
async fn post_form(
    env: &TestEnv,
    client: &reqwest::Client,
    ticket: &str,
    manifest: &str,
) -> reqwest::Response {
    let html = page(env, client, "/requests/new").await.1;
    let csrf = csrf_of(&html).await;
    client
        .post(env.url("/requests/new"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("target", "dev-cluster"),
            ("namespace", "prod"),
            ("ticket", ticket),
            ("justification", "the checkout service is down"),
            ("duration_minutes", "30"),
            ("manifest", manifest),
            ("intent", "submit"),
        ])
        .send()
        .await
        .expect("post")
}

#[tokio::test]
async fn signing_in_sets_a_fresh_http_only_session_and_signing_out_ends_it() {
    let env = TestEnv::start().await;
    let client = browser();
    let callback = callback_url(&env, &client, "alice").await;
    let done = client.get(&callback).send().await.expect("callback");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let cookie = done
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("bg_session="))
        .expect("session cookie")
        .to_owned();
    let attrs = attributes(&cookie);
    assert!(
        attrs.iter().any(|a| a == "HttpOnly") && attrs.iter().any(|a| a == "SameSite=Lax"),
        "{cookie}"
    );
    // Served over plain http: a `Secure` cookie would never come back.
    assert!(!attrs.iter().any(|a| a == "Secure"), "{cookie}");

    let dashboard = client.get(env.url("/")).send().await.expect("dashboard");
    assert_eq!(dashboard.status(), StatusCode::OK);
    let html = dashboard.text().await.expect("html");
    assert!(
        html.contains("alice") && html.contains("New breakglass request"),
        "{html}"
    );

    // Every sign-in gets a new session id.
    let client2 = browser();
    let second = client2
        .get(callback_url(&env, &client2, "alice").await)
        .send()
        .await
        .expect("callback");
    let cookie2 = second
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("bg_session="))
        .expect("session cookie")
        .to_owned();
    assert_ne!(cookie.split(';').next(), cookie2.split(';').next());

    // The session cookie, kept aside, works from another browser while the session lasts.
    let kept = cookie.split(';').next().expect("name=value").to_owned();
    let elsewhere = bare()
        .get(env.url("/"))
        .header(COOKIE, &kept)
        .send()
        .await
        .expect("dashboard");
    assert_eq!(
        elsewhere.status(),
        StatusCode::OK,
        "the kept cookie is a session"
    );

    let csrf = csrf_of(&html).await;
    let out = client
        .post(env.url("/auth/logout"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&out), "/login");
    let cleared = set_cookie(&out, "bg_session").expect("sign-out sets the session cookie");
    assert!(
        cleared.starts_with("bg_session=;"),
        "the cookie is emptied: {cleared}"
    );
    let attrs = attributes(&cleared);
    assert!(
        attrs.iter().any(|a| a == "Max-Age=0") && attrs.iter().any(|a| a == "Path=/"),
        "the cookie is expired on the path it was set on: {cleared}"
    );

    let after = client.get(env.url("/")).send().await.expect("after");
    assert_eq!(
        after.status(),
        StatusCode::SEE_OTHER,
        "signed out: sent to sign in"
    );
    assert!(location(&after).starts_with("/login"));

    // The kept cookie no longer names a session on the server, whoever presents it.
    let replayed = bare()
        .get(env.url("/"))
        .header(COOKIE, &kept)
        .send()
        .await
        .expect("dashboard");
    assert_eq!(
        replayed.status(),
        StatusCode::SEE_OTHER,
        "the old session cookie still works after sign-out"
    );
    assert!(location(&replayed).starts_with("/login"));
    // The other sign-in's session is its own and still works.
    let (status, _) = page(&env, &client2, "/").await;
    assert_eq!(status, StatusCode::OK, "only the signed-out session ended");
}

#[tokio::test]
async fn pages_need_a_session_and_send_people_to_sign_in() {
    let env = TestEnv::start().await;
    let response = browser()
        .get(env.url("/requests/new"))
        .send()
        .await
        .expect("page");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login?next=%2Frequests%2Fnew");
}

#[tokio::test]
async fn a_form_post_without_or_with_a_wrong_csrf_token_is_refused() {
    let env = TestEnv::start().await;
    let client = sign_in(&env, "alice").await;
    // A request the broker accepts: only the token stands between these posts and a filing.
    let manifest = deployment("csrf-guarded", HOTFIX_IMAGE);
    let fields = [
        ("target", "dev-cluster"),
        ("namespace", "prod"),
        ("ticket", "INC-1"),
        ("justification", "the checkout service is down"),
        ("duration_minutes", "30"),
        ("manifest", manifest.as_str()),
    ];
    let none = client
        .post(env.url("/requests/new"))
        .form(&fields)
        .send()
        .await
        .expect("post");
    assert_eq!(none.status(), StatusCode::FORBIDDEN);
    let mut wrong = fields.to_vec();
    wrong.push(("csrf", "not-the-token"));
    let wrong = client
        .post(env.url("/requests/new"))
        .form(&wrong)
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(wrong.text().await.expect("html").contains("security token"));
    let (_, listed) = env.get("dave", "/api/v1/requests").await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "nothing was filed: {listed}"
    );

    // The same form with the session's token is filed.
    let csrf = csrf_of(&page(&env, &client, "/requests/new").await.1).await;
    let mut right = fields.to_vec();
    right.push(("csrf", csrf.as_str()));
    let filed = client
        .post(env.url("/requests/new"))
        .form(&right)
        .send()
        .await
        .expect("post");
    assert_eq!(filed.status(), StatusCode::SEE_OTHER);
    let (_, listed) = env.get("dave", "/api/v1/requests").await;
    let listed = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["ticket"], "INC-1");
}

#[tokio::test]
async fn a_callback_with_a_wrong_state_or_a_replayed_code_gets_a_clear_error_page() {
    let env = TestEnv::start().await;
    let client = browser();
    let callback = callback_url(&env, &client, "bob").await;
    let mut forged = url::Url::parse(&callback).expect("url");
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    forged.query_pairs_mut().clear();
    for (k, v) in &pairs {
        forged
            .query_pairs_mut()
            .append_pair(k, if k == "state" { "forged-state" } else { v });
    }
    let wrong_state = client.get(forged).send().await.expect("callback");
    assert_eq!(wrong_state.status(), StatusCode::BAD_REQUEST);
    assert!(
        wrong_state
            .text()
            .await
            .expect("html")
            .contains("start again from the sign-in page")
    );

    // The real callback works once; the same URL again is refused.
    assert_eq!(
        client
            .get(&callback)
            .send()
            .await
            .expect("callback")
            .status(),
        StatusCode::SEE_OTHER
    );
    let replay = client.get(&callback).send().await.expect("replay");
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);

    // A used code under a fresh, valid state: the provider refuses it, and so do we.
    let code = url::Url::parse(&callback)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned();
    let fresh = url::Url::parse(&callback_url(&env, &client, "bob").await).expect("url");
    let state = fresh
        .query_pairs()
        .find(|(k, _)| k == "state")
        .expect("state")
        .1
        .into_owned();
    let replayed = client
        .get(env.url(&format!("/auth/callback?code={code}&state={state}")))
        .send()
        .await
        .expect("replayed code");
    assert_eq!(replayed.status(), StatusCode::FORBIDDEN);
    assert!(
        replayed
            .text()
            .await
            .expect("html")
            .contains("sign-in failed")
    );
}

#[tokio::test]
async fn a_callback_whose_id_token_carries_the_wrong_nonce_gets_an_error_page_and_no_session() {
    let env = TestEnv::start().await;
    let client = browser();
    let callback = callback_url(&env, &client, "bob").await;
    env.env.idp.misbehave(Some(Misbehaviour::WrongNonce));
    let refused = client.get(&callback).send().await.expect("callback");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        set_cookie(&refused, "bg_session").is_none(),
        "no session cookie"
    );
    let html = refused.text().await.expect("html");
    assert!(
        html.contains("sign-in failed") && html.contains("Invalid nonce"),
        "{html}"
    );
    let (status, _) = page(&env, &client, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "not signed in");

    // The same browser signs in once the provider behaves.
    env.env.idp.misbehave(None);
    let callback = callback_url(&env, &client, "bob").await;
    let done = client.get(&callback).send().await.expect("callback");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&done, "bg_session").is_some());
    let (status, html) = page(&env, &client, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("bob"), "{html}");
}

#[tokio::test]
async fn script_payloads_in_justification_and_ticket_come_back_inert() {
    let env = TestEnv::start().await;
    let payload = "<script>alert('x')</script> checkout down";
    let (status, filed) = env
        .post(
            "alice",
            "/api/v1/requests",
            serde_json::json!({
                "target": "dev-cluster", "namespace": "prod", "manifest": deployment("xss", HOTFIX_IMAGE),
                "ticket": "INC-7", "justification": payload, "duration_minutes": 30
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    let client = sign_in(&env, "bob").await;
    let html = client
        .get(env.url(&format!("/requests/{}", filed["id"].as_str().expect("id"))))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(!html.contains("<script>alert"), "raw script in page");
    assert!(
        html.contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;"),
        "escaped as text: {html}"
    );

    // A ticket payload is refused by the ticket pattern and echoed back escaped.
    let alice = sign_in(&env, "alice").await;
    let manifest = deployment("xss2", HOTFIX_IMAGE);
    let response = post_form(&env, &alice, "\"><script>alert(1)</script>", &manifest).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await.expect("html");
    assert!(!html.contains("<script>alert(1)"), "raw script in page");
    assert!(html.contains("does not match the ticket pattern"), "{html}");
}

#[tokio::test]
async fn filing_from_the_form_lands_on_the_request_page_and_errors_sit_beside_their_fields() {
    let env = TestEnv::start().await;
    let alice = sign_in(&env, "alice").await;
    let bad = post_form(
        &env,
        &alice,
        "INC-9",
        "apiVersion: apps/v1\nkind: Deployment\n  metadata: [\n",
    )
    .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = bad.text().await.expect("html");
    assert!(
        html.contains("id=\"manifest-errors\"") && html.contains("line"),
        "{html}"
    );

    let good = post_form(&env, &alice, "INC-9", &deployment("formed", HOTFIX_IMAGE)).await;
    assert_eq!(good.status(), StatusCode::SEE_OTHER);
    let target = location(&good);
    assert!(target.starts_with("/requests/"));
    let shown = alice.get(env.url(&target)).send().await.expect("page");
    assert_eq!(shown.status(), StatusCode::OK);
    let html = shown.text().await.expect("html");
    assert!(
        html.contains("Waiting for approval") && html.contains("INC-9"),
        "{html}"
    );
}

#[tokio::test]
async fn someone_without_a_role_sees_no_form_and_cannot_open_others_requests() {
    let env = TestEnv::start().await;
    let (id, _) = env.file_ok(&deployment("private", HOTFIX_IMAGE), 60).await;
    let mallory = sign_in(&env, "mallory").await;
    let dashboard = page(&env, &mallory, "/").await.1;
    assert!(!dashboard.contains("New breakglass request"));
    assert_eq!(
        page(&env, &mallory, "/requests/new").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        page(&env, &mallory, &format!("/requests/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        page(&env, &mallory, "/audit").await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_audit_page_says_how_far_the_history_is_verified() {
    let env = TestEnv::start().await;
    env.file_ok(&deployment("verified", HOTFIX_IMAGE), 60).await;
    let dave = sign_in(&env, "dave").await;
    let before = page(&env, &dave, "/audit").await.1;
    assert!(before.contains("has not been verified yet"), "{before}");
    let (status, body) = env
        .post("dave", "/api/v1/audit/verification", serde_json::json!({}))
        .await;
    assert!(status.is_success(), "{status}: {body}");
    let after = page(&env, &dave, "/audit").await.1;
    assert!(
        after.contains("History verified intact through event #1"),
        "{after}"
    );
}

#[tokio::test]
async fn the_ticket_page_lists_every_request_under_it_for_those_who_may_see_them() {
    let env = TestEnv::start().await;
    let (first, _) = env.file_ok(&deployment("one", HOTFIX_IMAGE), 60).await;
    let (second, _) = env.file_ok(&deployment("two", HOTFIX_IMAGE), 60).await;
    let dave = sign_in(&env, "dave").await;
    let (status, html) = page(&env, &dave, "/tickets/INC-4242").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&first) && html.contains(&second), "{html}");
    assert!(html.contains("request.created"));
    let mallory = sign_in(&env, "mallory").await;
    assert_eq!(
        page(&env, &mallory, "/tickets/INC-4242").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_flood_of_anonymous_sign_in_starts_stores_nothing_and_pushes_no_sign_in_out() {
    let env = TestEnv::start().await;
    // alice is on her way through the provider when the flood starts.
    let alice = browser();
    let callback = callback_url(&env, &alice, "alice").await;
    let flood = bare();
    for _ in 0..3000 {
        let response = flood
            .get(env.url(&format!("/auth/login?next=/{}", "x".repeat(1500))))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM login_attempts")
        .fetch_one(env.env.broker.state.store.pool())
        .await
        .expect("count");
    assert_eq!(stored, 0, "nothing is stored before the provider answers");
    // Her sign-in completes after it.
    let done = alice.get(&callback).send().await.expect("callback");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let (status, _) = page(&env, &alice, "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_session_ends_after_session_max_age_and_sends_its_browser_to_sign_in_again() {
    let env = TestEnv::start().await;
    let alice = sign_in(&env, "alice").await;
    assert_eq!(page(&env, &alice, "/").await.0, StatusCode::OK);
    env.clock
        .advance(std::time::Duration::from_secs(8 * 3600 - 60));
    assert_eq!(
        page(&env, &alice, "/").await.0,
        StatusCode::OK,
        "still within 8 h"
    );
    env.clock.advance(std::time::Duration::from_secs(120));
    let ended = alice.get(env.url("/")).send().await.expect("answers");
    assert_eq!(ended.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&ended).starts_with("/login"),
        "{}",
        location(&ended)
    );
}
