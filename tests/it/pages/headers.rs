//! The security headers on every kind of response the broker (and the dev issuer) gives.

use breakglass_broker::app;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{browser, csrf_of, location, page, sign_in};
use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// The broker's own router, served alone as production serves it (dev mode wraps it together
/// with the dev issuer, which must not be what puts the headers there).
async fn broker_alone(env: &TestEnv) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let router = env.env.broker.router();
    tokio::spawn(async move { app::serve(listener, router).await });
    base
}

/// What is wrong with `response`'s security headers, if anything, or with its status.
fn problems(what: &str, expected: StatusCode, response: &reqwest::Response) -> Vec<String> {
    let mut found = Vec::new();
    if response.status() != expected {
        found.push(format!(
            "{what}: status {} (expected {expected}, so not the response meant)",
            response.status()
        ));
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match header("content-security-policy") {
        Some(csp)
            if csp.contains("frame-ancestors 'none'")
                && csp.contains("default-src 'none'")
                && !csp.contains("unsafe-inline") => {}
        other => found.push(format!("{what}: content-security-policy {other:?}")),
    }
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        if header(name).as_deref() != Some(value) {
            found.push(format!("{what}: {name} {:?}", header(name)));
        }
    }
    found
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() {
    let env = TestEnv::start().await;
    let alone = broker_alone(&env).await;
    let alice = sign_in(&env, "alice").await;
    let mallory = sign_in(&env, "mallory").await;
    let alice_token = env.token("alice").await;
    let mallory_token = env.token("mallory").await;
    let csrf = csrf_of(&page(&env, &alice, "/requests/new").await.1).await;
    let filing = json!({
        "target": "dev-cluster", "namespace": "prod", "manifest": deployment("x", HOTFIX_IMAGE),
        "ticket": "INC-1", "justification": "checkout is down", "duration_minutes": 30
    });
    let huge = json!({ "manifest": "x".repeat(2 * 1024 * 1024) });

    let mut found = Vec::new();
    // The broker's responses, served alone and inside dev mode.
    for (n, base) in [alone.as_str(), env.env.base_url.as_str()]
        .into_iter()
        .enumerate()
    {
        // A pending request to show, and for its requester to cancel.
        let (id, _) = env
            .file_ok(&deployment(&format!("headers-{n}"), HOTFIX_IMAGE), 60)
            .await;
        let url = |path: &str| format!("{base}{path}");
        let anonymous = browser();
        let cases: Vec<(&str, StatusCode, reqwest::RequestBuilder)> = vec![
            ("sign-in page", StatusCode::OK, anonymous.get(url("/login"))),
            (
                "redirect to sign in",
                StatusCode::SEE_OTHER,
                anonymous.get(url("/requests/new")),
            ),
            (
                "redirect to the issuer",
                StatusCode::SEE_OTHER,
                anonymous.get(url("/auth/login?next=/")),
            ),
            ("dashboard", StatusCode::OK, alice.get(url("/"))),
            ("form", StatusCode::OK, alice.get(url("/requests/new"))),
            (
                "request page",
                StatusCode::OK,
                alice.get(url(&format!("/requests/{id}"))),
            ),
            (
                "audit page (403)",
                StatusCode::FORBIDDEN,
                alice.get(url("/audit")),
            ),
            (
                "error page 403",
                StatusCode::FORBIDDEN,
                mallory.get(url("/requests/new")),
            ),
            (
                "error page 404",
                StatusCode::NOT_FOUND,
                alice.get(url("/requests/no-such-request")),
            ),
            (
                "error page 400",
                StatusCode::BAD_REQUEST,
                anonymous.get(url("/auth/callback?code=x&state=y")),
            ),
            (
                "error page on a refused form",
                StatusCode::FORBIDDEN,
                alice
                    .post(url("/requests/new"))
                    .form(&[("csrf", "not-the-token")]),
            ),
            (
                "redirect after a form",
                StatusCode::SEE_OTHER,
                alice
                    .post(url(&format!("/requests/{id}/cancel")))
                    .form(&[("csrf", csrf.as_str())]),
            ),
            (
                "static file",
                StatusCode::OK,
                anonymous.get(url("/static/app.css")),
            ),
            ("health", StatusCode::OK, anonymous.get(url("/healthz"))),
            (
                "API JSON",
                StatusCode::OK,
                anonymous
                    .get(url("/api/v1/requests"))
                    .bearer_auth(&alice_token),
            ),
            (
                "API 401",
                StatusCode::UNAUTHORIZED,
                anonymous.get(url("/api/v1/requests")),
            ),
            (
                "API 403",
                StatusCode::FORBIDDEN,
                anonymous
                    .post(url("/api/v1/requests"))
                    .bearer_auth(&mallory_token)
                    .json(&filing),
            ),
            (
                "API 404",
                StatusCode::NOT_FOUND,
                anonymous
                    .get(url("/api/v1/requests/no-such-request"))
                    .bearer_auth(&alice_token),
            ),
            (
                "API 413",
                StatusCode::PAYLOAD_TOO_LARGE,
                anonymous
                    .post(url("/api/v1/requests"))
                    .bearer_auth(&alice_token)
                    .json(&huge),
            ),
            (
                "unknown path",
                StatusCode::NOT_FOUND,
                anonymous.request(Method::GET, url("/no/such/path")),
            ),
        ];
        for (what, expected, request) in cases {
            let response = request.send().await.expect("answers");
            found.extend(problems(&format!("{base} {what}"), expected, &response));
        }
    }

    // The dev issuer's pages, served beside the broker in dev mode.
    let client = browser();
    let start = client
        .get(env.url("/auth/login?next=/"))
        .send()
        .await
        .expect("start");
    let authorize = location(&start);
    let issuer = &env.env.issuer;
    let cases: Vec<(&str, StatusCode, reqwest::RequestBuilder)> = vec![
        (
            "issuer discovery",
            StatusCode::OK,
            client.get(format!("{issuer}/.well-known/openid-configuration")),
        ),
        (
            "issuer keys",
            StatusCode::OK,
            client.get(format!("{issuer}/jwks")),
        ),
        (
            "issuer sign-in page",
            StatusCode::OK,
            client.get(&authorize),
        ),
        (
            "issuer refusal",
            StatusCode::BAD_REQUEST,
            client.get(format!("{issuer}/authorize?response_type=token")),
        ),
        (
            "issuer unknown persona",
            StatusCode::NOT_FOUND,
            client.get(format!("{issuer}/token?persona=nobody")),
        ),
        (
            "dev mode's refusal of a name other than loopback",
            StatusCode::MISDIRECTED_REQUEST,
            client
                .get(env.url("/healthz"))
                .header("host", "attacker.example"),
        ),
    ];
    for (what, expected, request) in cases {
        let response = request.send().await.expect("answers");
        found.extend(problems(what, expected, &response));
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
