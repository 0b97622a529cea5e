//! Legacy (non-aggregated) API discovery.
//!
//! kubectl first asks for aggregated discovery; answering with plain
//! `application/json` makes client-go fall back to the legacy documents, which are
//! simpler to produce and exercise the same resource mapping (plurals, short names).

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::resources::{self, GROUPS, ResourceType};
use super::status::ApiError;

/// The version the simulator claims, matching the k8s-openapi feature the crate builds with.
pub(crate) async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0-breakglass-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

/// `GET /api`: the core group's versions.
pub(crate) async fn api_versions() -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    }))
}

fn group_document(group: &str) -> Value {
    let gv = json!({ "groupVersion": format!("{group}/v1"), "version": "v1" });
    json!({
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `GET /apis`: every named group.
pub(crate) async fn api_groups() -> Json<Value> {
    let groups: Vec<Value> = GROUPS.iter().map(|g| group_document(g)).collect();
    Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }))
}

/// `GET /apis/{group}`.
pub(crate) async fn api_group(Path(group): Path<String>) -> Response {
    if !GROUPS.contains(&group.as_str()) {
        return ApiError::no_such_path().into_response();
    }
    let mut doc = group_document(&group);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Json(doc).into_response()
}

fn resource_document(res: &ResourceType) -> Value {
    let mut doc = json!({
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": res.verbs(),
    });
    if !res.short_names.is_empty() {
        doc["shortNames"] = json!(res.short_names);
    }
    if !res.read_only {
        // Lets `kubectl get all` find the workloads, as on a real cluster.
        doc["categories"] = json!(["all"]);
    }
    doc
}

fn resource_list(group: &str, version: &str) -> Response {
    let resources: Vec<Value> = resources::in_group_version(group, version)
        .map(resource_document)
        .collect();
    if resources.is_empty() {
        return ApiError::no_such_path().into_response();
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
    .into_response()
}

/// `GET /api/v1`.
pub(crate) async fn core_resources() -> Response {
    resource_list("", "v1")
}

/// `GET /apis/{group}/{version}`.
pub(crate) async fn group_resources(Path((group, version)): Path<(String, String)>) -> Response {
    resource_list(&group, &version)
}
