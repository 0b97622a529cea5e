//! The broker's Google identity and `dev-gke`: google-cloud-auth's real code against the
//! simulated metadata server, a service-account key, token refresh, a metadata server that
//! is down, and the whole story on a GKE cluster over HTTPS.
//!
//! No test here sets `GCE_METADATA_HOST`: the environment is process-wide and tests run in
//! parallel threads, so one test's address would leak into another's credentials. Each test
//! has its own simulated metadata server and hands its address to the crate's metadata-server
//! builder (`GoogleAuth::metadata_server`), which goes through the same client code as the
//! variable does; nothing can race.

use std::time::Duration;

use base64::Engine as _;
use breakglass_broker::dev;
use breakglass_broker::dev::google::{MetadataServer, TokenCheck};
use breakglass_broker::dev::sim_cluster::ObjectKey;
use breakglass_broker::domain::BREAKGLASS_LABEL;
use breakglass_broker::google::{GoogleAuth, SCOPES};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

async fn metadata_server() -> (MetadataServer, String) {
    let server = MetadataServer::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = server.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (server, url)
}

fn token_of(bearer: &http::HeaderValue) -> String {
    bearer
        .to_str()
        .expect("ascii")
        .strip_prefix("Bearer ")
        .expect("a bearer value")
        .to_owned()
}

#[tokio::test]
async fn google_cloud_auth_gets_its_token_from_the_simulated_metadata_server_with_the_brokers_scopes()
 {
    let (server, url) = metadata_server().await;
    let auth = GoogleAuth::metadata_server(&url).expect("credentials");

    let bearer = auth.bearer().await.expect("a token");

    assert!(bearer.is_sensitive());
    let token = token_of(&bearer);
    assert_eq!(server.check(&token), TokenCheck::Valid);
    let scopes = server.last_scopes().expect("scopes were asked for");
    for scope in SCOPES {
        assert!(scopes.contains(scope), "{scopes}");
    }
    // Cached: a second call asks the server for nothing.
    assert_eq!(token_of(&auth.bearer().await.expect("token")), token);
    assert_eq!(server.tokens_issued(), 1);
}

#[tokio::test]
async fn the_simulated_metadata_server_refuses_requests_without_the_metadata_flavor_header() {
    let (_, url) = metadata_server().await;
    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let http = reqwest::Client::new();

    let without = http
        .get(format!("{url}{path}"))
        .send()
        .await
        .expect("answer");
    let with = http
        .get(format!("{url}{path}"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("answer");

    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    assert_eq!(with.status(), StatusCode::OK);
    assert_eq!(with.headers()["metadata-flavor"], "Google");
}

#[tokio::test]
async fn an_expired_token_is_refreshed_by_the_crate_and_the_old_one_is_refused() {
    let (server, url) = metadata_server().await;
    server.set_token_lifetime(Duration::from_secs(2));
    let auth = GoogleAuth::metadata_server(&url).expect("credentials");
    let first = token_of(&auth.bearer().await.expect("token"));

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(server.check(&first), TokenCheck::Expired);
    // The crate refreshes short-lived tokens every 10 s; a caller meanwhile waits for it.
    let second = token_of(&auth.bearer().await.expect("a fresh token"));

    assert_ne!(first, second);
    assert_eq!(server.check(&second), TokenCheck::Valid);
}

#[tokio::test]
async fn a_service_account_key_gives_a_jwt_signed_with_the_key_and_never_calls_its_token_uri() {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key");
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem");
    // A token endpoint that counts every connection: the crate must not call it.
    let token_uri = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let token_uri_addr = token_uri.local_addr().expect("addr");
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while token_uri.accept().await.is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let email = "breakglass@acme-prod.iam.gserviceaccount.com";
    let auth = GoogleAuth::service_account_key(json!({
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": "k1",
        "private_key": pem.as_str(),
        "client_email": email,
        "token_uri": format!("http://{token_uri_addr}/token"),
    }))
    .expect("credentials");

    let jwt = token_of(&auth.bearer().await.expect("a token"));

    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {}", parts.len());
    let decode = |p: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .expect("base64url")
    };
    let header: Value = serde_json::from_slice(&decode(parts[0])).expect("header");
    let claims: Value = serde_json::from_slice(&decode(parts[1])).expect("claims");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "k1");
    assert_eq!(claims["iss"], email);
    assert_eq!(claims["sub"], email);
    let scope = claims["scope"].as_str().expect("scope claim");
    for wanted in SCOPES {
        assert!(scope.contains(wanted), "{scope}");
    }
    use rsa::signature::Verifier as _;
    let verifying = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.to_public_key());
    let signature =
        rsa::pkcs1v15::Signature::try_from(decode(parts[2]).as_slice()).expect("signature");
    verifying
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("signed with the key");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

fn gke_body(name: &str, minutes: u64) -> Value {
    json!({
        "target": "dev-gke",
        "namespace": "prod",
        "manifest": deployment(name, HOTFIX_IMAGE),
        "ticket": "INC-7001",
        "justification": "payments API crashloops on GKE; hotfix image from the release branch",
        "duration_minutes": minutes,
    })
}

async fn file_and_approve(env: &TestEnv, name: &str) -> String {
    let (status, body) = env
        .post("alice", "/api/v1/requests", gke_body(name, 30))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let digest = body["digest"].as_str().expect("digest").to_owned();
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    id
}

/// Polls the request until `done` holds, moving the broker's clock past any retry backoff.
async fn poll(env: &TestEnv, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
        if done(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        env.clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A dev environment whose metadata server is down before the broker's credentials first
/// ask it (they ask at once, when built).
async fn start_with_metadata_down() -> TestEnv {
    TestEnv::start_with(dev::start_with_metadata_down).await
}

#[tokio::test]
async fn a_metadata_server_that_is_down_leaves_the_request_approved_with_a_clear_error_until_it_is_back()
 {
    let env = start_with_metadata_down().await;
    let id = file_and_approve(&env, "payments-api").await;

    let body = poll(&env, &id, |b| b["last_error"].is_string()).await;

    assert_eq!(body["state"], "approved", "{body}");
    let error = body["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("Google access token"), "{error}");
    env.env.gke.metadata.set_down(false);
    let body = poll(&env, &id, |b| b["state"] != "approved").await;
    assert_eq!(body["state"], "active", "{body}");
}

#[tokio::test]
async fn the_whole_story_on_dev_gke_runs_over_https_with_the_cluster_ca_and_a_checked_token() {
    let env = TestEnv::start().await;
    let gke = &env.env.gke;
    assert!(gke.cluster_url.starts_with("https://"));
    let key = ObjectKey::new("apps/v1", "Deployment", "prod", "payments-api");

    let id = file_and_approve(&env, "payments-api").await;
    env.wait_for_state(&id, "active").await;

    let object = gke.sim.object(&key).expect("created on the GKE cluster");
    assert_eq!(
        object["spec"]["template"]["metadata"]["labels"][BREAKGLASS_LABEL],
        "true"
    );
    assert!(env.env.sim.object(&key).is_none(), "dev-cluster untouched");
    assert!(gke.metadata.tokens_issued() >= 1);
    let admissions = gke.sim.breakglass_admissions();
    assert_eq!(admissions.len(), 1, "{admissions:?}");
    assert_eq!(admissions[0].images, vec![HOTFIX_IMAGE.to_owned()]);

    // People read the GKE cluster with kubectl, through its CA, from the dev kubeconfig.
    // tokio's Command: the HTTPS cluster answers on this test's runtime, which a blocking
    // wait would stall.
    let kubectl = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.env.kubeconfig)
        .args(["--context", "dev-gke", "get", "deploy", "-A"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("kubectl runs");
    let listed = String::from_utf8_lossy(&kubectl.stdout);
    assert!(
        kubectl.status.success() && listed.contains("payments-api"),
        "{listed}{}",
        String::from_utf8_lossy(&kubectl.stderr)
    );

    env.clock.advance(Duration::from_secs(31 * 60));
    let body = crate::end::ended(&env, &id, "active").await;
    assert_eq!(body["state"], "expired", "{body}");
    assert!(gke.sim.object(&key).is_none(), "undone on the GKE cluster");
}

#[tokio::test]
async fn the_simulated_gke_cluster_and_api_refuse_tokens_the_metadata_server_did_not_issue() {
    let env = TestEnv::start().await;
    let gke = &env.env.gke;
    let ca = reqwest::Certificate::from_pem(gke.ca_pem.as_bytes()).expect("CA");
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let deployments = format!(
        "{}/apis/apps/v1/namespaces/prod/deployments",
        gke.cluster_url
    );
    let cluster = format!(
        "{}/v1/projects/dev-project/locations/us-central1/clusters/dev-gke",
        gke.api_url
    );

    let forged = http
        .post(&deployments)
        .bearer_auth("ya29.forged")
        .json(&serde_saphyr::from_str::<Value>(&deployment("x", HOTFIX_IMAGE)).expect("yaml"))
        .send()
        .await
        .expect("answer");
    let api_anonymous = http.get(&cluster).send().await.expect("answer");
    let anonymous_read = http.get(&deployments).send().await.expect("answer");

    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api_anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous_read.status(), StatusCode::OK);
    // An untrusting client does not get through: the cluster's CA is its own.
    let untrusting = reqwest::Client::new().get(&deployments).send().await;
    assert!(untrusting.is_err());
}
