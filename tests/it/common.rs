//! The harness: a fresh dev environment per test, with a manual clock.

use std::time::Duration;

use breakglass_broker::clock::Clock;
use breakglass_broker::dev::{self, DevEnv, DevOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

pub struct TestEnv {
    pub env: DevEnv,
    pub clock: Clock,
    pub http: reqwest::Client,
    pub dir: TempDir,
}

/// An image the simulated Binary Authorization has not attested, but that the dev target's
/// policy allows (right registry, pinned by digest).
pub const HOTFIX_IMAGE: &str = "us-docker.pkg.dev/acme/hotfix/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

pub fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: {name}\n        image: {image}\n"
    )
}

/// The body of a filing on dev-cluster with a justification that passes the policy.
pub fn request_body(namespace: &str, manifest: &str, ticket: &str, minutes: u64) -> Value {
    json!({
        "target": "dev-cluster",
        "namespace": namespace,
        "manifest": manifest,
        "ticket": ticket,
        "justification": "payments API crashloops; hotfix image built from release branch",
        "duration_minutes": minutes,
    })
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        Self::start_with(dev::start).await
    }

    /// A dev environment made by `start` (`dev::start`, `dev::start_with_targets`,
    /// `dev::start_notifying`, ...) on loopback, in a fresh data directory, on a manual clock
    /// that stands at now until a test moves it.
    pub async fn start_with<F, Fut>(start: F) -> TestEnv
    where
        F: FnOnce(DevOptions) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<DevEnv>>,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
        let env = start(DevOptions {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().to_owned(),
            clock: clock.clone(),
            decision_max_age: dev::DECISION_MAX_AGE,
        })
        .await
        .expect("dev environment starts");
        TestEnv {
            env,
            clock,
            http: reqwest::Client::new(),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.env.base_url)
    }

    pub async fn token(&self, persona: &str) -> String {
        self.token_with(&format!("persona={persona}")).await
    }

    /// A dev issuer token with extra query parameters (audience, ttl_seconds).
    pub async fn token_with(&self, query: &str) -> String {
        let body: Value = self
            .http
            .get(format!("{}/token?{query}", self.env.issuer))
            .send()
            .await
            .expect("issuer answers")
            .json()
            .await
            .expect("token JSON");
        body["id_token"].as_str().expect("id_token").to_owned()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("broker answers");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, persona: &str, path: &str) -> (StatusCode, Value) {
        let token = self.token(persona).await;
        self.call(reqwest::Method::GET, Some(&token), path, None)
            .await
    }

    pub async fn post(&self, persona: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let token = self.token(persona).await;
        self.call(reqwest::Method::POST, Some(&token), path, Some(body))
            .await
    }

    pub async fn file(&self, persona: &str, manifest: &str, minutes: u64) -> (StatusCode, Value) {
        self.post(
            persona,
            "/api/v1/requests",
            request_body("prod", manifest, "INC-4242", minutes),
        )
        .await
    }

    /// Files a request as `persona` under `ticket` in `namespace` and returns its id,
    /// asserting it was filed.
    pub async fn file_under(
        &self,
        persona: &str,
        namespace: &str,
        manifest: &str,
        ticket: &str,
        minutes: u64,
    ) -> String {
        let (status, body) = self
            .post(
                persona,
                "/api/v1/requests",
                request_body(namespace, manifest, ticket, minutes),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Files a request as alice and returns (id, digest), asserting it is pending.
    pub async fn file_ok(&self, manifest: &str, minutes: u64) -> (String, String) {
        let (status, body) = self.file("alice", manifest, minutes).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["state"], "pending");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["digest"].as_str().expect("digest").to_owned(),
        )
    }

    pub async fn approve(&self, persona: &str, id: &str, digest: &str) -> (StatusCode, Value) {
        self.post(
            persona,
            &format!("/api/v1/requests/{id}/approve"),
            json!({ "digest": digest, "comment": "looks right" }),
        )
        .await
    }

    /// Waits (briefly, in real time) for the worker to move a request to `state`.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        let token = self.token("dave").await;
        // Normally milliseconds; generous for a busy 2-core machine running other tests.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = self
                .call(
                    reqwest::Method::GET,
                    Some(&token),
                    &format!("/api/v1/requests/{id}"),
                    None,
                )
                .await;
            if body["state"] == state {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "request never became {state}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Files, approves twice and waits for the request to be active.
    pub async fn activate(&self, name: &str, minutes: u64) -> String {
        let (id, digest) = self.file_ok(&deployment(name, HOTFIX_IMAGE), minutes).await;
        assert_eq!(self.approve("bob", &id, &digest).await.0, StatusCode::OK);
        assert_eq!(self.approve("carol", &id, &digest).await.0, StatusCode::OK);
        self.wait_for_state(&id, "active").await;
        id
    }
}
