//! A simulated Cloud Logging API v2 for `dev` mode and tests: `POST /v2/entries:list` over the
//! Admin Activity audit log of the simulated GKE clusters.
//!
//! Each breakglass admission a simulated cluster records ([`BreakglassAdmission`]: a write
//! whose Pod or pod template carries the breakglass label or the older annotation) is served
//! as the LogEntry GKE writes for it: `logName` `projects/P/logs/cloudaudit.googleapis.com%2Factivity`,
//! `resource.type` `k8s_cluster` with the cluster's labels, and an AuditLog `protoPayload`
//! (`methodName` such as `io.k8s.core.v1.pods.create`, `resourceName`, the writer's
//! `authenticationInfo.principalEmail`, the body sent as `request` and the object stored,
//! with its UID, as `response`). The entries are made from the admissions at each call, so
//! nothing can drift between what the cluster admitted and what the log says.
//!
//! Like the other simulated Google APIs it takes only bearer tokens the simulated metadata
//! server issued (401 otherwise), answers 403 for a project it does not hold, and 400
//! INVALID_ARGUMENT for a filter it cannot read ([`filter`]), an `orderBy` other than by
//! timestamp, or a page token it did not give out.

pub mod filter;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::SecondsFormat;
use serde::Deserialize;
use serde_json::{Value, json};

use super::google::{MetadataServer, TokenCheck};
use super::sim_cluster::{BreakglassAdmission, SimCluster};

/// The Admin Activity audit log's id, as it appears (URL-encoded) in `logName`.
pub const ACTIVITY_LOG: &str = "cloudaudit.googleapis.com%2Factivity";
/// The most entries one page holds, as in the real API.
const MAX_PAGE_SIZE: usize = 1000;
const DEFAULT_PAGE_SIZE: usize = 50;

/// A simulated GKE cluster whose admissions go to the log of `project`.
#[derive(Clone, Debug)]
pub struct ClusterLog {
    pub sim: SimCluster,
    pub project: String,
    pub location: String,
    pub cluster: String,
}

struct Inner {
    metadata: MetadataServer,
    clusters: Vec<ClusterLog>,
}

/// A handle on the simulated Logging API; clones share it.
#[derive(Clone)]
pub struct SimLogging {
    inner: Arc<Inner>,
}

impl SimLogging {
    pub fn new(metadata: MetadataServer, clusters: Vec<ClusterLog>) -> SimLogging {
        SimLogging {
            inner: Arc::new(Inner { metadata, clusters }),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2/entries:list", post(list_entries))
            .fallback(|| async {
                google_error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "the simulated Logging API serves only POST /v2/entries:list".into(),
                )
            })
            .layer(super::host::LoopbackOnly)
            .with_state(self.clone())
    }

    /// Every entry of every cluster's audit log, oldest first.
    pub fn entries(&self) -> Vec<Value> {
        let mut entries: Vec<Value> = self
            .inner
            .clusters
            .iter()
            .flat_map(|cluster| {
                cluster
                    .sim
                    .breakglass_admissions()
                    .iter()
                    .enumerate()
                    .map(|(i, admission)| entry(cluster, i, admission))
                    .collect::<Vec<_>>()
            })
            .collect();
        entries.sort_by_key(order_key);
        entries
    }
}

fn order_key(entry: &Value) -> (i64, String) {
    let at = entry["timestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_nanos_opt().unwrap_or_default());
    (
        at,
        entry["insertId"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The `@type` GKE gives an object in an audit log: `apps.k8s.io/v1.Deployment`.
fn object_type(object: &Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("core", api_version));
    json!(format!("{group}.k8s.io/{version}.{kind}"))
}

/// The LogEntry GKE writes to the Admin Activity log for one admission.
fn entry(cluster: &ClusterLog, index: usize, admission: &BreakglassAdmission) -> Value {
    let at = i64::try_from(admission.at).unwrap_or(i64::MAX);
    let timestamp = crate::clock::to_utc(at).to_rfc3339_opts(SecondsFormat::Nanos, true);
    let mut request = admission.request.clone();
    if request.is_object() {
        request["@type"] = if admission.method.ends_with(".patch") {
            json!("k8s.io/Patch")
        } else {
            object_type(&request)
        };
    }
    let mut response = admission.response.clone();
    if response.is_object() {
        response["@type"] = object_type(&response);
    }
    json!({
        "insertId": format!("{}-{index:06}", cluster.cluster),
        "logName": format!("projects/{}/logs/{ACTIVITY_LOG}", cluster.project),
        "resource": {
            "type": "k8s_cluster",
            "labels": {
                "project_id": cluster.project,
                "location": cluster.location,
                "cluster_name": cluster.cluster,
            },
        },
        "timestamp": timestamp,
        "receiveTimestamp": timestamp,
        "severity": "NOTICE",
        "labels": { "authorization.k8s.io/decision": "allow" },
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "k8s.io",
            "methodName": admission.method,
            "resourceName": admission.resource_name,
            "authenticationInfo": { "principalEmail": admission.user },
            "authorizationInfo": [{
                "granted": true,
                "permission": admission.method,
                "resource": admission.resource_name,
            }],
            "request": request,
            "response": response,
        },
    })
}

fn google_error(status: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "error": { "code": status.as_u16(), "message": message, "status": reason },
    });
    (status, Json(body)).into_response()
}

fn invalid(message: String) -> Response {
    google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListRequest {
    #[serde(default)]
    resource_names: Vec<String>,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    order_by: String,
    #[serde(default)]
    page_size: i64,
    #[serde(default)]
    page_token: String,
}

/// `POST /v2/entries:list`.
async fn list_entries(
    State(api): State<SimLogging>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if api.inner.metadata.check_header(&headers) != Some(TokenCheck::Valid) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.".into(),
        );
    }
    let request: ListRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return invalid(format!("Invalid JSON payload received. {e}")),
    };
    if request.resource_names.is_empty() {
        return invalid("resourceNames: at least one resource name is required".into());
    }
    let mut projects = Vec::new();
    for name in &request.resource_names {
        let Some(project) = name.strip_prefix("projects/").filter(|p| !p.contains('/')) else {
            return invalid(format!(
                "resourceNames: {name:?} is not a project (projects/PROJECT_ID); the simulation holds no other"
            ));
        };
        if !api.inner.clusters.iter().any(|c| c.project == project) {
            return google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                format!("The caller does not have permission to list the logs of {name}"),
            );
        }
        projects.push(project.to_owned());
    }
    let filter = match filter::parse(&request.filter) {
        Ok(filter) => filter,
        Err(e) => return invalid(format!("Unparseable filter: {e}")),
    };
    let descending = match request.order_by.trim() {
        "" | "timestamp asc" | "timestamp" => false,
        "timestamp desc" => true,
        other => {
            return invalid(format!(
                "orderBy {other:?}: only \"timestamp asc\" and \"timestamp desc\" are supported"
            ));
        }
    };
    let page_size = match usize::try_from(request.page_size) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(size) => size.min(MAX_PAGE_SIZE),
        Err(_) => return invalid(format!("pageSize {} is negative", request.page_size)),
    };
    let offset = if request.page_token.is_empty() {
        0
    } else {
        match request
            .page_token
            .strip_prefix("sim-page-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(offset) => offset,
            None => return invalid("pageToken: not a token this API gave out".into()),
        }
    };
    let mut entries: Vec<Value> = api
        .entries()
        .into_iter()
        .filter(|e| {
            projects
                .iter()
                .any(|p| e["resource"]["labels"]["project_id"] == p.as_str())
        })
        .filter(|e| filter.matches(e))
        .collect();
    if descending {
        entries.reverse();
    }
    let total = entries.len();
    let page: Vec<Value> = entries.into_iter().skip(offset).take(page_size).collect();
    let mut answer = json!({});
    if !page.is_empty() {
        answer["entries"] = Value::Array(page);
    }
    if offset + page_size < total {
        answer["nextPageToken"] = json!(format!("sim-page-{}", offset + page_size));
    }
    Json(answer).into_response()
}
