//! What a target allows to be requested, and the findings that explain every refusal.

use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::manifest::Object;
use super::{BREAKGLASS_ANNOTATION, BREAKGLASS_LABEL, BROKER_PREFIX};

/// One reason a request cannot go ahead: which object, which field, which rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub object: String,
    pub path: String,
    pub message: String,
}

impl Finding {
    pub fn new(
        object: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object: object.into(),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.object.is_empty(), self.path.is_empty()) {
            (true, true) => f.write_str(&self.message),
            (true, false) => write!(f, "{} {}", self.path, self.message),
            (false, true) => write!(f, "{}: {}", self.object, self.message),
            (false, false) => write!(f, "{}: {} {}", self.object, self.path, self.message),
        }
    }
}

/// Which images may be run.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePolicy {
    /// Image references must start with one of these (e.g. `us-docker.pkg.dev/acme/`).
    /// Empty allows any registry.
    #[serde(default)]
    pub registries: Vec<String>,
    /// Every image must be pinned as `name@sha256:<64 hex>`.
    #[serde(default)]
    pub require_digest: bool,
}

/// Guardrails on the pods a request would run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodPolicy {
    pub service_accounts: Vec<String>,
    pub allow_automount_token: bool,
    pub allowed_capabilities: Vec<String>,
}

impl Default for PodPolicy {
    fn default() -> Self {
        Self {
            service_accounts: vec!["default".into()],
            allow_automount_token: false,
            allowed_capabilities: vec!["NET_BIND_SERVICE".into()],
        }
    }
}

/// A kind the target accepts, with the API version it must be written in.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedKind {
    pub api_version: String,
    pub kind: String,
}

pub fn default_kinds() -> Vec<AllowedKind> {
    [
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("v1", "Pod"),
    ]
    .into_iter()
    .map(|(a, k)| AllowedKind {
        api_version: a.into(),
        kind: k.into(),
    })
    .collect()
}

/// Everything a target's configuration says about what may be requested.
#[derive(Clone, Debug)]
pub struct Policy {
    pub target: String,
    pub namespaces: Vec<String>,
    pub kinds: Vec<AllowedKind>,
    pub images: ImagePolicy,
    pub pods: PodPolicy,
    pub max_duration: Duration,
    pub ticket_pattern: Regex,
}

/// The request fields that are not part of the manifest.
pub struct RequestFields<'a> {
    pub namespace: &'a str,
    pub ticket: &'a str,
    pub justification: &'a str,
    pub duration: Duration,
}

impl Policy {
    /// Checks the request's own fields; manifest findings come from [`Policy::check_objects`].
    pub fn check_fields(&self, fields: &RequestFields<'_>) -> Vec<Finding> {
        let mut findings = Vec::new();
        if !self.namespaces.iter().any(|n| n == fields.namespace) {
            findings.push(Finding::new(
                "",
                "namespace",
                format!(
                    "{:?} is not open to breakglass on target {} (allowed: {})",
                    fields.namespace,
                    self.target,
                    self.namespaces.join(", ")
                ),
            ));
        }
        if !self.ticket_pattern.is_match(fields.ticket) {
            findings.push(Finding::new(
                "",
                "ticket",
                format!(
                    "{:?} does not match the ticket pattern {} of target {}",
                    fields.ticket,
                    self.ticket_pattern.as_str(),
                    self.target
                ),
            ));
        }
        if fields.justification.trim().len() < 10 {
            findings.push(Finding::new(
                "",
                "justification",
                "must say why, in at least 10 characters",
            ));
        }
        if fields.duration.is_zero() || fields.duration > self.max_duration {
            findings.push(Finding::new(
                "",
                "duration_minutes",
                format!(
                    "must be between 1 minute and {} (the maximum of target {})",
                    humantime::format_duration(self.max_duration),
                    self.target
                ),
            ));
        }
        findings
    }

    pub fn check_objects(&self, objects: &[Object]) -> Vec<Finding> {
        let mut findings = Vec::new();
        for object in objects {
            self.check_object(object, &mut findings);
        }
        findings
    }

    fn check_object(&self, object: &Object, findings: &mut Vec<Finding>) {
        let label = object.label();
        let known = self
            .kinds
            .iter()
            .any(|k| k.kind == object.kind && k.api_version == object.api_version);
        if !known {
            let allowed: Vec<String> = self
                .kinds
                .iter()
                .map(|k| format!("{} ({})", k.kind, k.api_version))
                .collect();
            findings.push(Finding::new(
                label,
                "kind",
                format!(
                    "{} {} may not be requested on target {} (allowed: {})",
                    object.api_version,
                    object.kind,
                    self.target,
                    allowed.join(", ")
                ),
            ));
            return;
        }
        check_broker_keys(&label, "metadata", &object.body["metadata"], findings);
        let Some((template_path, template)) = pod_template(object) else {
            findings.push(Finding::new(label, "spec", "has no pod spec"));
            return;
        };
        if !template_path.is_empty() {
            check_broker_keys(
                &label,
                &format!("{template_path}.metadata"),
                &template["metadata"],
                findings,
            );
        }
        let spec_path = join(&template_path, "spec");
        match template.get("spec") {
            Some(spec @ Value::Object(_)) => {
                self.check_pod_spec(&label, &spec_path, spec, findings)
            }
            _ => findings.push(Finding::new(label, spec_path, "is missing")),
        }
    }

    fn check_pod_spec(&self, label: &str, path: &str, spec: &Value, findings: &mut Vec<Finding>) {
        for flag in ["hostNetwork", "hostPID", "hostIPC"] {
            if spec.get(flag) == Some(&Value::Bool(true)) {
                findings.push(Finding::new(
                    label,
                    format!("{path}.{flag}"),
                    "is true; pods may not share the node's namespaces",
                ));
            }
        }
        if let Some(volumes) = spec.get("volumes").and_then(Value::as_array) {
            for (i, volume) in volumes.iter().enumerate() {
                if volume.get("hostPath").is_some() {
                    findings.push(Finding::new(
                        label,
                        format!("{path}.volumes[{i}].hostPath"),
                        "mounts the node's filesystem, which is not allowed",
                    ));
                }
            }
        }
        let account = spec
            .get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if !self.pods.service_accounts.iter().any(|a| a == account) {
            findings.push(Finding::new(
                label,
                format!("{path}.serviceAccountName"),
                format!(
                    "{account:?} is not allowed on target {} (allowed: {})",
                    self.target,
                    self.pods.service_accounts.join(", ")
                ),
            ));
        }
        if !self.pods.allow_automount_token
            && spec.get("automountServiceAccountToken") != Some(&Value::Bool(false))
        {
            findings.push(Finding::new(
                label,
                format!("{path}.automountServiceAccountToken"),
                format!(
                    "must be false (target {} does not allow service account tokens)",
                    self.target
                ),
            ));
        }
        let mut containers = 0;
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            let Some(items) = spec.get(list).and_then(Value::as_array) else {
                continue;
            };
            for (i, container) in items.iter().enumerate() {
                containers += 1;
                self.check_container(label, &format!("{path}.{list}[{i}]"), container, findings);
            }
        }
        if containers == 0 {
            findings.push(Finding::new(
                label,
                format!("{path}.containers"),
                "is empty",
            ));
        }
    }

    fn check_container(
        &self,
        label: &str,
        path: &str,
        container: &Value,
        findings: &mut Vec<Finding>,
    ) {
        match container.get("image").and_then(Value::as_str) {
            Some(image) => self.check_image(label, &format!("{path}.image"), image, findings),
            None => findings.push(Finding::new(label, format!("{path}.image"), "is missing")),
        }
        let security = container.get("securityContext");
        if security.and_then(|s| s.get("privileged")) == Some(&Value::Bool(true)) {
            findings.push(Finding::new(
                label,
                format!("{path}.securityContext.privileged"),
                "is true; privileged containers are not allowed",
            ));
        }
        let added = security
            .and_then(|s| s.pointer("/capabilities/add"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, cap) in added.iter().enumerate() {
            let name = cap.as_str().unwrap_or_default();
            let bare = name.strip_prefix("CAP_").unwrap_or(name);
            if !self.pods.allowed_capabilities.iter().any(|c| c == bare) {
                findings.push(Finding::new(
                    label,
                    format!("{path}.securityContext.capabilities.add[{i}]"),
                    format!(
                        "{name:?} is not allowed (allowed: {})",
                        self.pods.allowed_capabilities.join(", ")
                    ),
                ));
            }
        }
    }

    fn check_image(&self, label: &str, path: &str, image: &str, findings: &mut Vec<Finding>) {
        if image.is_empty()
            || image.len() > 512
            || image.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            findings.push(Finding::new(
                label,
                path,
                format!("{image:?} is not a valid image reference"),
            ));
            return;
        }
        if !self.images.registries.is_empty()
            && !self
                .images
                .registries
                .iter()
                .any(|r| image.starts_with(r.as_str()))
        {
            findings.push(Finding::new(
                label,
                path,
                format!(
                    "{image:?} is not from an allowed registry (target {} allows {})",
                    self.target,
                    self.images.registries.join(", ")
                ),
            ));
        }
        if self.images.require_digest && image_digest(image).is_none() {
            findings.push(Finding::new(
                label,
                path,
                format!(
                    "{image:?} is not pinned by digest (target {} requires digests)",
                    self.target
                ),
            ));
        }
    }
}

/// The `sha256:<hex>` an image reference is pinned to, if it is.
pub fn image_digest(image: &str) -> Option<&str> {
    let (_, digest) = image.split_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(digest)
}

fn check_broker_keys(label: &str, path: &str, metadata: &Value, findings: &mut Vec<Finding>) {
    for field in ["labels", "annotations"] {
        let Some(map) = metadata.get(field).and_then(Value::as_object) else {
            continue;
        };
        for key in map.keys() {
            if key.starts_with(BROKER_PREFIX)
                || key == BREAKGLASS_LABEL
                || key == BREAKGLASS_ANNOTATION
            {
                findings.push(Finding::new(
                    label,
                    format!("{path}.{field}[{key:?}]"),
                    "is set by the broker itself; remove it from the manifest",
                ));
            }
        }
    }
}

/// Where an object keeps its pod: (`"spec.template"`, template) for workloads, (`""`, object)
/// for a Pod. The template is what carries labels and the pod spec.
pub fn pod_template(object: &Object) -> Option<(String, &Value)> {
    let path = template_path(&object.kind)?;
    let template = if path.is_empty() {
        &object.body
    } else {
        object
            .body
            .pointer(&format!("/{}", path.replace('.', "/")))?
    };
    template.is_object().then(|| (path.to_owned(), template))
}

/// The dotted path to a kind's pod template, `""` when the object is itself a Pod.
pub fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("spec.template"),
        "CronJob" => Some("spec.jobTemplate.spec.template"),
        _ => None,
    }
}

/// Every image an object's pod would run.
pub fn images(object: &Object) -> Vec<String> {
    let Some((_, template)) = pod_template(object) else {
        return Vec::new();
    };
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| {
            template
                .pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .filter_map(|c| c.get("image").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}
