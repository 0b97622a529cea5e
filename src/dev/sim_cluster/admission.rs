//! Simulated GKE Binary Authorization admission, breakglass included.
//!
//! This is the behaviour the broker exists to govern: unattested images are denied
//! unless the pod template carries the breakglass label (or the older annotation),
//! and every such admission is recorded so the detector has something to reconcile.

use std::collections::BTreeMap;

use serde_json::Value;

use super::resources::{PodSpecAt, ResourceType};
use super::status::ApiError;

/// The label GKE honours on a Pod or pod template.
pub(crate) const BREAKGLASS_LABEL: &str = "image-policy.k8s.io/break-glass";
/// The older annotation GKE still honours.
pub(crate) const BREAKGLASS_ANNOTATION: &str = "alpha.image-policy.k8s.io/break-glass";

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// What admission decided about an object it let in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Not pod-bearing, or pod-bearing without breakglass: nothing to record.
    Admitted,
    /// Admitted with breakglass in force: GKE logs this as a breakglass event.
    Breakglass {
        images: Vec<String>,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    },
}

/// `metadata` and `spec` of the pod (template) that admission inspects.
fn pod_template(at: PodSpecAt, object: &Value) -> Option<(&Value, &Value, String)> {
    let (template, path) = match at {
        PodSpecAt::Nowhere => return None,
        PodSpecAt::Pod => (object, String::new()),
        PodSpecAt::Template => (
            object.pointer("/spec/template")?,
            "spec.template.".to_owned(),
        ),
        PodSpecAt::CronJob => (
            object.pointer("/spec/jobTemplate/spec/template")?,
            "spec.jobTemplate.spec.template.".to_owned(),
        ),
    };
    Some((
        template.get("metadata").unwrap_or(&Value::Null),
        template.get("spec").unwrap_or(&Value::Null),
        path,
    ))
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Every image in a pod spec, in container order; a container without one is invalid.
fn images(spec: &Value, path: &str) -> Result<Vec<String>, String> {
    let mut images = Vec::new();
    for list in CONTAINER_LISTS {
        let containers = spec.get(list).and_then(Value::as_array);
        for (i, container) in containers.into_iter().flatten().enumerate() {
            match container.get("image").and_then(Value::as_str) {
                Some(image) if !image.trim().is_empty() => images.push(image.to_owned()),
                _ => return Err(format!("{path}spec.{list}[{i}].image: Required value")),
            }
        }
    }
    Ok(images)
}

/// Decides whether `object` (the state it would have after the write) may be stored.
pub(crate) fn admit(
    res: &ResourceType,
    name: &str,
    object: &Value,
    attested_prefixes: &[String],
) -> Result<Verdict, ApiError> {
    let Some((metadata, spec, path)) = pod_template(res.pod_spec, object) else {
        return Ok(Verdict::Admitted);
    };
    let images = images(spec, &path).map_err(|problem| ApiError::invalid(res, name, &problem))?;
    let labels = string_map(metadata.get("labels"));
    let annotations = string_map(metadata.get("annotations"));
    let breakglass = labels.get(BREAKGLASS_LABEL).map(String::as_str) == Some("true")
        || annotations.get(BREAKGLASS_ANNOTATION).map(String::as_str) == Some("true");
    if breakglass {
        // GKE logs every use of breakglass, even when the images would have passed,
        // so an unapproved label on attested images still reaches the detector.
        return Ok(Verdict::Breakglass {
            images,
            labels,
            annotations,
        });
    }
    let unattested = images.iter().find(|image| {
        !attested_prefixes
            .iter()
            .any(|prefix| image.starts_with(prefix.as_str()))
    });
    match unattested {
        None => Ok(Verdict::Admitted),
        Some(image) => Err(ApiError::denied(
            res,
            name,
            format!(
                "admission webhook \"imagepolicywebhook.image-policy.k8s.io\" denied the request: \
                 Image {image} denied by Binary Authorization default admission rule (not attested); \
                 use breakglass to override"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::sim_cluster::resources::find;
    use serde_json::json;

    const ATTESTED: &str = "us-docker.pkg.dev/acme/release/";

    fn deployment(image: &str, labels: Value) -> Value {
        json!({
            "spec": { "template": {
                "metadata": { "labels": labels },
                "spec": { "containers": [{ "name": "app", "image": image }] },
            }},
        })
    }

    fn decide(kind: &str, group: &str, object: &Value) -> Result<Verdict, ApiError> {
        let res = find(group, "v1", kind).ok_or_else(ApiError::no_such_path)?;
        admit(res, "api", object, &[ATTESTED.to_owned()])
    }

    #[test]
    fn attested_images_are_admitted_without_a_record() {
        let object = deployment("us-docker.pkg.dev/acme/release/api@sha256:ab", json!({}));
        assert_eq!(
            decide("deployments", "apps", &object).ok(),
            Some(Verdict::Admitted)
        );
    }

    #[test]
    fn unattested_image_is_denied_naming_the_image() {
        let object = deployment("docker.io/library/nginx:1.27", json!({}));
        let err = decide("deployments", "apps", &object)
            .err()
            .map(|e| e.body());
        let message = err
            .as_ref()
            .and_then(|b| b["message"].as_str())
            .unwrap_or("");
        assert!(
            message.contains("Image docker.io/library/nginx:1.27 denied"),
            "{message}"
        );
        assert_eq!(err.map(|b| b["code"].clone()), Some(json!(403)));
    }

    #[test]
    fn breakglass_label_admits_and_reports_the_images() {
        let object = deployment("docker.io/evil:1", json!({ BREAKGLASS_LABEL: "true" }));
        match decide("deployments", "apps", &object) {
            Ok(Verdict::Breakglass { images, .. }) => assert_eq!(images, ["docker.io/evil:1"]),
            other => panic!("expected breakglass, got {other:?}"),
        }
    }

    #[test]
    fn breakglass_label_with_another_value_does_not_count() {
        let object = deployment("docker.io/evil:1", json!({ BREAKGLASS_LABEL: "yes" }));
        assert!(decide("deployments", "apps", &object).is_err());
    }

    #[test]
    fn cronjob_init_containers_are_inspected() {
        let object = json!({ "spec": { "jobTemplate": { "spec": { "template": {
            "metadata": { "annotations": { BREAKGLASS_ANNOTATION: "true" } },
            "spec": { "initContainers": [{ "name": "i", "image": "ghcr.io/x:1" }],
                      "containers": [{ "name": "c", "image": ATTESTED.to_owned() + "c:1" }] },
        }}}}});
        match decide("cronjobs", "batch", &object) {
            Ok(Verdict::Breakglass { images, .. }) => assert_eq!(images.len(), 2),
            other => panic!("expected breakglass, got {other:?}"),
        }
    }

    #[test]
    fn container_without_image_is_invalid() {
        let object = json!({ "spec": { "containers": [{ "name": "c" }] } });
        let code = decide("pods", "", &object).err().map(|e| e.code());
        assert_eq!(code, Some(422));
    }
}
