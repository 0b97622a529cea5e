//! What a target allows to be requested, and the findings that explain every refusal.

use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::manifest::Object;
use super::{BREAKGLASS_ANNOTATION, BREAKGLASS_LABEL, BROKER_PREFIX};

/// Cloud Run guardrails: which services, images and service accounts, and nothing else.
mod cloud_run;
/// Pod and image guardrails: the checks that keep a workload off the node and its identity.
mod pods;

pub use super::finding::Finding;
pub(crate) use super::finding::{kind_of, not_a_string, quoted, shown};
pub use cloud_run::{CloudRunPolicy, FORBIDDEN as CLOUD_RUN_FORBIDDEN};
pub use pods::image_digest;

/// Which images may be run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagePolicy {
    /// Image references must start with one of these (e.g. `us-docker.pkg.dev/acme/`), at a
    /// `/` boundary. Empty allows any registry, which `check-config` refuses for real targets.
    pub registries: Vec<String>,
    /// Every image must be pinned as `name@sha256:<64 hex>`, so that what was approved is
    /// what runs. On unless a target turns it off.
    pub require_digest: bool,
}

impl Default for ImagePolicy {
    fn default() -> Self {
        Self {
            registries: Vec::new(),
            require_digest: true,
        }
    }
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

/// The kinds the broker knows how to check: each carries a pod, so every guardrail applies.
/// A target may accept fewer, never others.
pub const KNOWN_KINDS: [(&str, &str); 7] = [
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "Pod"),
];

pub fn default_kinds() -> Vec<AllowedKind> {
    KNOWN_KINDS
        .into_iter()
        .filter(|(_, kind)| *kind != "ReplicaSet")
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
    /// Set on a Cloud Run target: its objects are services, checked by their own rules.
    pub cloud_run: Option<CloudRunPolicy>,
    pub max_duration: Duration,
    /// Matches a whole ticket (anchored when built from the configuration).
    pub ticket_pattern: Regex,
    /// The pattern as the operator wrote it, for messages.
    pub ticket_pattern_source: String,
}

/// The request fields that are not part of the manifest.
pub struct RequestFields<'a> {
    pub namespace: &'a str,
    pub ticket: &'a str,
    pub justification: &'a str,
    /// As submitted, so that a refusal repeats exactly what was asked for.
    pub duration_minutes: u64,
}

/// Bounds on free text, so that a ticket or a justification cannot bloat every audit event
/// and page that shows it.
pub const MAX_TICKET_CHARS: usize = 200;
pub const MIN_JUSTIFICATION_CHARS: usize = 10;
pub const MAX_JUSTIFICATION_CHARS: usize = 4000;

impl Policy {
    /// Checks the request's own fields; manifest findings come from [`Policy::check_objects`].
    pub fn check_fields(&self, fields: &RequestFields<'_>) -> Vec<Finding> {
        let mut findings = Vec::new();
        if self.cloud_run.is_some() {
            if !fields.namespace.is_empty() {
                findings.push(Finding::new(
                    "",
                    "namespace",
                    format!(
                        "{} was given, but Cloud Run services have no namespace (target {}); leave it out",
                        quoted(fields.namespace),
                        self.target
                    ),
                ));
            }
        } else if !self.namespaces.iter().any(|n| n == fields.namespace) {
            findings.push(Finding::new(
                "",
                "namespace",
                format!(
                    "{} is not open to breakglass on target {} (allowed: {})",
                    quoted(fields.namespace),
                    self.target,
                    self.namespaces.join(", ")
                ),
            ));
        }
        if fields.ticket.chars().count() > MAX_TICKET_CHARS {
            findings.push(Finding::new(
                "",
                "ticket",
                format!("is longer than {MAX_TICKET_CHARS} characters"),
            ));
        } else if !self.ticket_pattern.is_match(fields.ticket) {
            findings.push(Finding::new(
                "",
                "ticket",
                format!(
                    "{} does not match the ticket pattern {} of target {}",
                    quoted(fields.ticket),
                    self.ticket_pattern_source,
                    self.target
                ),
            ));
        }
        let justification = fields.justification.trim().chars().count();
        if justification < MIN_JUSTIFICATION_CHARS {
            findings.push(Finding::new(
                "",
                "justification",
                format!("must say why, in at least {MIN_JUSTIFICATION_CHARS} characters"),
            ));
        } else if justification > MAX_JUSTIFICATION_CHARS {
            findings.push(Finding::new(
                "",
                "justification",
                format!("must be at most {MAX_JUSTIFICATION_CHARS} characters"),
            ));
        }
        let max_minutes = self.max_duration.as_secs() / 60;
        if fields.duration_minutes == 0 || fields.duration_minutes > max_minutes {
            findings.push(Finding::new(
                "",
                "duration_minutes",
                format!(
                    "{} is not between 1 and {} minutes (target {} allows at most {})",
                    fields.duration_minutes,
                    max_minutes,
                    self.target,
                    humantime::format_duration(self.max_duration),
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
        if let Some(run) = &self.cloud_run {
            return self.check_service(run, object, findings);
        }
        if !self.check_kind(object, findings) {
            return;
        }
        let label = object.label();
        check_all_metadata(&label, "", &object.body, findings);
        check_lifetime(&label, "metadata", &object.body["metadata"], findings);
        let template_path = template_path(&object.kind).unwrap_or_default();
        let Some((_, template)) = pod_template(object) else {
            findings.push(Finding::new(
                label,
                template_path,
                format!(
                    "is missing or not a mapping; a {} runs its pods from this template",
                    object.kind
                ),
            ));
            return;
        };
        if !template_path.is_empty() {
            check_lifetime(
                &label,
                &format!("{template_path}.metadata"),
                &template["metadata"],
                findings,
            );
        }
        let spec_path = join(template_path, "spec");
        match template.get("spec") {
            Some(spec @ Value::Object(_)) => {
                self.check_pod_spec(&label, &spec_path, spec, findings)
            }
            _ => findings.push(Finding::new(
                label,
                spec_path,
                "is missing or not a mapping; it says what the pod runs",
            )),
        }
    }

    /// Whether the object's kind is one this target accepts, in the version it accepts it.
    fn check_kind(&self, object: &Object, findings: &mut Vec<Finding>) -> bool {
        if self
            .kinds
            .iter()
            .any(|k| k.kind == object.kind && k.api_version == object.api_version)
        {
            return true;
        }
        let label = object.label();
        if let Some(known) = self.kinds.iter().find(|k| k.kind == object.kind) {
            findings.push(Finding::new(
                label,
                "apiVersion",
                format!(
                    "{} is not accepted for {} on target {} (write apiVersion: {})",
                    quoted(&object.api_version),
                    object.kind,
                    self.target,
                    known.api_version
                ),
            ));
        } else {
            let allowed: Vec<&str> = self.kinds.iter().map(|k| k.kind.as_str()).collect();
            findings.push(Finding::new(
                label,
                "kind",
                format!(
                    "{} may not be requested on target {} (allowed: {})",
                    quoted(&object.kind),
                    self.target,
                    allowed.join(", ")
                ),
            ));
        }
        false
    }
}

/// The Cloud Run (Admin API v1) breakglass annotation; refused in manifests like the others.
pub const CLOUD_RUN_BREAKGLASS_ANNOTATION: &str =
    "run.googleapis.com/binary-authorization-breakglass";

/// Keys only the broker may set: its own prefix and every breakglass switch. Compared without
/// regard to case, so that no spelling slips past and reaches an API server that is lenient.
pub fn is_reserved_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.starts_with(BROKER_PREFIX)
        || key.starts_with(super::cloud_run::LABEL_PREFIX)
        || key == BREAKGLASS_LABEL
        || key == BREAKGLASS_ANNOTATION
        || key == CLOUD_RUN_BREAKGLASS_ANNOTATION
}

/// Checks every `metadata` mapping in the object (the object's own, pod and job templates,
/// volume claim templates): labels and annotations must be strings, and none may be the
/// broker's.
fn check_all_metadata(label: &str, path: &str, value: &Value, findings: &mut Vec<Finding>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = join(path, key);
                if key == "metadata" && child.is_object() {
                    check_metadata(label, &child_path, child, findings);
                }
                check_all_metadata(label, &child_path, child, findings);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_all_metadata(label, &format!("{path}[{i}]"), item, findings);
            }
        }
        _ => {}
    }
}

fn check_metadata(label: &str, path: &str, metadata: &Value, findings: &mut Vec<Finding>) {
    let Some(metadata) = metadata.as_object() else {
        return;
    };
    for field in ["labels", "annotations"] {
        let field_path = format!("{path}.{field}");
        let map = match metadata.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(map)) => map,
            Some(_) => {
                findings.push(Finding::new(
                    label,
                    field_path,
                    "must be a mapping of strings to strings",
                ));
                continue;
            }
        };
        for (key, value) in map {
            let key_path = format!("{field_path}[{key:?}]");
            if is_reserved_key(key) {
                findings.push(Finding::new(
                    label,
                    key_path,
                    "is set by the broker itself; remove it from the manifest",
                ));
            } else if !value.is_string() {
                findings.push(Finding::new(
                    label,
                    key_path,
                    format!(
                        "is {}; {field} must be strings (quote the value)",
                        shown(value)
                    ),
                ));
            }
        }
    }
}

/// Refuses metadata that would let something other than the broker decide when an object
/// goes away: the undo at the end must be able to delete exactly what the broker created.
fn check_lifetime(label: &str, path: &str, metadata: &Value, findings: &mut Vec<Finding>) {
    if !metadata.is_object() && !metadata.is_null() {
        findings.push(Finding::new(label, path, "must be a mapping"));
        return;
    }
    let reasons = [
        (
            "finalizers",
            "is set; a finalizer could keep the breakglass workload after its time is up",
        ),
        (
            "ownerReferences",
            "is set; another object would own this one and decide when it goes away",
        ),
    ];
    for (field, why) in reasons {
        match metadata.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if items.is_empty() => {}
            Some(_) => findings.push(Finding::new(label, format!("{path}.{field}"), why)),
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
        // A Cloud Run service, the only kind named Service a target accepts.
        "Service" => Some("spec.template"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest::{Limits, normalize, parse};

    fn policy() -> Policy {
        Policy {
            target: "prod-gke".into(),
            namespaces: vec!["payments".into()],
            kinds: default_kinds(),
            images: ImagePolicy {
                registries: vec!["us-docker.pkg.dev/acme/".into()],
                require_digest: true,
            },
            pods: PodPolicy::default(),
            cloud_run: None,
            max_duration: Duration::from_secs(4 * 3600),
            ticket_pattern: Regex::new("^(?:INC-[0-9]+)$").expect("regex"),
            ticket_pattern_source: "INC-[0-9]+".into(),
        }
    }

    fn findings(manifest: &str) -> Vec<String> {
        let docs = parse(manifest, &Limits::default()).expect("parses");
        let objects = normalize(docs, "payments").expect("normalizes");
        policy()
            .check_objects(&objects)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_tag_instead_of_a_digest_is_refused_naming_object_path_and_rule() {
        let found = findings(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  template:\n    spec:\n      automountServiceAccountToken: false\n      containers: [{name: api, image: \"us-docker.pkg.dev/acme/api:latest\"}]\n",
        );
        assert_eq!(
            found,
            vec![
                "Deployment/api: spec.template.spec.containers[0].image \"us-docker.pkg.dev/acme/api:latest\" is not pinned by digest (target prod-gke requires digests)"
            ]
        );
    }

    #[test]
    fn broker_keys_are_refused_in_any_spelling_and_any_metadata() {
        assert!(is_reserved_key("image-policy.k8s.io/break-glass"));
        assert!(is_reserved_key("Image-Policy.K8s.io/Break-Glass"));
        assert!(is_reserved_key("breakglass-broker.io/anything"));
        assert!(is_reserved_key(CLOUD_RUN_BREAKGLASS_ANNOTATION));
        assert!(!is_reserved_key("app.kubernetes.io/name"));
        let found = findings(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  volumeClaimTemplates:\n  - metadata: {name: data, labels: {breakglass-broker.io/ticket: x}}\n  template:\n    spec:\n      automountServiceAccountToken: false\n      containers: [{name: db, image: \"us-docker.pkg.dev/acme/db@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7\"}]\n",
        );
        assert_eq!(
            found,
            vec![
                "StatefulSet/db: spec.volumeClaimTemplates[0].metadata.labels[\"breakglass-broker.io/ticket\"] is set by the broker itself; remove it from the manifest"
            ]
        );
    }

    #[test]
    fn a_known_kind_in_another_version_is_told_the_version_to_write() {
        let found = findings("apiVersion: batch/v1beta1\nkind: CronJob\nmetadata: {name: c}\n");
        assert_eq!(
            found,
            vec![
                "CronJob/c: apiVersion \"batch/v1beta1\" is not accepted for CronJob on target prod-gke (write apiVersion: batch/v1)"
            ]
        );
    }

    #[test]
    fn request_fields_are_checked_against_the_target() {
        let found: Vec<String> = policy()
            .check_fields(&RequestFields {
                namespace: "kube-system",
                ticket: "INC-1\nINC-2",
                justification: " short ",
                duration_minutes: 241,
            })
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            vec![
                "namespace \"kube-system\" is not open to breakglass on target prod-gke (allowed: payments)",
                "ticket \"INC-1\\nINC-2\" does not match the ticket pattern INC-[0-9]+ of target prod-gke",
                "justification must say why, in at least 10 characters",
                "duration_minutes 241 is not between 1 and 240 minutes (target prod-gke allows at most 4h)",
            ]
        );
    }

    const IMAGE: &str = "us-docker.pkg.dev/acme/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

    /// A pod spec every guardrail passes, as a YAML flow mapping.
    fn pod_spec() -> String {
        format!(
            "{{automountServiceAccountToken: false, containers: [{{name: api, image: \"{IMAGE}\"}}]}}"
        )
    }

    fn fields_findings(ticket: &str, justification: &str, duration_minutes: u64) -> Vec<String> {
        policy()
            .check_fields(&RequestFields {
                namespace: "payments",
                ticket,
                justification,
                duration_minutes,
            })
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn request_fields_are_accepted_up_to_each_bound_and_refused_past_it() {
        let why = "checkout is down; hotfix";
        assert_eq!(fields_findings("INC-1", why, 240), Vec::<String>::new());
        assert_eq!(fields_findings("INC-1", why, 1), Vec::<String>::new());
        assert_eq!(
            fields_findings("INC-1", why, 0),
            vec![
                "duration_minutes 0 is not between 1 and 240 minutes (target prod-gke allows at most 4h)"
            ]
        );
        let longest_ticket = format!("INC-{}", "1".repeat(MAX_TICKET_CHARS - 4));
        assert_eq!(
            fields_findings(&longest_ticket, why, 60),
            Vec::<String>::new()
        );
        assert_eq!(
            fields_findings(&format!("{longest_ticket}1"), why, 60),
            vec!["ticket is longer than 200 characters"]
        );
        let shortest = "x".repeat(MIN_JUSTIFICATION_CHARS);
        assert_eq!(
            fields_findings("INC-1", &shortest, 60),
            Vec::<String>::new()
        );
        let longest = "x".repeat(MAX_JUSTIFICATION_CHARS);
        assert_eq!(fields_findings("INC-1", &longest, 60), Vec::<String>::new());
        assert_eq!(
            fields_findings("INC-1", &format!("{longest}x"), 60),
            vec!["justification must be at most 4000 characters"]
        );
    }

    #[test]
    fn kinds_outside_the_list_are_refused_naming_the_allowed_ones() {
        let found = findings("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n");
        assert_eq!(
            found,
            vec![
                "Secret/s: kind \"Secret\" may not be requested on target prod-gke (allowed: Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod)"
            ]
        );
        assert!(
            !default_kinds().iter().any(|k| k.kind == "ReplicaSet"),
            "ReplicaSet is only ever added by a target"
        );
    }

    #[test]
    fn a_pod_a_cron_job_and_a_deployment_are_each_checked_where_their_pod_is() {
        let pod = findings(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{hostPID: true, automountServiceAccountToken: false, containers: [{{name: a, image: \"{IMAGE}\"}}]}}\n"
        ));
        assert_eq!(
            pod,
            vec!["Pod/p: spec.hostPID is true; pods may not share the node's process namespace"]
        );
        let cron = findings(&format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: c}}\nspec:\n  schedule: \"* * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec: {{hostPID: true, automountServiceAccountToken: false, containers: [{{name: a, image: \"{IMAGE}\"}}]}}\n"
        ));
        assert_eq!(
            cron,
            vec![
                "CronJob/c: spec.jobTemplate.spec.template.spec.hostPID is true; pods may not share the node's process namespace"
            ]
        );
        assert_eq!(
            findings(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n"
            ),
            vec![
                "Deployment/d: spec.template is missing or not a mapping; a Deployment runs its pods from this template"
            ]
        );
        assert_eq!(
            findings(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {metadata: {labels: {app: d}}}}\n"
            ),
            vec![
                "Deployment/d: spec.template.spec is missing or not a mapping; it says what the pod runs"
            ]
        );
    }

    #[test]
    fn finalizers_and_owners_are_refused_on_the_object_and_its_template_but_empty_lists_pass() {
        let deployment = |metadata: &str, template_metadata: &str| {
            findings(&format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {metadata}\nspec:\n  template:\n    metadata: {template_metadata}\n    spec: {}\n",
                pod_spec()
            ))
        };
        assert_eq!(
            deployment(
                "{name: d, finalizers: [], ownerReferences: []}",
                "{finalizers: []}"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            deployment(
                "{name: d, finalizers: [x/y]}",
                "{ownerReferences: [{kind: ReplicaSet}]}"
            ),
            vec![
                "Deployment/d: metadata.finalizers is set; a finalizer could keep the breakglass workload after its time is up",
                "Deployment/d: spec.template.metadata.ownerReferences is set; another object would own this one and decide when it goes away",
            ]
        );
        assert_eq!(
            deployment("{name: d}", "[x]"),
            vec!["Deployment/d: spec.template.metadata must be a mapping"]
        );
        // A Pod is its own template: its metadata is checked once.
        let pod = findings(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, finalizers: [x/y]}}\nspec: {}\n",
            pod_spec()
        ));
        assert_eq!(
            pod,
            vec![
                "Pod/p: metadata.finalizers is set; a finalizer could keep the breakglass workload after its time is up"
            ]
        );
    }

    #[test]
    fn labels_and_annotations_must_be_mappings_of_strings() {
        let found = findings(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d, labels: {{app: d, replicas: 3}}, annotations: [x]}}\nspec:\n  template:\n    metadata: {{annotations: {{owner: \"team\", on: yes}}}}\n    spec: {}\n",
            pod_spec()
        ));
        assert_eq!(
            found,
            vec![
                "Deployment/d: metadata.labels[\"replicas\"] is 3; labels must be strings (quote the value)",
                "Deployment/d: metadata.annotations must be a mapping of strings to strings",
                "Deployment/d: spec.template.metadata.annotations[\"on\"] is true; annotations must be strings (quote the value)",
            ]
        );
    }

    #[test]
    fn the_images_of_a_pod_are_those_of_every_container_list() {
        let docs = parse(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          initContainers: [{name: i, image: init}]\n          containers: [{name: a, image: app}, {name: b}]\n          ephemeralContainers: [{name: e, image: debug}]\n",
            &Limits::default(),
        )
        .expect("parses");
        let objects = normalize(docs, "payments").expect("normalizes");
        assert_eq!(images(&objects[0]), vec!["init", "app", "debug"]);
    }

    #[test]
    fn a_finding_says_only_the_parts_it_has() {
        assert_eq!(Finding::new("", "", "too big").to_string(), "too big");
        assert_eq!(
            Finding::new("", "ticket", "is empty").to_string(),
            "ticket is empty"
        );
        assert_eq!(
            Finding::new("Pod/p", "", "is odd").to_string(),
            "Pod/p: is odd"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_described_not_repeated() {
        use serde_json::json;
        assert_eq!(
            [
                json!(null),
                json!(true),
                json!(1),
                json!("s"),
                json!([1]),
                json!({"a": 1})
            ]
            .iter()
            .map(kind_of)
            .collect::<Vec<_>>(),
            [
                "null",
                "a boolean",
                "a number",
                "a string",
                "a list",
                "a mapping"
            ]
        );
        assert_eq!(not_a_string(&json!([1])), "is a list; it must be a string");
    }

    #[test]
    fn quoted_text_is_cut_short() {
        assert_eq!(quoted("abc"), "\"abc\"");
        assert!(quoted(&"x".repeat(10_000)).len() < 100);
        assert_eq!(shown(&serde_json::json!(3)), "3");
    }
}
