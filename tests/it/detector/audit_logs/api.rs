//! The simulated Logging API answers as the real one: 400 for a filter it cannot read, 401
//! without a token the metadata server issued, 403 for another project, pages in order.

use super::*;

#[tokio::test]
async fn the_simulated_logging_api_refuses_a_filter_it_cannot_parse_and_a_caller_without_a_valid_token()
 {
    let env = TestEnv::start().await;
    env.env.gke.sim.set_admission_policy(false);
    for name in ["one", "two"] {
        create_on_gke(&env, "/api/v1/namespaces/prod/pods", &labelled_pod(name)).await;
    }
    let token = crate::cloud_run::metadata_token(&env).await;
    let url = format!("{}/v2/entries:list", env.env.logging_url);
    let list = |token: Option<&str>, body: Value| {
        let mut request = env.http.post(&url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("answers");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let query =
        |filter: &str| json!({ "resourceNames": ["projects/dev-project"], "filter": filter });

    for bad in [
        r#""image-policy.k8s.io/break-glass""#,
        r#"protoPayload.methodName=~"pods\.create""#,
        r#"resource.type="k8s_cluster" AND (timestamp>="2020-01-01T00:00:00Z""#,
    ] {
        let (status, body) = list(Some(&token), query(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("filter"),
            "{body}"
        );
    }
    let good = r#"resource.type="k8s_cluster" AND protoPayload.request.metadata.labels."image-policy.k8s.io/break-glass"="true""#;
    let (status, body) = list(None, query(good)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    let (status, _) = list(Some("ya29.forged"), query(good)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = list(
        Some(&token),
        json!({ "resourceNames": ["projects/someone-else"], "filter": good }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = list(
        Some(&token),
        json!({ "resourceNames": ["projects/dev-project"], "filter": good, "orderBy": "insertId" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The same query with a valid token: both admissions, a page at a time, oldest first.
    let mut paged = query(good);
    paged["pageSize"] = json!(1);
    let (status, first) = list(Some(&token), paged.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        first["entries"][0]["protoPayload"]["resourceName"],
        "core/v1/namespaces/prod/pods/one"
    );
    assert_eq!(
        first["entries"][0]["resource"]["labels"]["cluster_name"],
        GKE
    );
    paged["pageToken"] = first["nextPageToken"].clone();
    let (status, second) = list(Some(&token), paged.clone()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(
        second["entries"][0]["protoPayload"]["methodName"],
        "io.k8s.core.v1.pods.create"
    );
    assert!(second["nextPageToken"].is_null(), "{second}");
    paged["pageToken"] = json!("not-a-token");
    let (status, _) = list(Some(&token), paged).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
