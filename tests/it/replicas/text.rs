//! Text PostgreSQL cannot hold: a NUL anywhere a caller puts text gets a 400 that says so, and
//! nothing is stored (SQLite stores it, so only PostgreSQL needs the test).

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::Infra;
use crate::store::FreshPostgres;

#[tokio::test]
async fn a_nul_in_any_text_is_a_400_on_postgres_and_nothing_is_stored() {
    let infra = Infra::start().await;
    let database = FreshPostgres::create().await;
    let config = infra.config("replica", &database.url);
    let broker = infra.broker(&config, "replica").await;
    let url = broker.url.as_str();
    let (id, digest) = infra.file(url, "nul-text", 30).await;

    let says_nul = |status: StatusCode, body: &serde_json::Value, what: &str| {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("NUL")),
            "{what}: {body}"
        );
    };
    for path in [
        "/api/v1/requests/%00".to_owned(),
        "/api/v1/requests?ticket=INC%00-1".to_owned(),
        "/api/v1/audit?action=%00".to_owned(),
        "/api/v1/tickets/INC%00-1".to_owned(),
        "/api/v1/audit/export?format=csv&actor=%00".to_owned(),
    ] {
        let (status, body) = infra.call(url, Method::GET, "dave", &path, None).await;
        says_nul(status, &body, &path);
    }
    let (status, body) = infra
        .call(
            url,
            Method::POST,
            "bob",
            &format!("/api/v1/requests/{id}/approve"),
            Some(json!({ "digest": digest, "comment": "ok\u{0}" })),
        )
        .await;
    says_nul(status, &body, "an approval's comment");

    let shown = infra.show(url, &id).await;
    assert_eq!(shown["state"], "pending", "the approval did not count");
    assert_eq!(
        infra.audit_actions(url, &id).await,
        ["request.created"],
        "nothing else was recorded"
    );
}
