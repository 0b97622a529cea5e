//! Between the request shape of a Cloud Run service ([`crate::domain::cloud_run`]) and the
//! Admin API v2 resource: the only place that knows both.

use serde_json::{Map, Value, json};

/// Fields of a v2 Service that the server sets; they go under `status` in the request shape
/// and are never sent back.
const OUTPUT_ONLY: [&str; 18] = [
    "uid",
    "generation",
    "createTime",
    "updateTime",
    "deleteTime",
    "expireTime",
    "creator",
    "lastModifier",
    "observedGeneration",
    "terminalCondition",
    "conditions",
    "latestReadyRevision",
    "latestCreatedRevision",
    "trafficStatuses",
    "uri",
    "urls",
    "reconciling",
    "satisfiesPzs",
];

/// The request shape of a v2 Service: `metadata` (with the etag as `resourceVersion`, so that
/// versions read the same everywhere), `spec` and `status`.
pub fn from_api(service: &Value) -> Value {
    let fields = service.as_object().cloned().unwrap_or_default();
    let name = fields
        .get("name")
        .and_then(Value::as_str)
        .and_then(|n| n.rsplit('/').next())
        .unwrap_or_default();
    let mut metadata = json!({ "name": name });
    let mut spec = Map::new();
    let mut status = Map::new();
    for (key, value) in fields {
        match key.as_str() {
            "name" => {}
            "labels" | "annotations" => metadata[key] = value,
            "etag" => metadata["resourceVersion"] = value,
            "uid" => metadata["uid"] = value,
            "template" => {
                let mut template = value.as_object().cloned().unwrap_or_default();
                let mut template_metadata = Map::new();
                for field in ["labels", "annotations"] {
                    if let Some(value) = template.remove(field) {
                        template_metadata.insert(field.into(), value);
                    }
                }
                spec.insert(
                    "template".into(),
                    json!({ "metadata": template_metadata, "spec": template }),
                );
            }
            other if OUTPUT_ONLY.contains(&other) => {
                status.insert(key, value);
            }
            _ => {
                spec.insert(key, value);
            }
        }
    }
    json!({
        "apiVersion": crate::domain::cloud_run::API_VERSION,
        "kind": crate::domain::cloud_run::KIND,
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

/// The v2 Service fields a request-shaped object sets (no name, etag or output fields).
pub fn to_api(object: &Value) -> Map<String, Value> {
    let mut fields = Map::new();
    for field in ["labels", "annotations"] {
        if let Some(value) = object.pointer(&format!("/metadata/{field}")) {
            fields.insert(field.into(), value.clone());
        }
    }
    let spec = object
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, value) in spec {
        if key == "template" {
            let mut template = value
                .get("spec")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for field in ["labels", "annotations"] {
                if let Some(value) = value.pointer(&format!("/metadata/{field}")) {
                    template.insert(field.into(), value.clone());
                }
            }
            fields.insert(key, Value::Object(template));
        } else if !OUTPUT_ONLY.contains(&key.as_str()) {
            fields.insert(key, value);
        }
    }
    fields
}

/// The requested fields laid over the live service: labels, annotations and
/// `binaryAuthorization` key by key (others' keys stay), every other requested field whole
/// (the template above all, so that exactly the approved revision runs).
pub fn merged(live: &Value, requested: Map<String, Value>) -> Map<String, Value> {
    let mut body: Map<String, Value> = live
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !OUTPUT_ONLY.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in requested {
        match (key.as_str(), body.get_mut(&key), value) {
            (
                "labels" | "annotations" | "binaryAuthorization",
                Some(Value::Object(live)),
                Value::Object(ours),
            ) => live.extend(ours),
            (_, _, value) => {
                body.insert(key, value);
            }
        }
    }
    body
}

/// Whether Binary Authorization admitted this revision (Admin API v2 shape) only with
/// breakglass: Cloud Run marks such a revision with the justification, in its annotations
/// (the v1 form) or in the service's binaryAuthorization settings it carries.
pub fn revision_used_breakglass(revision: &Value) -> bool {
    let annotation =
        revision["annotations"][crate::domain::unbrokered::RUN_BREAKGLASS_ANNOTATION].as_str();
    let field = revision["binaryAuthorization"]["breakglassJustification"].as_str();
    [annotation, field]
        .into_iter()
        .flatten()
        .any(|j| !j.trim().is_empty())
}

fn revision_ready(revision: &Value) -> bool {
    revision["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["state"] == "CONDITION_SUCCEEDED")
}

/// The short name of the newest ready revision admitted without breakglass, if any.
pub fn last_admitted_without_breakglass(revisions: &[Value]) -> Option<String> {
    revisions
        .iter()
        .filter(|r| revision_ready(r) && !revision_used_breakglass(r))
        // RFC 3339 times in UTC with the same precision sort as text; the name's sequence
        // number breaks a tie.
        .max_by(|a, b| {
            (a["createTime"].as_str(), a["name"].as_str())
                .cmp(&(b["createTime"].as_str(), b["name"].as_str()))
        })
        .and_then(|r| r["name"].as_str())
        .and_then(|n| n.rsplit('/').next())
        .map(str::to_owned)
}

/// The live service's user fields with all traffic on `revision` and no breakglass
/// justification left on it (neither form), for a PATCH at its etag.
pub fn rerouted(live: &Value, revision: &str) -> Map<String, Value> {
    let mut body = merged(live, Map::new());
    body.insert(
        "traffic".into(),
        serde_json::json!([{
            "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            "revision": revision,
            "percent": 100,
        }]),
    );
    if let Some(Value::Object(settings)) = body.get_mut("binaryAuthorization") {
        settings.remove("breakglassJustification");
    }
    if let Some(Value::Object(annotations)) = body.get_mut("annotations") {
        annotations.remove(crate::domain::unbrokered::RUN_BREAKGLASS_ANNOTATION);
    }
    body
}

/// Every secret a revision template reads (environment and volumes), for comparing two.
pub fn secrets(template: Option<&Value>) -> Vec<String> {
    let Some(template) = template else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for container in template["containers"].as_array().into_iter().flatten() {
        for env in container["env"].as_array().into_iter().flatten() {
            if let Some(secret) = env.pointer("/valueSource/secretKeyRef") {
                found.push(format!("env {}: {secret}", env["name"]));
            }
        }
    }
    for volume in template["volumes"].as_array().into_iter().flatten() {
        if let Some(secret) = volume.get("secret") {
            found.push(format!("volume {}: {secret}", volume["name"]));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(n: u32, ready: bool, justification: Option<&str>) -> Value {
        let mut revision = json!({
            "name": format!("projects/p/locations/l/services/s/revisions/s-{n:05}-abc"),
            "createTime": format!("2026-12-01T03:00:0{n}.000000Z"),
            "conditions": [{
                "type": "Ready",
                "state": if ready { "CONDITION_SUCCEEDED" } else { "CONDITION_FAILED" },
            }],
        });
        if let Some(j) = justification {
            revision["annotations"] =
                json!({ crate::domain::unbrokered::RUN_BREAKGLASS_ANNOTATION: j });
        }
        revision
    }

    #[test]
    fn traffic_goes_back_to_the_newest_ready_revision_admitted_without_breakglass() {
        let revisions = vec![
            revision(3, true, Some("trust me")),
            revision(1, true, None),
            revision(4, false, None),
            revision(2, true, None),
        ];
        assert_eq!(
            last_admitted_without_breakglass(&revisions).as_deref(),
            Some("s-00002-abc")
        );
        assert_eq!(
            last_admitted_without_breakglass(&[
                revision(1, false, None),
                revision(2, true, Some("x"))
            ]),
            None
        );
        let live = json!({
            "name": "projects/p/locations/l/services/s", "etag": "\"e\"", "uid": "u",
            "trafficStatuses": [{ "revision": "s-00003-abc", "percent": 100 }],
            "annotations": { crate::domain::unbrokered::RUN_BREAKGLASS_ANNOTATION: "x", "keep": "1" },
            "binaryAuthorization": { "useDefault": true, "breakglassJustification": "trust me" },
            "template": { "containers": [{ "image": "evil" }] },
        });
        let body = rerouted(&live, "s-00002-abc");
        assert_eq!(
            body["traffic"],
            json!([{ "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "s-00002-abc", "percent": 100 }])
        );
        assert_eq!(body["binaryAuthorization"], json!({ "useDefault": true }));
        assert_eq!(body["annotations"], json!({ "keep": "1" }));
        assert!(!body.contains_key("uid") && !body.contains_key("trafficStatuses"));
        assert_eq!(body["template"], live["template"]);
    }

    #[test]
    fn a_service_reads_as_an_object_and_writes_back_the_same_fields() {
        let service = json!({
            "name": "projects/p/locations/l/services/checkout",
            "etag": "\"e1\"", "uid": "u1", "generation": "3",
            "labels": { "app": "checkout" },
            "ingress": "INGRESS_TRAFFIC_ALL",
            "template": { "labels": { "app": "checkout" }, "serviceAccount": "sa@x",
                          "containers": [{ "image": "i" }] },
            "latestReadyRevision": "r1",
        });
        let object = from_api(&service);
        assert_eq!(object["metadata"]["name"], "checkout");
        assert_eq!(object["metadata"]["resourceVersion"], "\"e1\"");
        assert_eq!(
            object["spec"]["template"]["metadata"]["labels"]["app"],
            "checkout"
        );
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"][0]["image"],
            "i"
        );
        assert_eq!(object["status"]["latestReadyRevision"], "r1");
        let back = to_api(&object);
        assert_eq!(back["template"], service["template"]);
        assert_eq!(back["ingress"], "INGRESS_TRAFFIC_ALL");
        assert!(back.get("latestReadyRevision").is_none() && back.get("etag").is_none());
    }

    #[test]
    fn a_request_keeps_others_labels_and_replaces_the_template() {
        let live = json!({ "labels": { "team": "pay" }, "ingress": "INGRESS_TRAFFIC_INTERNAL_ONLY",
                           "binaryAuthorization": { "useDefault": true },
                           "template": { "containers": [{ "image": "old" }], "timeout": "30s" } });
        let requested = to_api(&json!({
            "metadata": { "labels": { "mine": "x" } },
            "spec": { "binaryAuthorization": { "breakglassJustification": "j" },
                      "template": { "spec": { "containers": [{ "image": "new" }] } } } }));
        let body = merged(&live, requested);
        assert_eq!(body["labels"], json!({ "team": "pay", "mine": "x" }));
        assert_eq!(body["ingress"], "INGRESS_TRAFFIC_INTERNAL_ONLY");
        assert_eq!(
            body["binaryAuthorization"],
            json!({ "useDefault": true, "breakglassJustification": "j" })
        );
        assert_eq!(
            body["template"],
            json!({ "containers": [{ "image": "new" }] })
        );
    }
}
