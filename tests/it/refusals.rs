//! Each refusal with its status, and nothing applied.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

#[tokio::test]
async fn requester_cannot_approve_own_request() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("own", HOTFIX_IMAGE), 60).await;
    let (status, body) = env.approve("alice", &id, &digest).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("you filed this request")),
        "{body}"
    );
}

#[tokio::test]
async fn requester_who_is_also_an_approver_cannot_approve_own_request() {
    let env = TestEnv::start().await;
    let (status, filed) = env
        .file("erin", &deployment("erins", HOTFIX_IMAGE), 60)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    let id = filed["id"].as_str().expect("id");
    let (status, body) = env
        .approve("erin", id, filed["digest"].as_str().expect("digest"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn an_approver_counts_once() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("twice", HOTFIX_IMAGE), 60).await;
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    let (status, body) = env.approve("bob", &id, &digest).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, request) = env.get("bob", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(request["state"], "pending");
    assert_eq!(request["approvals"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn approval_naming_a_stale_digest_is_refused() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("stale", HOTFIX_IMAGE), 60).await;
    // A well-formed digest that is valid, but for another request: what an approver would
    // send from a tab showing a different (or an earlier) version of what is asked for.
    let (other, other_digest) = env.file_ok(&deployment("stale-v2", HOTFIX_IMAGE), 60).await;
    assert_ne!(digest, other_digest, "two different requests, two digests");

    for approver in ["bob", "carol"] {
        let (status, body) = env.approve(approver, &id, &other_digest).await;
        assert_eq!(status, StatusCode::CONFLICT, "{approver}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains(&other_digest) && e.contains(&digest)),
            "the refusal names both digests: {body}"
        );
    }

    // Nothing was approved: neither request has an approval, both still wait, and nothing
    // reached the cluster.
    for request in [&id, &other] {
        let (status, body) = env
            .get("dave", &format!("/api/v1/requests/{request}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "pending", "{body}");
        assert_eq!(body["approvals"], json!([]), "{body}");
    }
    let (_, events) = env
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await;
    let actions: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["request.created"], "no approval was audited");
    assert!(env.env.sim.writes().is_empty());

    // The right digest still works: the refusals left the request decidable.
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
}

#[tokio::test]
async fn someone_without_the_requester_role_cannot_file() {
    let env = TestEnv::start().await;
    let (status, body) = env
        .file("mallory", &deployment("evil", HOTFIX_IMAGE), 60)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = env.get("mallory", "/api/v1/requests").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no role, no list: {body}");
    assert!(!body.to_string().contains("dev-cluster"), "{body}");
}

#[tokio::test]
async fn rejection_is_final() {
    let env = TestEnv::start().await;
    let (id, digest) = env.file_ok(&deployment("rejected", HOTFIX_IMAGE), 60).await;
    let (status, body) = env
        .post(
            "bob",
            &format!("/api/v1/requests/{id}/reject"),
            json!({"comment": "use the release pipeline"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "rejected");
    let (status, body) = env.approve("carol", &id, &digest).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(env.env.sim.breakglass_admissions().is_empty());
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401() {
    let env = TestEnv::start().await;
    let path = "/api/v1/requests";
    let (status, body) = env.call(Method::GET, None, path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let good = env.token("bob").await;
    // Change a character in the middle of the signature: the last one may carry only padding
    // bits, which a decoder ignores, so changing it need not change the signature at all.
    let signature_at = good.rfind('.').expect("three parts") + 20;
    let mut forged = good.clone();
    let was = forged.remove(signature_at);
    forged.insert(signature_at, if was == 'A' { 'B' } else { 'A' });
    let (status, body) = env.call(Method::GET, Some(&forged), path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "bad signature: {body}");

    let other_audience = env.token_with("persona=bob&audience=another-app").await;
    let (status, body) = env
        .call(Method::GET, Some(&other_audience), path, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong audience: {body}");

    let expired = env.token_with("persona=bob&ttl_seconds=-120").await;
    let (status, body) = env.call(Method::GET, Some(&expired), path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired: {body}");

    let (status, _) = env.call(Method::GET, Some(&good), path, None).await;
    assert_eq!(status, StatusCode::OK, "the unaltered token works");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_nothing_is_stored() {
    let env = TestEnv::start().await;
    let (status, body) = env.file("alice", "kind: [unclosed", 60).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("line")),
        "{body}"
    );

    let (status, body) = env
        .file("alice", &deployment("latest", "nginx:latest"), 60)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("spec.template.spec.containers[0].image")),
        "{body}"
    );

    let (status, body) = env
        .file("alice", &deployment("long", HOTFIX_IMAGE), 5 * 60)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let token = env.token("alice").await;
    let response = env
        .http
        .post(env.url("/api/v1/requests"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, body) = env.get("alice", "/api/v1/requests?state=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = env.get("alice", "/api/v1/requests/no-such-id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, listed) = env.get("dave", "/api/v1/requests").await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "nothing was stored: {listed}"
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let env = TestEnv::start().await;
    assert_eq!(
        env.call(Method::GET, None, "/healthz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        env.call(Method::GET, None, "/readyz", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_oversized_body_gets_413_with_a_json_error() {
    let env = TestEnv::start().await;
    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, body) = env.file("alice", &huge, 60).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("too large")),
        "{body}"
    );
}

#[tokio::test]
async fn a_preview_needs_the_requester_role_and_tells_nobody_else_the_targets() {
    let env = TestEnv::start().await;
    let body = crate::common::request_body("nowhere", &deployment("x", HOTFIX_IMAGE), "INC-1", 30);
    let mut unknown_target = body.clone();
    unknown_target["target"] = json!("no-such-target");
    for (who, expected) in [
        ("mallory", StatusCode::FORBIDDEN),
        ("dave", StatusCode::FORBIDDEN),
    ] {
        for sent in [&body, &unknown_target] {
            let (status, answer) = env
                .post(who, "/api/v1/requests/preview", sent.clone())
                .await;
            assert_eq!(status, expected, "{who}: {answer}");
            let text = answer.to_string();
            assert!(
                !text.contains("dev-cluster") && !text.contains("approvers"),
                "{who} learns nothing of the targets: {answer}"
            );
        }
    }
    let (status, answer) = env
        .post("alice", "/api/v1/requests/preview", unknown_target)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer.to_string().contains("dev-cluster"),
        "a requester is told the targets"
    );
}

#[tokio::test]
async fn dev_servers_answer_only_requests_addressed_to_a_loopback_host() {
    let env = TestEnv::start().await;
    let http = reqwest::Client::new();
    let issuer_token = format!("{}/token?persona=bob", env.env.issuer);
    let cluster = format!("{}/api/v1/namespaces/prod/pods", env.env.cluster_url);
    for url in [
        issuer_token.as_str(),
        &env.url("/healthz"),
        cluster.as_str(),
    ] {
        let rebound = http
            .get(url)
            .header("host", "attacker.example")
            .send()
            .await
            .expect("answers");
        assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST, "{url}");
        let body = rebound.text().await.expect("body");
        assert!(!body.contains("id_token"), "{url}: {body}");
        let port = url
            .split(':')
            .nth(2)
            .and_then(|p| p.split('/').next())
            .expect("port");
        let by_name = http
            .get(url)
            .header("host", format!("localhost:{port}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(by_name.status(), StatusCode::OK, "{url}");
    }
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::start().await;
    let address = env.env.base_url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connects");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("half a request");
    // And one that connects and never says anything at all.
    let mut silent = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connects");
    // The server gives up on the headers after 10 s; the bound is for a busy machine.
    for (what, stream) in [("half a request", &mut slow), ("nothing", &mut silent)] {
        let mut buffer = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server still holds a connection that sent {what} after 60 s"
        );
    }
    // Everyone else is served as usual.
    let (status, _) = env.call(reqwest::Method::GET, None, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_burst_of_filings_from_one_person_gets_429_while_another_person_is_served() {
    let env = TestEnv::start().await;
    let alice = env.token("alice").await;
    let refused = deployment("burst", "nginx:latest");
    let body = crate::common::request_body("prod", &refused, "INC-1", 30);
    // Sixty a minute is the default: each of these counts, whatever its answer.
    for i in 0..60 {
        let (status, answer) = env
            .call(
                Method::POST,
                Some(&alice),
                "/api/v1/requests",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{i}: {answer}");
    }
    let response = env
        .http
        .post(env.url("/api/v1/requests"))
        .bearer_auth(&alice)
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=61).contains(&retry_after), "{retry_after}");
    let answer: serde_json::Value = response.json().await.expect("json");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many filings")),
        "{answer}"
    );
    // Someone else files as usual, and reads are not limited.
    let (status, answer) = env
        .file("erin", &deployment("other", HOTFIX_IMAGE), 30)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, _) = env
        .call(Method::GET, Some(&alice), "/api/v1/requests", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}
