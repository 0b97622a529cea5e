//! API bearer tokens the broker must refuse: from another issuer, unsigned (`alg: none`),
//! signed with a key the issuer does not publish, for another audience, expired. Each gets a
//! 401 that says why, on reads and writes alike, and nothing happens.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use breakglass_broker::dev::idp::{CLIENT_ID, DevIdp, TokenSpec};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

/// erin may both file and approve, so one forged token of hers is tried on both.
const PERSONA: &str = "erin";

fn spec() -> TokenSpec<'static> {
    TokenSpec {
        ttl: chrono::Duration::seconds(300),
        ..TokenSpec::new(PERSONA)
    }
}

/// A request of alice's, pending, for forged tokens to try to approve.
async fn pending(env: &TestEnv) -> (String, String) {
    env.file_ok(&deployment("guarded", HOTFIX_IMAGE), 60).await
}

/// Sends `token` to a read, a filing and an approval: each must be a 401 whose error names
/// `why`, with a `WWW-Authenticate: Bearer` challenge. Then checks that nothing changed.
async fn assert_refused_and_nothing_happens(
    env: &TestEnv,
    (id, digest): &(String, String),
    token: &str,
    why: &str,
) {
    let filing = json!({
        "target": "dev-cluster", "namespace": "prod",
        "manifest": deployment("forged", HOTFIX_IMAGE),
        "ticket": "INC-666", "justification": "a forged token at work", "duration_minutes": 30,
    });
    let attempts: [(Method, String, Option<Value>); 3] = [
        (Method::GET, "/api/v1/requests".into(), None),
        (Method::POST, "/api/v1/requests".into(), Some(filing)),
        (
            Method::POST,
            format!("/api/v1/requests/{id}/approve"),
            Some(json!({ "digest": digest, "comment": "forged" })),
        ),
    ];
    for (method, path, body) in attempts {
        let mut request = env
            .http
            .request(method.clone(), env.url(&path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("broker answers");
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{method} {path}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("invalid token: ") && error.contains(why),
            "{method} {path}: the error says why ({why}): {body}"
        );
    }

    let (_, listed) = env.get("dave", "/api/v1/requests").await;
    let listed = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "nothing was filed: {listed:?}");
    let (_, request) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(request["state"], "pending", "{request}");
    assert_eq!(
        request["approvals"].as_array().map(Vec::len),
        Some(0),
        "nothing was approved: {request}"
    );
    assert!(env.env.sim.writes().is_empty());
}

/// erin's genuine token does what the forged ones could not: the refusals were the token's.
async fn genuine_token_works(env: &TestEnv, (id, digest): &(String, String)) {
    let (status, body) = env.approve(PERSONA, id, digest).await;
    assert_eq!(status, StatusCode::OK, "erin's real token works: {body}");
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused_with_401_and_nothing_happens() {
    let env = TestEnv::start().await;
    let request = pending(&env).await;
    // Signed with the issuer's own published key: only the `iss` claim is wrong.
    let token = env
        .env
        .idp
        .token_from(&spec(), "http://127.0.0.1:9/another-issuer")
        .expect("signs")
        .expect("persona");
    assert_refused_and_nothing_happens(&env, &request, &token, "Invalid issuer").await;
    genuine_token_works(&env, &request).await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused_with_401_and_nothing_happens() {
    let env = TestEnv::start().await;
    let request = pending(&env).await;
    // A genuine token's claims, re-sent unsigned under `alg: none`.
    let genuine = env.token(PERSONA).await;
    let claims = genuine.split('.').nth(1).expect("claims");
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{header}.{claims}.");
    assert_refused_and_nothing_happens(&env, &request, &unsigned, "Signature verification failed")
        .await;
    // The same with the genuine signature still attached: `none` is refused, not ignored.
    let signature = genuine.split('.').nth(2).expect("signature");
    let relabelled = format!("{header}.{claims}.{signature}");
    let (status, body) = env
        .call(Method::GET, Some(&relabelled), "/api/v1/requests", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    genuine_token_works(&env, &request).await;
}

#[tokio::test]
async fn a_token_signed_with_a_key_the_issuer_does_not_publish_is_refused_with_401() {
    let env = TestEnv::start().await;
    let request = pending(&env).await;
    // Right issuer, audience and claims; the key is someone else's. Once under the key id the
    // issuer publishes, once under one it does not (which makes the broker refetch the keys).
    for key_id in ["dev-1", "rogue-1"] {
        let impostor = DevIdp::with_key_id(&env.env.issuer, key_id, env.clock.clone())
            .expect("impostor issuer");
        let token = impostor.token(&spec()).expect("signs").expect("persona");
        let claims = token.split('.').nth(1).expect("claims");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("base64")).expect("JSON");
        assert_eq!(claims["iss"], env.env.issuer.as_str());
        assert_eq!(claims["aud"], json!([CLIENT_ID]));
        assert_refused_and_nothing_happens(&env, &request, &token, "Signature verification failed")
            .await;
    }
    genuine_token_works(&env, &request).await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_with_401_and_nothing_happens() {
    let env = TestEnv::start().await;
    let request = pending(&env).await;
    let token = env
        .token_with(&format!("persona={PERSONA}&audience=another-app"))
        .await;
    assert_refused_and_nothing_happens(&env, &request, &token, "Invalid audiences").await;
    genuine_token_works(&env, &request).await;
}

#[tokio::test]
async fn an_expired_token_is_refused_with_401_and_nothing_happens() {
    let env = TestEnv::start().await;
    let request = pending(&env).await;
    let token = env
        .token_with(&format!("persona={PERSONA}&ttl_seconds=-120"))
        .await;
    assert_refused_and_nothing_happens(&env, &request, &token, "Expired").await;
    genuine_token_works(&env, &request).await;
}

#[tokio::test]
async fn a_token_expires_by_the_brokers_clock() {
    let env = TestEnv::start().await;
    let (id, _) = pending(&env).await;
    let token = env
        .token_with(&format!("persona={PERSONA}&ttl_seconds=300"))
        .await;
    let path = format!("/api/v1/requests/{id}");
    let (status, body) = env.call(Method::GET, Some(&token), &path, None).await;
    assert_eq!(status, StatusCode::OK, "valid while it lasts: {body}");
    env.clock.advance(Duration::from_secs(10 * 60));
    let (status, body) = env.call(Method::GET, Some(&token), &path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Expired")),
        "{body}"
    );
}

#[tokio::test]
async fn tokens_for_another_client_from_the_future_or_for_years_are_refused_with_401() {
    let env = TestEnv::start().await;
    let path = "/api/v1/requests";
    let refused = [
        ("azp=another-client", "another client"),
        // Any audience beside ours is refused outright, azp or not.
        ("extra_audience=another-app", "audience"),
        ("extra_audience=another-app&azp=breakglass-dev", "audience"),
        ("iat_offset_seconds=600", "issued in the future"),
        ("nbf_offset_seconds=600", "not valid yet"),
        ("ttl_seconds=315360000", "longer than 24 hours"),
    ];
    for (knob, reason) in refused {
        let token = env.token_with(&format!("persona=erin&{knob}")).await;
        let (status, body) = env
            .call(reqwest::Method::GET, Some(&token), path, None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{knob}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{knob}: {body}"
        );
    }
    // Within the rules: our own client as azp, a clock a little ahead, a day's lifetime.
    let accepted = [
        format!("azp={CLIENT_ID}"),
        "iat_offset_seconds=30".to_owned(),
        "nbf_offset_seconds=30".to_owned(),
        "ttl_seconds=86400".to_owned(),
    ];
    for knob in accepted {
        let token = env.token_with(&format!("persona=erin&{knob}")).await;
        let (status, body) = env
            .call(reqwest::Method::GET, Some(&token), path, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{knob}: {body}");
    }
}

#[tokio::test]
async fn an_email_is_a_name_only_when_the_provider_verified_it() {
    let env = TestEnv::start().await;
    let filed_as = |knobs: &'static str| {
        let env = &env;
        async move {
            let token = env.token_with(&format!("persona=erin&{knobs}")).await;
            let body = crate::common::request_body(
                "prod",
                &deployment(&format!("named-{}", knobs.len()), HOTFIX_IMAGE),
                "INC-1",
                30,
            );
            let (status, answer) = env
                .call(Method::POST, Some(&token), "/api/v1/requests", Some(body))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{knobs}: {answer}");
            answer["requester"].as_str().expect("requester").to_owned()
        }
    };
    assert_eq!(
        filed_as("username=&email=ceo@example.com&email_verified=false").await,
        "erin",
        "an unverified email falls back to the subject"
    );
    assert_eq!(
        filed_as("username=&email=erin@example.com&email_verified=true").await,
        "erin@example.com"
    );
    assert_eq!(
        filed_as("username=erin.o&email=erin@example.com&email_verified=true").await,
        "erin.o",
        "preferred_username comes first"
    );
}

/// The dev broker's configuration served again on its own database, letting in only people of
/// `example.com` who are in `oncall` or `approvers`; returns its base URL.
async fn gated(env: &TestEnv) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut config = (*env.env.broker.state.config).clone();
    config.listen = addr;
    config.database_url = format!(
        "sqlite://{}?mode=rwc",
        env.dir.path().join("gated.db").display()
    );
    config.oidc.allowed_domains = vec!["example.com".into()];
    config.oidc.required_groups = vec!["oncall".into(), "approvers".into()];
    let broker = breakglass_broker::app::Broker::build(config, env.clock.clone())
        .await
        .expect("broker builds");
    let router = broker.router();
    tokio::spawn(async move { breakglass_broker::app::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn only_people_of_the_allowed_domains_and_groups_are_let_in() {
    let env = TestEnv::start().await;
    let base = gated(&env).await;
    let status_of = |persona: &'static str, knobs: &'static str| {
        let env = &env;
        let base = base.clone();
        async move {
            let token = env.token_with(&format!("persona={persona}&{knobs}")).await;
            let response = env
                .http
                .get(format!("{base}/api/v1/requests"))
                .bearer_auth(token)
                .send()
                .await
                .expect("answers");
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        }
    };
    let (status, _) = status_of("erin", "email=erin@example.com&email_verified=true").await;
    assert_eq!(status, StatusCode::OK, "of the domain and in a group");
    for (persona, knobs, why) in [
        (
            "erin",
            "email=erin@evil.example&email_verified=true",
            "example.com",
        ),
        (
            "erin",
            "email=erin@example.com&email_verified=false",
            "example.com",
        ),
        ("erin", "username=erin", "example.com"),
        (
            "mallory",
            "email=mallory@example.com&email_verified=true",
            "oncall, approvers",
        ),
    ] {
        let (status, body) = status_of(persona, knobs).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{persona} {knobs}: {body}");
        assert!(body.contains(why), "{persona} {knobs}: {body}");
    }
}
