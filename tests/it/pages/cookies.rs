//! Cookies when people reach the broker over https: `Secure`, pinned to the host with the
//! `__Host-` prefix, and cleared by signing out.
//!
//! The broker runs with an https `public_url` (as behind a TLS-terminating proxy) while it
//! listens on plain loopback http, so the test speaks http and reads every `Set-Cookie` header
//! itself: a cookie-keeping client would rightly refuse to send `Secure` cookies over http.

use breakglass_broker::app::{self, Broker};
use reqwest::StatusCode;
use reqwest::header::COOKIE;

use super::{attributes, bare, choose_persona, csrf_of, location, set_cookie};
use crate::common::TestEnv;

/// The dev environment's broker configuration served again, on its own database, as if people
/// reached it at `https://ADDR/`. Returns the http base URL it listens on and that https one.
async fn behind_https(env: &TestEnv) -> (String, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut config = (*env.env.broker.state.config).clone();
    config.public_url = format!("https://{addr}/").parse().expect("url");
    config.listen = addr;
    config.database_url = format!(
        "sqlite://{}?mode=rwc",
        env.dir.path().join("https.db").display()
    );
    let broker = Broker::build(config, env.clock.clone())
        .await
        .expect("broker builds");
    assert!(broker.state.secure_cookies);
    let router = broker.router();
    tokio::spawn(async move { app::serve(listener, router).await });
    (format!("http://{addr}"), format!("https://{addr}"))
}

/// A cookie a browser keeps only over https and only for exactly this host: `__Host-` demands
/// `Secure`, `Path=/` and no `Domain`.
fn assert_host_cookie(set_cookie: &str) {
    let attrs = attributes(set_cookie);
    assert!(
        set_cookie.starts_with("__Host-"),
        "no __Host- prefix: {set_cookie}"
    );
    assert!(
        attrs.iter().any(|a| a == "Secure"),
        "not Secure: {set_cookie}"
    );
    assert!(
        attrs.iter().any(|a| a == "Path=/"),
        "not on Path=/: {set_cookie}"
    );
    assert!(
        !attrs.iter().any(|a| a.starts_with("Domain")),
        "has a Domain: {set_cookie}"
    );
}

/// A `Set-Cookie` that makes the browser drop a `__Host-` cookie: empty, expired, and itself
/// `Secure` on `Path=/` (browsers ignore a replacement that is not).
fn assert_clears_host_cookie(set_cookie: &str, name: &str) {
    assert!(
        set_cookie.starts_with(&format!("{name}=;")),
        "emptied: {set_cookie}"
    );
    assert_host_cookie(set_cookie);
    assert!(
        attributes(set_cookie).iter().any(|a| a == "Max-Age=0"),
        "expired: {set_cookie}"
    );
}

fn name_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("name=value").to_owned()
}

#[tokio::test]
async fn behind_https_cookies_are_secure_host_only_and_signing_out_clears_the_session() {
    let env = TestEnv::start().await;
    let (base, public) = behind_https(&env).await;
    let client = bare();

    let start = client
        .get(format!("{base}/auth/login?next=/"))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    assert!(
        set_cookie(&start, "bg_login").is_none(),
        "no unprefixed cookie"
    );
    let login_cookie = set_cookie(&start, "__Host-bg_login").expect("login cookie");
    assert_host_cookie(&login_cookie);
    assert!(
        attributes(&login_cookie).iter().any(|a| a == "HttpOnly"),
        "{login_cookie}"
    );
    let authorize = url::Url::parse(&location(&start)).expect("authorize URL");
    let redirect_uri = authorize
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .expect("redirect_uri")
        .1
        .into_owned();
    assert_eq!(redirect_uri, format!("{public}/auth/callback"));

    // The issuer sends the browser to the https callback; the proxy would hand it on as http.
    let mut callback = url::Url::parse(&choose_persona(&env, &client, &authorize, "alice").await)
        .expect("callback URL");
    assert_eq!(callback.scheme(), "https");
    callback.set_scheme("http").expect("http");
    let done = client
        .get(callback)
        .header(COOKIE, name_value(&login_cookie))
        .send()
        .await
        .expect("callback");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert!(
        set_cookie(&done, "bg_session").is_none(),
        "no unprefixed cookie"
    );
    let session = set_cookie(&done, "__Host-bg_session").expect("session cookie");
    assert_host_cookie(&session);
    let attrs = attributes(&session);
    assert!(
        attrs.iter().any(|a| a == "HttpOnly") && attrs.iter().any(|a| a == "SameSite=Lax"),
        "{session}"
    );
    assert_clears_host_cookie(
        &set_cookie(&done, "__Host-bg_login").expect("login cookie cleared"),
        "__Host-bg_login",
    );

    // The session is read from the `__Host-` cookie and no other name.
    let kept = name_value(&session);
    let dashboard = client
        .get(format!("{base}/"))
        .header(COOKIE, &kept)
        .send()
        .await
        .expect("dashboard");
    assert_eq!(dashboard.status(), StatusCode::OK);
    let html = dashboard.text().await.expect("html");
    assert!(html.contains("alice"), "{html}");
    let value = kept.split_once('=').expect("name=value").1;
    let unprefixed = client
        .get(format!("{base}/"))
        .header(COOKIE, format!("bg_session={value}"))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(unprefixed.status(), StatusCode::SEE_OTHER);

    let out = client
        .post(format!("{base}/auth/logout"))
        .header(COOKIE, &kept)
        .form(&[("csrf", csrf_of(&html).await)])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_clears_host_cookie(
        &set_cookie(&out, "__Host-bg_session").expect("session cookie cleared"),
        "__Host-bg_session",
    );
    let replayed = client
        .get(format!("{base}/"))
        .header(COOKIE, &kept)
        .send()
        .await
        .expect("dashboard");
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER, "session ended");
    assert!(location(&replayed).starts_with("/login"));
}
