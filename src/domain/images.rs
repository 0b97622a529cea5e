//! A change of images: the live workload as the request's manifest, with only the named
//! containers' images changed.
//!
//! The common incident is "run this hotfix image in that workload", and copying the live
//! object by hand is where mistakes creep in. The broker reads the workload itself and builds
//! the manifest here: what the server set (status, versions, managed fields, output-only
//! fields of a Cloud Run service) is left out, so the built manifest goes through the same
//! normalization, policy and digest as a pasted one, and the approvers see it whole.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::finding::{Finding, quoted};
use super::manifest::{ObjectRef, SERVER_METADATA};
use super::policy::template_path;

/// Annotations the server writes on a workload: they say nothing about what is asked for.
const SERVER_ANNOTATIONS: [&str; 2] = [
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// The container lists a pod template holds that a request may change. Init containers run
/// the workload's images too, so they count as containers.
const LISTS: [&str; 2] = ["initContainers", "containers"];

/// One container of a workload, as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Its name, or for an unnamed container (Cloud Run) its place in its list.
    pub key: String,
    /// Whether it is an init container.
    pub init: bool,
    pub image: String,
}

/// Every container of a workload's pod template, init containers first.
pub fn containers(object: &Value, kind: &str) -> Vec<Container> {
    let Some(spec) = pod_spec(object, kind) else {
        return Vec::new();
    };
    LISTS
        .iter()
        .filter_map(|list| spec.get(*list).and_then(Value::as_array).map(|c| (list, c)))
        .flat_map(|(list, items)| {
            items
                .iter()
                .enumerate()
                .map(move |(index, container)| Container {
                    key: key_of(container, index),
                    init: *list == "initContainers",
                    image: container
                        .get("image")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                })
        })
        .collect()
}

fn key_of(container: &Value, index: usize) -> String {
    match container.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => index.to_string(),
    }
}

fn pod_spec<'v>(object: &'v Value, kind: &str) -> Option<&'v Value> {
    let path = template_path(kind)?;
    let pointer = if path.is_empty() {
        "/spec".to_owned()
    } else {
        format!("/{}/spec", path.replace('.', "/"))
    };
    object.pointer(&pointer)
}

fn pod_spec_mut<'v>(object: &'v mut Value, kind: &str) -> Option<&'v mut Value> {
    let path = template_path(kind)?;
    let pointer = if path.is_empty() {
        "/spec".to_owned()
    } else {
        format!("/{}/spec", path.replace('.', "/"))
    };
    object.pointer_mut(&pointer)
}

/// How people see a workload's containers in a message: `api, proxy (init: migrate)`.
pub fn describe(containers: &[Container]) -> String {
    let names = |init: bool| -> Vec<&str> {
        containers
            .iter()
            .filter(|c| c.init == init)
            .map(|c| c.key.as_str())
            .collect()
    };
    let (main, init) = (names(false), names(true));
    let mut text = if main.is_empty() {
        "none".to_owned()
    } else {
        main.join(", ")
    };
    if !init.is_empty() {
        text.push_str(&format!(" (init containers: {})", init.join(", ")));
    }
    text
}

/// The live workload `live` (as the target reads it) as a manifest for `object`, with the
/// images of the containers named in `images` changed and nothing else: every finding that
/// stops it, or the manifest.
///
/// Left out: what the server set (`status`, server metadata, the revision annotation, the
/// pod template's `creationTimestamp`), and on a Cloud Run service the fields a request may
/// not set (ingress, traffic, IAM, `binaryAuthorization`) and the revision name, which the
/// service keeps or Cloud Run makes anew.
pub fn with_images(
    live: &Value,
    object: &ObjectRef,
    images: &BTreeMap<String, String>,
) -> Result<Value, Vec<Finding>> {
    let label = format!("{}/{}", object.kind, object.name);
    let mut findings = Vec::new();
    if images.is_empty() {
        findings.push(Finding::new(
            "",
            "images",
            "is empty: give the new image of at least one container, as {\"CONTAINER\": \"IMAGE\"}",
        ));
        return Err(findings);
    }
    let Value::Object(fields) = live else {
        return Err(vec![Finding::new(
            "",
            "workload",
            format!("{label} could not be read as an object"),
        )]);
    };
    let mut manifest = fields.clone();
    manifest.remove("status");
    manifest.insert(
        "apiVersion".into(),
        Value::String(object.api_version.clone()),
    );
    manifest.insert("kind".into(), Value::String(object.kind.clone()));
    if let Some(Value::Object(metadata)) = manifest.get_mut("metadata") {
        if let Some(owner) = metadata
            .get("ownerReferences")
            .and_then(Value::as_array)
            .and_then(|owners| owners.first())
        {
            findings.push(Finding::new(
                "",
                "workload",
                format!(
                    "{label} is managed by {}/{}, which would undo any change to it; ask for that workload instead",
                    owner["kind"].as_str().unwrap_or("another object"),
                    owner["name"].as_str().unwrap_or_default()
                ),
            ));
            return Err(findings);
        }
        strip_metadata(metadata);
    }
    let cloud_run = crate::domain::cloud_run::is_service(&object.api_version, &object.kind);
    // Of a Cloud Run service only the revision template is requested: the service's own
    // settings stay as they are (and a request may not set them).
    if cloud_run && let Some(Value::Object(spec)) = manifest.get_mut("spec") {
        spec.retain(|field, _| field == "template");
    }
    let mut manifest = Value::Object(manifest);
    let Some(Value::Object(pod)) = pod_spec_mut(&mut manifest, &object.kind) else {
        return Err(vec![Finding::new(
            "",
            "workload",
            format!("{label} has no pod template with containers"),
        )]);
    };
    if cloud_run {
        pod.remove("revision");
    }
    let known = containers(live, &object.kind);
    for (key, image) in images {
        let path = format!("images.{}", shown_key(key));
        if image.trim().is_empty() {
            findings.push(Finding::new("", path, "is empty; give the new image"));
            continue;
        }
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            findings.push(Finding::new(
                "",
                path,
                format!("{} is not an image reference", quoted(image)),
            ));
            continue;
        }
        if !set_image(pod, key, image) {
            findings.push(Finding::new(
                "",
                path,
                format!(
                    "names no container of {label}; its containers are: {}",
                    describe(&known)
                ),
            ));
        }
    }
    drop_empty_timestamps(&mut manifest);
    if findings.is_empty() {
        Ok(manifest)
    } else {
        Err(findings)
    }
}

fn strip_metadata(metadata: &mut Map<String, Value>) {
    for key in SERVER_METADATA {
        metadata.remove(key);
    }
    if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
        for key in SERVER_ANNOTATIONS {
            annotations.remove(key);
        }
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
}

/// Removes the `creationTimestamp: null` the API server writes into every embedded
/// `metadata` (pod templates, a CronJob's job template, claim templates).
fn drop_empty_timestamps(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(metadata)) = map.get_mut("metadata")
                && metadata.get("creationTimestamp") == Some(&Value::Null)
            {
                metadata.remove("creationTimestamp");
            }
            map.values_mut().for_each(drop_empty_timestamps);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_empty_timestamps),
        _ => {}
    }
}

/// A container key as a message shows it: as given when it could be a name, else quoted and
/// cut short, so that a hostile key cannot fill or forge a message.
fn shown_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain { key.to_owned() } else { quoted(key) }
}

/// Sets the image of the container known by `key` in a pod spec; false if there is none.
fn set_image(pod: &mut Map<String, Value>, key: &str, image: &str) -> bool {
    for list in LISTS {
        let Some(Value::Array(items)) = pod.get_mut(list) else {
            continue;
        };
        for (index, container) in items.iter_mut().enumerate() {
            if key_of(container, index) == key
                && let Value::Object(container) = container
            {
                container.insert("image".into(), Value::String(image.to_owned()));
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NEW: &str = "us-docker.pkg.dev/acme/hotfix/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "api", "namespace": "prod", "uid": "u1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{ "manager": "ci" }],
                "labels": { "app": "api", "team": "pay" },
                "annotations": { "deployment.kubernetes.io/revision": "3", "owner": "pay" },
            },
            "spec": {
                "replicas": 4,
                "selector": { "matchLabels": { "app": "api" } },
                "template": {
                    "metadata": { "labels": { "app": "api" }, "creationTimestamp": null },
                    "spec": {
                        "initContainers": [{ "name": "migrate", "image": "old-migrate" }],
                        "containers": [
                            { "name": "api", "image": "old-api", "env": [{ "name": "MODE", "value": "live" }] },
                            { "name": "proxy", "image": "old-proxy" },
                        ],
                    },
                },
            },
            "status": { "replicas": 4 },
        })
    }

    fn deployment_ref() -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "prod".into(),
            name: "api".into(),
        }
    }

    fn images(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_the_named_container_changes_and_server_fields_are_left_out() {
        let built = with_images(&deployment(), &deployment_ref(), &images(&[("api", NEW)]))
            .expect("builds");
        let containers = &built["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], NEW);
        assert_eq!(containers[0]["env"][0]["value"], "live");
        assert_eq!(containers[1]["image"], "old-proxy");
        assert_eq!(
            built["spec"]["template"]["spec"]["initContainers"][0]["image"],
            "old-migrate"
        );
        assert_eq!(built["spec"]["replicas"], 4);
        assert_eq!(
            built["metadata"],
            json!({ "name": "api", "namespace": "prod",
                    "labels": { "app": "api", "team": "pay" },
                    "annotations": { "owner": "pay" } })
        );
        assert!(built.get("status").is_none());
        assert_eq!(
            built["spec"]["template"]["metadata"],
            json!({ "labels": { "app": "api" } })
        );
    }

    #[test]
    fn init_containers_count_as_containers() {
        let built = with_images(
            &deployment(),
            &deployment_ref(),
            &images(&[("migrate", NEW)]),
        )
        .expect("builds");
        assert_eq!(
            built["spec"]["template"]["spec"]["initContainers"][0]["image"],
            NEW
        );
        assert_eq!(
            built["spec"]["template"]["spec"]["containers"][0]["image"],
            "old-api"
        );
    }

    #[test]
    fn an_unknown_container_is_refused_listing_the_containers_there_are() {
        let findings = with_images(
            &deployment(),
            &deployment_ref(),
            &images(&[("api", NEW), ("sidecar", NEW)]),
        )
        .expect_err("refused");
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].path, "images.sidecar");
        assert_eq!(
            findings[0].message,
            "names no container of Deployment/api; its containers are: api, proxy (init containers: migrate)"
        );
    }

    #[test]
    fn a_cronjob_loses_the_empty_timestamps_of_its_job_and_pod_templates() {
        let live = json!({ "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": { "name": "report", "namespace": "prod" },
            "spec": { "schedule": "0 * * * *", "jobTemplate": {
                "metadata": { "creationTimestamp": null },
                "spec": { "template": { "metadata": { "creationTimestamp": null },
                    "spec": { "containers": [{ "name": "report", "image": "old" }] } } } } } });
        let object = ObjectRef {
            api_version: "batch/v1".into(),
            kind: "CronJob".into(),
            namespace: "prod".into(),
            name: "report".into(),
        };
        let built = with_images(&live, &object, &images(&[("report", NEW)])).expect("builds");
        assert_eq!(
            built["spec"]["jobTemplate"],
            json!({ "metadata": {}, "spec": { "template": { "metadata": {},
                "spec": { "containers": [{ "name": "report", "image": NEW }] } } } })
        );
    }

    #[test]
    fn a_hostile_container_key_is_quoted_and_cut_short_in_the_refusal() {
        let key = format!("a\nFAKE: {}", "x".repeat(200));
        let findings = with_images(&deployment(), &deployment_ref(), &images(&[(&key, NEW)]))
            .expect_err("refused");
        assert!(
            findings[0].path.starts_with("images.\"a\\nFAKE"),
            "{findings:?}"
        );
        assert!(findings[0].path.len() < 100, "{findings:?}");
        assert!(!findings[0].to_string().contains('\n'));
    }

    #[test]
    fn no_images_and_blank_images_are_refused() {
        let none =
            with_images(&deployment(), &deployment_ref(), &BTreeMap::new()).expect_err("refused");
        assert_eq!(none[0].path, "images");
        let blank = with_images(
            &deployment(),
            &deployment_ref(),
            &images(&[("api", " "), ("proxy", "a b")]),
        )
        .expect_err("refused");
        let paths: Vec<&str> = blank.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["images.api", "images.proxy"]);
    }

    #[test]
    fn a_workload_owned_by_another_is_refused_naming_the_owner() {
        let mut pod = json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "api-1", "ownerReferences": [{ "kind": "ReplicaSet", "name": "api-7f" }] },
            "spec": { "containers": [{ "name": "api", "image": "old" }] } });
        let object = ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "prod".into(),
            name: "api-1".into(),
        };
        let findings = with_images(&pod, &object, &images(&[("api", NEW)])).expect_err("owned");
        assert!(
            findings[0].message.contains("ReplicaSet/api-7f"),
            "{findings:?}"
        );
        pod["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("ownerReferences");
        let built = with_images(&pod, &object, &images(&[("api", NEW)])).expect("a bare pod");
        assert_eq!(built["spec"]["containers"][0]["image"], NEW);
    }

    #[test]
    fn a_cloud_run_service_loses_what_a_request_may_not_set_and_names_unnamed_containers_by_place()
    {
        let live = json!({
            "apiVersion": "run.googleapis.com/v2", "kind": "Service",
            "metadata": { "name": "checkout", "resourceVersion": "\"e1\"", "uid": "u",
                          "labels": { "app": "checkout" } },
            "spec": {
                "ingress": "INGRESS_TRAFFIC_ALL",
                "traffic": [{ "percent": 100 }],
                "binaryAuthorization": { "useDefault": true },
                "scaling": { "minInstanceCount": 1 },
                "template": {
                    "metadata": { "labels": { "app": "checkout" } },
                    "spec": { "revision": "checkout-v7", "serviceAccount": "sa@x",
                              "containers": [{ "image": "old" }, { "image": "side" }] },
                },
            },
            "status": { "latestReadyRevision": "r1" },
        });
        let object = ObjectRef {
            api_version: "run.googleapis.com/v2".into(),
            kind: "Service".into(),
            namespace: String::new(),
            name: "checkout".into(),
        };
        let listed = containers(&live, "Service");
        assert_eq!(
            listed.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            ["0", "1"]
        );
        let built = with_images(&live, &object, &images(&[("0", NEW)])).expect("builds");
        assert_eq!(
            built["spec"],
            json!({
                "template": {
                    "metadata": { "labels": { "app": "checkout" } },
                    "spec": { "serviceAccount": "sa@x",
                              "containers": [{ "image": NEW }, { "image": "side" }] },
                },
            })
        );
        assert_eq!(
            built["metadata"],
            json!({ "name": "checkout", "labels": { "app": "checkout" } })
        );
        let findings =
            with_images(&live, &object, &images(&[("checkout", NEW)])).expect_err("no name");
        assert!(findings[0].message.ends_with("its containers are: 0, 1"));
    }
}
