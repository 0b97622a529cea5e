//! The Cloud Run Admin API v2 over HTTP: services, and waiting for their long-running
//! operations and revisions. Errors are sorted as the worker needs them.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::TokenSource;
use crate::targets::TargetError;

/// Longest one call may take; a wait asks the server for less than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the broker waits for a deploy (operation and revision) before it retries later.
const DEPLOY_DEADLINE: Duration = Duration::from_secs(10 * 60);

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `https://run.googleapis.com`, or a simulation's root.
    root: String,
    /// `projects/P/locations/L`.
    parent: String,
    tokens: Arc<dyn TokenSource>,
}

impl Client {
    pub fn new(root: &str, project: &str, region: &str, tokens: Arc<dyn TokenSource>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(CALL_TIMEOUT)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            root: root.trim_end_matches('/').to_owned(),
            parent: format!("projects/{project}/locations/{region}"),
            tokens,
        }
    }

    pub fn service_path(&self, id: &str) -> String {
        format!("{}/services/{id}", self.parent)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, TargetError> {
        let url = format!("{}/v2/{path}", self.root);
        let mut request = self
            .http
            .request(method, &url)
            .header(http::header::AUTHORIZATION, self.tokens.bearer().await?)
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| TargetError::Unavailable(format!("Cloud Run API: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| TargetError::Unavailable(format!("Cloud Run API: {e}")))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(crate::domain::manifest::first_line)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(match status {
            404 => TargetError::NotFound,
            409 | 412 => TargetError::Conflict(message),
            400 | 403 | 422 => TargetError::Refused(message),
            _ => TargetError::Unavailable(format!("Cloud Run API: HTTP {status}: {message}")),
        })
    }

    /// Every service of the project and region, following page tokens.
    pub async fn list(&self) -> Result<Vec<Value>, TargetError> {
        let path = format!("{}/services", self.parent);
        let mut services = Vec::new();
        let mut token = String::new();
        // A bound on pages, so a server that always answers with a token cannot loop us.
        for _ in 0..100 {
            let query: Vec<(&str, &str)> = if token.is_empty() {
                Vec::new()
            } else {
                vec![("pageToken", token.as_str())]
            };
            let page = self.call(Method::GET, &path, &query, None).await?;
            services.extend(page["services"].as_array().cloned().unwrap_or_default());
            match page["nextPageToken"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_owned(),
                _ => return Ok(services),
            }
        }
        Ok(services)
    }

    /// Every revision of the service, following page tokens.
    pub async fn revisions(&self, id: &str) -> Result<Vec<Value>, TargetError> {
        let path = format!("{}/revisions", self.service_path(id));
        let mut revisions = Vec::new();
        let mut token = String::new();
        // A bound on pages, so a server that always answers with a token cannot loop us.
        for _ in 0..100 {
            let query: Vec<(&str, &str)> = if token.is_empty() {
                Vec::new()
            } else {
                vec![("pageToken", token.as_str())]
            };
            let page = self.call(Method::GET, &path, &query, None).await?;
            revisions.extend(page["revisions"].as_array().cloned().unwrap_or_default());
            match page["nextPageToken"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_owned(),
                _ => return Ok(revisions),
            }
        }
        Ok(revisions)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Value>, TargetError> {
        match self
            .call(Method::GET, &self.service_path(id), &[], None)
            .await
        {
            Ok(service) => Ok(Some(service)),
            Err(TargetError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the service; returns its operation.
    pub async fn create(
        &self,
        id: &str,
        body: Map<String, Value>,
        validate_only: bool,
    ) -> Result<Value, TargetError> {
        let path = format!("{}/services", self.parent);
        let mut query = vec![("serviceId", id)];
        if validate_only {
            query.push(("validateOnly", "true"));
        }
        self.call(Method::POST, &path, &query, Some(&Value::Object(body)))
            .await
    }

    /// Replaces the service's fields, only while it is at `etag`; returns the operation.
    pub async fn patch(
        &self,
        id: &str,
        mut body: Map<String, Value>,
        etag: &str,
        validate_only: bool,
    ) -> Result<Value, TargetError> {
        body.insert("etag".into(), etag.into());
        let query: &[(&str, &str)] = if validate_only {
            &[("validateOnly", "true")]
        } else {
            &[]
        };
        self.call(
            Method::PATCH,
            &self.service_path(id),
            query,
            Some(&Value::Object(body)),
        )
        .await
    }

    /// Deletes the service, only while it is at `etag` when given; returns the operation.
    pub async fn delete(&self, id: &str, etag: Option<&str>) -> Result<Value, TargetError> {
        let query: Vec<(&str, &str)> = etag.map(|e| ("etag", e)).into_iter().collect();
        self.call(Method::DELETE, &self.service_path(id), &query, None)
            .await
    }

    /// Waits for an operation to finish; its error (Binary Authorization refusing the
    /// revision, say) is a refusal in Cloud Run's own words.
    pub async fn finish(&self, operation: Value) -> Result<(), TargetError> {
        let deadline = tokio::time::Instant::now() + DEPLOY_DEADLINE;
        let mut operation = operation;
        loop {
            if operation["done"] == true {
                return match operation.get("error") {
                    Some(error) => Err(TargetError::Refused(
                        error["message"]
                            .as_str()
                            .map(crate::domain::manifest::first_line)
                            .unwrap_or_else(|| format!("the operation failed: {error}")),
                    )),
                    None => Ok(()),
                };
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TargetError::Unavailable(format!(
                    "Cloud Run operation {} did not finish within {} minutes",
                    operation["name"],
                    DEPLOY_DEADLINE.as_secs() / 60
                )));
            }
            let name = operation["name"]
                .as_str()
                .ok_or_else(|| TargetError::Unavailable("an operation without a name".into()))?
                .to_owned();
            operation = self
                .call(
                    Method::POST,
                    &format!("{name}:wait"),
                    &[],
                    Some(&json!({ "timeout": "30s" })),
                )
                .await?;
        }
    }

    /// Waits until the service's latest revision is ready and receives traffic; returns the
    /// service as it then stands.
    pub async fn serving(&self, id: &str) -> Result<Value, TargetError> {
        let deadline = tokio::time::Instant::now() + DEPLOY_DEADLINE;
        loop {
            let service = self.get(id).await?.ok_or(TargetError::NotFound)?;
            match serving_state(&service) {
                Serving::Yes => return Ok(service),
                Serving::Failed(message) => return Err(TargetError::Refused(message)),
                Serving::NotYet(why) if tokio::time::Instant::now() >= deadline => {
                    return Err(TargetError::Unavailable(format!(
                        "service {id}: {why} after {} minutes",
                        DEPLOY_DEADLINE.as_secs() / 60
                    )));
                }
                Serving::NotYet(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

enum Serving {
    Yes,
    NotYet(String),
    Failed(String),
}

fn serving_state(service: &Value) -> Serving {
    let condition = &service["terminalCondition"];
    if condition["state"] == "CONDITION_FAILED" {
        return Serving::Failed(
            condition["message"]
                .as_str()
                .map(crate::domain::manifest::first_line)
                .unwrap_or_else(|| "the latest revision failed".into()),
        );
    }
    let created = service["latestCreatedRevision"]
        .as_str()
        .unwrap_or_default();
    if service["reconciling"] == true || service["latestReadyRevision"] != created {
        return Serving::NotYet("the latest revision is not ready".into());
    }
    let short = created.rsplit('/').next().unwrap_or_default();
    let serves = service["trafficStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            t["percent"].as_u64().unwrap_or(0) > 0
                && (t["revision"] == short || t["type"] == "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST")
        });
    if serves {
        Serving::Yes
    } else {
        Serving::Failed(format!(
            "revision {short} is ready but receives no traffic (the service's traffic is pinned to other revisions)"
        ))
    }
}
