//! Guardrails on the pod a request would run, and on the images it would pull: what keeps a
//! breakglass workload from being a way onto the node or into another identity.

use serde_json::Value;

use super::{Finding, Policy, kind_of, not_a_string, quoted, shown};

/// The lists of containers a pod spec may hold; every one of them runs an image.
const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// The node namespaces a pod may ask to share, and what sharing each would expose.
const HOST_NAMESPACES: [(&str, &str); 3] = [
    ("hostNetwork", "network"),
    ("hostPID", "process"),
    ("hostIPC", "IPC"),
];

impl Policy {
    pub(super) fn check_pod_spec(
        &self,
        label: &str,
        path: &str,
        spec: &Value,
        findings: &mut Vec<Finding>,
    ) {
        for (flag, what) in HOST_NAMESPACES {
            let flag_path = format!("{path}.{flag}");
            match spec.get(flag) {
                None | Some(Value::Null | Value::Bool(false)) => {}
                Some(Value::Bool(true)) => findings.push(Finding::new(
                    label,
                    flag_path,
                    format!("is true; pods may not share the node's {what} namespace"),
                )),
                Some(other) => findings.push(not_a_boolean(label, flag_path, other)),
            }
        }
        self.check_volumes(label, path, spec, findings);
        self.check_service_account(label, path, spec, findings);
        self.check_automount(label, path, spec, findings);
        for list in CONTAINER_LISTS {
            let list_path = format!("{path}.{list}");
            let items = match spec.get(list) {
                Some(Value::Array(items)) => items.as_slice(),
                None | Some(Value::Null) => &[],
                Some(other) => {
                    findings.push(Finding::new(
                        label,
                        list_path,
                        format!("is {}; it must be a list of containers", kind_of(other)),
                    ));
                    continue;
                }
            };
            if list == "containers" && items.is_empty() {
                findings.push(Finding::new(
                    label,
                    list_path.clone(),
                    "is empty; a pod needs at least one container",
                ));
            }
            for (i, container) in items.iter().enumerate() {
                self.check_container(label, &format!("{list_path}[{i}]"), container, findings);
            }
        }
    }

    fn check_volumes(&self, label: &str, path: &str, spec: &Value, findings: &mut Vec<Finding>) {
        let volumes = match spec.get("volumes") {
            None | Some(Value::Null) => return,
            Some(Value::Array(volumes)) => volumes,
            Some(other) => {
                findings.push(Finding::new(
                    label,
                    format!("{path}.volumes"),
                    format!("is {}; it must be a list of volumes", kind_of(other)),
                ));
                return;
            }
        };
        for (i, volume) in volumes.iter().enumerate() {
            let volume_path = format!("{path}.volumes[{i}]");
            if volume.get("hostPath").is_some() {
                findings.push(Finding::new(
                    label,
                    format!("{volume_path}.hostPath"),
                    "mounts the node's filesystem, which is not allowed",
                ));
            }
            if self.pods.allow_automount_token {
                continue;
            }
            let sources = volume
                .pointer("/projected/sources")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (j, source) in sources.iter().enumerate() {
                if source.get("serviceAccountToken").is_some() {
                    findings.push(Finding::new(
                        label,
                        format!("{volume_path}.projected.sources[{j}].serviceAccountToken"),
                        format!(
                            "mounts a service account token (target {} does not allow service account tokens)",
                            self.target
                        ),
                    ));
                }
            }
        }
    }

    /// Both spellings are checked: `serviceAccount` is the deprecated alias, and whichever one
    /// the API server honours must be on the list.
    fn check_service_account(
        &self,
        label: &str,
        path: &str,
        spec: &Value,
        findings: &mut Vec<Finding>,
    ) {
        let allowed = self.pods.service_accounts.join(", ");
        let mut named = false;
        for field in ["serviceAccountName", "serviceAccount"] {
            let field_path = format!("{path}.{field}");
            match spec.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(account)) => {
                    named = true;
                    if !self.pods.service_accounts.iter().any(|a| a == account) {
                        findings.push(Finding::new(
                            label,
                            field_path,
                            format!(
                                "{} is not allowed on target {} (allowed: {allowed})",
                                quoted(account),
                                self.target
                            ),
                        ));
                    }
                }
                Some(other) => {
                    named = true;
                    findings.push(Finding::new(label, field_path, not_a_string(other)));
                }
            }
        }
        if !named && !self.pods.service_accounts.iter().any(|a| a == "default") {
            findings.push(Finding::new(
                label,
                format!("{path}.serviceAccountName"),
                format!(
                    "is not set, so the pod would run as \"default\", which target {} does not allow (allowed: {allowed})",
                    self.target
                ),
            ));
        }
    }

    /// A pod that says nothing gets the service account's token mounted, so "not allowed"
    /// means the manifest must say `false` itself.
    fn check_automount(&self, label: &str, path: &str, spec: &Value, findings: &mut Vec<Finding>) {
        let field_path = format!("{path}.automountServiceAccountToken");
        let value = spec.get("automountServiceAccountToken");
        if self.pods.allow_automount_token {
            if let Some(other) = value.filter(|v| !v.is_boolean() && !v.is_null()) {
                findings.push(not_a_boolean(label, field_path, other));
            }
            return;
        }
        let why = format!(
            "it must be false (target {} does not allow service account tokens)",
            self.target
        );
        match value {
            Some(Value::Bool(false)) => {}
            None | Some(Value::Null) => findings.push(Finding::new(
                label,
                field_path,
                format!("is not set; {why}"),
            )),
            Some(other) => findings.push(Finding::new(
                label,
                field_path,
                format!("is {}; {why}", shown(other)),
            )),
        }
    }

    fn check_container(
        &self,
        label: &str,
        path: &str,
        container: &Value,
        findings: &mut Vec<Finding>,
    ) {
        if !container.is_object() {
            findings.push(Finding::new(
                label,
                path,
                format!("is {}; a container must be a mapping", kind_of(container)),
            ));
            return;
        }
        let image_path = format!("{path}.image");
        match container.get("image") {
            Some(Value::String(image)) => self.check_image(label, &image_path, image, findings),
            None | Some(Value::Null) => findings.push(Finding::new(
                label,
                image_path,
                "is missing; every container must name its image",
            )),
            Some(other) => findings.push(Finding::new(label, image_path, not_a_string(other))),
        }
        if let Some(ports) = container.get("ports").and_then(Value::as_array) {
            for (i, port) in ports.iter().enumerate() {
                match port.get("hostPort") {
                    None | Some(Value::Null) => {}
                    Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
                    Some(other) => findings.push(Finding::new(
                        label,
                        format!("{path}.ports[{i}].hostPort"),
                        format!(
                            "is {}; binding a port on the node is not allowed",
                            shown(other)
                        ),
                    )),
                }
            }
        }
        let security_path = format!("{path}.securityContext");
        let security = match container.get("securityContext") {
            None | Some(Value::Null) => return,
            Some(security @ Value::Object(_)) => security,
            Some(other) => {
                findings.push(Finding::new(
                    label,
                    security_path,
                    format!("is {}; it must be a mapping", kind_of(other)),
                ));
                return;
            }
        };
        let privileged_path = format!("{security_path}.privileged");
        match security.get("privileged") {
            None | Some(Value::Null | Value::Bool(false)) => {}
            Some(Value::Bool(true)) => findings.push(Finding::new(
                label,
                privileged_path,
                "is true; privileged containers are not allowed",
            )),
            Some(other) => findings.push(not_a_boolean(label, privileged_path, other)),
        }
        self.check_capabilities(label, &security_path, security, findings);
    }

    /// Runtimes read capability names without regard to case or a `CAP_` prefix, so neither
    /// may be a way around the list.
    fn check_capabilities(
        &self,
        label: &str,
        path: &str,
        security: &Value,
        findings: &mut Vec<Finding>,
    ) {
        let add_path = format!("{path}.capabilities.add");
        let added = match security.pointer("/capabilities/add") {
            None | Some(Value::Null) => return,
            Some(Value::Array(added)) => added,
            Some(other) => {
                findings.push(Finding::new(
                    label,
                    add_path,
                    format!(
                        "is {}; it must be a list of capability names",
                        kind_of(other)
                    ),
                ));
                return;
            }
        };
        let allowed = self.pods.allowed_capabilities.join(", ");
        for (i, capability) in added.iter().enumerate() {
            let item_path = format!("{add_path}[{i}]");
            let Some(name) = capability.as_str() else {
                findings.push(Finding::new(
                    label,
                    item_path,
                    format!("is {}; it must be a capability name", kind_of(capability)),
                ));
                continue;
            };
            if !self
                .pods
                .allowed_capabilities
                .iter()
                .any(|c| bare_capability(c) == bare_capability(name))
            {
                let allowed = if allowed.is_empty() { "none" } else { &allowed };
                findings.push(Finding::new(
                    label,
                    item_path,
                    format!(
                        "{} is not allowed (target {} allows: {allowed})",
                        quoted(name),
                        self.target
                    ),
                ));
            }
        }
    }

    pub(super) fn check_image(
        &self,
        label: &str,
        path: &str,
        image: &str,
        findings: &mut Vec<Finding>,
    ) {
        if let Err(why) = check_reference(image) {
            findings.push(Finding::new(
                label,
                path,
                format!("{} is not a valid image reference ({why})", quoted(image)),
            ));
            return;
        }
        if !self.images.registries.is_empty()
            && !self
                .images
                .registries
                .iter()
                .any(|registry| from_registry(image, registry))
        {
            findings.push(Finding::new(
                label,
                path,
                format!(
                    "{} is not from an allowed registry (target {} allows {})",
                    quoted(image),
                    self.target,
                    self.images.registries.join(", ")
                ),
            ));
        }
        match image.split_once('@') {
            Some((_, digest)) if image_digest(image).is_none() => findings.push(Finding::new(
                label,
                path,
                format!(
                    "{} has a malformed digest {} (expected sha256: and 64 lower-case hex digits)",
                    quoted(image),
                    quoted(digest)
                ),
            )),
            None if self.images.require_digest => findings.push(Finding::new(
                label,
                path,
                format!(
                    "{} is not pinned by digest (target {} requires digests)",
                    quoted(image),
                    self.target
                ),
            )),
            _ => {}
        }
    }
}

/// `NET_ADMIN`, `net_admin` and `CAP_NET_ADMIN` name the same capability.
fn bare_capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned()
}

/// Whether `image` lives under `registry`, at a path boundary: `us-docker.pkg.dev/acme` does
/// not admit `us-docker.pkg.dev/acme-evil/x`.
fn from_registry(image: &str, registry: &str) -> bool {
    if registry.is_empty() {
        return false;
    }
    match image.strip_prefix(registry) {
        Some(rest) => registry.ends_with('/') || rest.starts_with('/'),
        None => false,
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

/// Checks the shape of `[registry[:port]/]path[:tag][@digest]` (the distribution reference
/// grammar, simplified), so that a registry prefix check is not fooled by an odd spelling.
fn check_reference(image: &str) -> Result<(), &'static str> {
    if image.is_empty() {
        return Err("it is empty");
    }
    if image.len() > 512 {
        return Err("it is longer than 512 characters");
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains spaces or control characters");
    }
    let name_and_tag = match image.split_once('@') {
        Some((_, digest)) if digest.contains('@') => return Err("it has more than one '@'"),
        Some((name, _)) => name,
        None => image,
    };
    let (name, tag) = match name_and_tag.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err("the tag may hold only letters, digits, '_', '.' and '-'");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && is_domain(parts[0]) {
        parts.remove(0);
    }
    let valid_path = parts.iter().all(|part| {
        !part.is_empty()
            && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && !part.contains("..")
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    });
    if valid_path {
        Ok(())
    } else {
        Err("each path part must be lower-case letters, digits and '.', '_' or '-' inside")
    }
}

/// The first part of a reference is a registry host when it looks like one.
fn is_domain(part: &str) -> bool {
    let (host, port) = match part.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (part, None),
    };
    (host.contains('.') || port.is_some() || host == "localhost")
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn not_a_boolean(label: &str, path: String, value: &Value) -> Finding {
    Finding::new(
        label,
        path,
        format!("is {}; it must be true or false", shown(value)),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use regex::Regex;
    use serde_json::json;

    use super::*;
    use crate::domain::policy::{ImagePolicy, PodPolicy, default_kinds};

    const IMAGE: &str = "us-docker.pkg.dev/acme/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

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
            max_duration: Duration::from_secs(3600),
            ticket_pattern: Regex::new("^INC-[0-9]+$").expect("regex"),
            ticket_pattern_source: "INC-[0-9]+".into(),
        }
    }

    /// A pod spec every guardrail passes: one container from the registry, pinned, no token.
    fn plain() -> Value {
        json!({
            "automountServiceAccountToken": false,
            "containers": [{ "name": "api", "image": IMAGE }],
        })
    }

    /// `plain()` with the top-level fields of `changes` replaced (null removes one).
    fn with(changes: Value) -> Value {
        let mut spec = plain();
        for (key, value) in changes.as_object().expect("a mapping") {
            if value.is_null() {
                spec.as_object_mut().expect("a mapping").remove(key);
            } else {
                spec[key] = value.clone();
            }
        }
        spec
    }

    /// `plain()` with the one container's fields of `changes` replaced.
    fn with_container(changes: Value) -> Value {
        let mut container = json!({ "name": "api", "image": IMAGE });
        for (key, value) in changes.as_object().expect("a mapping") {
            container[key] = value.clone();
        }
        with(json!({ "containers": [container] }))
    }

    fn check(policy: &Policy, spec: &Value) -> Vec<String> {
        let mut findings = Vec::new();
        policy.check_pod_spec("Pod/p", "spec", spec, &mut findings);
        findings.iter().map(ToString::to_string).collect()
    }

    /// Asserts each spec gives exactly the findings listed beside it.
    fn assert_findings(policy: &Policy, cases: &[(Value, &[&str])]) {
        for (spec, expected) in cases {
            assert_eq!(check(policy, spec), *expected, "spec: {spec}");
        }
    }

    #[test]
    fn a_plain_pod_spec_passes_every_guardrail() {
        assert_eq!(check(&policy(), &plain()), Vec::<String>::new());
    }

    #[test]
    fn sharing_a_node_namespace_is_refused_and_must_be_said_with_a_boolean() {
        assert_findings(
            &policy(),
            &[
                (
                    with(json!({ "hostNetwork": true })),
                    &[
                        "Pod/p: spec.hostNetwork is true; pods may not share the node's network namespace",
                    ],
                ),
                (
                    with(json!({ "hostPID": true })),
                    &[
                        "Pod/p: spec.hostPID is true; pods may not share the node's process namespace",
                    ],
                ),
                (
                    with(json!({ "hostIPC": true })),
                    &["Pod/p: spec.hostIPC is true; pods may not share the node's IPC namespace"],
                ),
                (with(json!({ "hostNetwork": false, "hostPID": false })), &[]),
                (
                    with(json!({ "hostNetwork": "yes" })),
                    &["Pod/p: spec.hostNetwork is \"yes\"; it must be true or false"],
                ),
            ],
        );
    }

    #[test]
    fn host_paths_and_projected_tokens_are_refused_in_volumes() {
        let token = json!({ "volumes": [
            { "name": "ok", "emptyDir": {} },
            { "name": "t", "projected": { "sources": [
                { "configMap": { "name": "c" } },
                { "serviceAccountToken": { "path": "token" } },
            ] } },
        ] });
        assert_findings(
            &policy(),
            &[
                (
                    with(json!({ "volumes": [{ "name": "h", "hostPath": { "path": "/" } }] })),
                    &[
                        "Pod/p: spec.volumes[0].hostPath mounts the node's filesystem, which is not allowed",
                    ],
                ),
                (
                    with(token.clone()),
                    &[
                        "Pod/p: spec.volumes[1].projected.sources[1].serviceAccountToken mounts a service account token (target prod-gke does not allow service account tokens)",
                    ],
                ),
                (
                    with(json!({ "volumes": "all" })),
                    &["Pod/p: spec.volumes is a string; it must be a list of volumes"],
                ),
            ],
        );
        let mut tokens_allowed = policy();
        tokens_allowed.pods.allow_automount_token = true;
        assert_eq!(check(&tokens_allowed, &with(token)), Vec::<String>::new());
    }

    #[test]
    fn either_service_account_field_must_name_an_allowed_account() {
        assert_findings(
            &policy(),
            &[
                (with(json!({ "serviceAccountName": "default" })), &[]),
                (
                    with(json!({ "serviceAccountName": "builder" })),
                    &[
                        "Pod/p: spec.serviceAccountName \"builder\" is not allowed on target prod-gke (allowed: default)",
                    ],
                ),
                (
                    with(json!({ "serviceAccount": "builder" })),
                    &[
                        "Pod/p: spec.serviceAccount \"builder\" is not allowed on target prod-gke (allowed: default)",
                    ],
                ),
                (
                    with(json!({ "serviceAccountName": 5 })),
                    &["Pod/p: spec.serviceAccountName is a number; it must be a string"],
                ),
            ],
        );
        let mut ci_only = policy();
        ci_only.pods.service_accounts = vec!["ci".into()];
        assert_findings(
            &ci_only,
            &[
                (
                    plain(),
                    &[
                        "Pod/p: spec.serviceAccountName is not set, so the pod would run as \"default\", which target prod-gke does not allow (allowed: ci)",
                    ],
                ),
                (with(json!({ "serviceAccountName": "ci" })), &[]),
                (
                    with(json!({ "serviceAccount": true })),
                    &[
                        "Pod/p: spec.serviceAccount is the boolean true; it must be a string (YAML reads yes, no, on and off as booleans: quote them)",
                    ],
                ),
            ],
        );
    }

    #[test]
    fn without_tokens_allowed_a_pod_must_turn_automounting_off_itself() {
        assert_findings(
            &policy(),
            &[
                (
                    with(json!({ "automountServiceAccountToken": null })),
                    &[
                        "Pod/p: spec.automountServiceAccountToken is not set; it must be false (target prod-gke does not allow service account tokens)",
                    ],
                ),
                (
                    with(json!({ "automountServiceAccountToken": true })),
                    &[
                        "Pod/p: spec.automountServiceAccountToken is true; it must be false (target prod-gke does not allow service account tokens)",
                    ],
                ),
            ],
        );
        let mut tokens_allowed = policy();
        tokens_allowed.pods.allow_automount_token = true;
        assert_findings(
            &tokens_allowed,
            &[
                (with(json!({ "automountServiceAccountToken": true })), &[]),
                (with(json!({ "automountServiceAccountToken": null })), &[]),
                (
                    with(json!({ "automountServiceAccountToken": "yes" })),
                    &[
                        "Pod/p: spec.automountServiceAccountToken is \"yes\"; it must be true or false",
                    ],
                ),
            ],
        );
    }

    #[test]
    fn every_container_list_is_checked_and_a_pod_needs_a_container() {
        let tagged = json!([{ "name": "x", "image": "us-docker.pkg.dev/acme/x:1" }]);
        assert_findings(
            &policy(),
            &[
                (
                    with(json!({ "containers": [] })),
                    &["Pod/p: spec.containers is empty; a pod needs at least one container"],
                ),
                (with(json!({ "initContainers": [] })), &[]),
                (
                    with(json!({ "containers": "api" })),
                    &["Pod/p: spec.containers is a string; it must be a list of containers"],
                ),
                (
                    with(json!({ "initContainers": tagged })),
                    &[
                        "Pod/p: spec.initContainers[0].image \"us-docker.pkg.dev/acme/x:1\" is not pinned by digest (target prod-gke requires digests)",
                    ],
                ),
                (
                    with(json!({ "ephemeralContainers": tagged })),
                    &[
                        "Pod/p: spec.ephemeralContainers[0].image \"us-docker.pkg.dev/acme/x:1\" is not pinned by digest (target prod-gke requires digests)",
                    ],
                ),
                (
                    with(json!({ "containers": ["api"] })),
                    &["Pod/p: spec.containers[0] is a string; a container must be a mapping"],
                ),
            ],
        );
    }

    #[test]
    fn a_container_must_name_its_image_as_a_string() {
        assert_findings(
            &policy(),
            &[
                (
                    with(json!({ "containers": [{ "name": "api" }] })),
                    &[
                        "Pod/p: spec.containers[0].image is missing; every container must name its image",
                    ],
                ),
                (
                    with_container(json!({ "image": 5 })),
                    &["Pod/p: spec.containers[0].image is a number; it must be a string"],
                ),
            ],
        );
    }

    #[test]
    fn a_host_port_other_than_zero_is_refused() {
        assert_findings(
            &policy(),
            &[
                (
                    with_container(
                        json!({ "ports": [{ "containerPort": 80 }, { "hostPort": 0 }, { "hostPort": null }] }),
                    ),
                    &[],
                ),
                (
                    with_container(
                        json!({ "ports": [{ "containerPort": 80 }, { "hostPort": 8080 }] }),
                    ),
                    &[
                        "Pod/p: spec.containers[0].ports[1].hostPort is 8080; binding a port on the node is not allowed",
                    ],
                ),
                (
                    with_container(json!({ "ports": [{ "hostPort": "80" }] })),
                    &[
                        "Pod/p: spec.containers[0].ports[0].hostPort is \"80\"; binding a port on the node is not allowed",
                    ],
                ),
            ],
        );
    }

    #[test]
    fn privileged_containers_are_refused() {
        assert_findings(
            &policy(),
            &[
                (
                    with_container(json!({ "securityContext": { "privileged": false } })),
                    &[],
                ),
                (
                    with_container(json!({ "securityContext": { "privileged": true } })),
                    &[
                        "Pod/p: spec.containers[0].securityContext.privileged is true; privileged containers are not allowed",
                    ],
                ),
                (
                    with_container(json!({ "securityContext": { "privileged": "true" } })),
                    &[
                        "Pod/p: spec.containers[0].securityContext.privileged is \"true\"; it must be true or false",
                    ],
                ),
                (
                    with_container(json!({ "securityContext": "privileged" })),
                    &[
                        "Pod/p: spec.containers[0].securityContext is a string; it must be a mapping",
                    ],
                ),
            ],
        );
    }

    #[test]
    fn only_allowed_capabilities_may_be_added_in_any_spelling() {
        let add = |added: Value| {
            with_container(json!({ "securityContext": { "capabilities": { "add": added } } }))
        };
        assert_findings(
            &policy(),
            &[
                (
                    add(json!(["net_bind_service", "CAP_NET_BIND_SERVICE"])),
                    &[],
                ),
                (
                    add(json!(["NET_BIND_SERVICE", "cap_net_admin"])),
                    &[
                        "Pod/p: spec.containers[0].securityContext.capabilities.add[1] \"cap_net_admin\" is not allowed (target prod-gke allows: NET_BIND_SERVICE)",
                    ],
                ),
                (
                    add(json!("NET_ADMIN")),
                    &[
                        "Pod/p: spec.containers[0].securityContext.capabilities.add is a string; it must be a list of capability names",
                    ],
                ),
                (
                    add(json!([7])),
                    &[
                        "Pod/p: spec.containers[0].securityContext.capabilities.add[0] is a number; it must be a capability name",
                    ],
                ),
            ],
        );
        let mut none = policy();
        none.pods.allowed_capabilities = Vec::new();
        assert_findings(
            &none,
            &[(
                add(json!(["NET_BIND_SERVICE"])),
                &[
                    "Pod/p: spec.containers[0].securityContext.capabilities.add[0] \"NET_BIND_SERVICE\" is not allowed (target prod-gke allows: none)",
                ],
            )],
        );
    }

    #[test]
    fn images_must_come_from_an_allowed_registry_pinned_by_a_well_formed_digest() {
        let image = |image: &str| with_container(json!({ "image": image }));
        assert_findings(
            &policy(),
            &[
                (
                    image("nginx:latest"),
                    &[
                        "Pod/p: spec.containers[0].image \"nginx:latest\" is not from an allowed registry (target prod-gke allows us-docker.pkg.dev/acme/)",
                        "Pod/p: spec.containers[0].image \"nginx:latest\" is not pinned by digest (target prod-gke requires digests)",
                    ],
                ),
                (
                    image("us-docker.pkg.dev/acme/api@sha256:abc"),
                    &[
                        "Pod/p: spec.containers[0].image \"us-docker.pkg.dev/acme/api@sha256:abc\" has a malformed digest \"sha256:abc\" (expected sha256: and 64 lower-case hex digits)",
                    ],
                ),
                (
                    image("us-docker.pkg.dev/acme/my api"),
                    &[
                        "Pod/p: spec.containers[0].image \"us-docker.pkg.dev/acme/my api\" is not a valid image reference (it contains spaces or control characters)",
                    ],
                ),
            ],
        );
        let mut open = policy();
        open.images = ImagePolicy {
            registries: Vec::new(),
            require_digest: false,
        };
        assert_findings(
            &open,
            &[
                (image("nginx:latest"), &[]),
                (
                    image("nginx@sha256:abc"),
                    &[
                        "Pod/p: spec.containers[0].image \"nginx@sha256:abc\" has a malformed digest \"sha256:abc\" (expected sha256: and 64 lower-case hex digits)",
                    ],
                ),
            ],
        );
    }

    #[test]
    fn a_digest_is_sha256_and_exactly_64_lower_case_hex_digits() {
        let hex = "8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";
        assert_eq!(
            image_digest(&format!("x@sha256:{hex}")),
            Some(format!("sha256:{hex}").as_str())
        );
        for bad in [
            format!("x:sha256:{hex}"),
            format!("x@sha512:{hex}"),
            format!("x@sha256:{}", &hex[1..]),
            format!("x@sha256:{hex}0"),
            format!("x@sha256:{}g", &hex[1..]),
            format!("x@sha256:{}F", &hex[1..]),
            format!("x@sha256:{}/", &hex[1..]),
        ] {
            assert_eq!(image_digest(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_reference_names_what_is_wrong_with_its_shape() {
        let cases: [(String, &str); 9] = [
            ("x".repeat(513), "it is longer than 512 characters"),
            (
                "api\u{7}".into(),
                "it contains spaces or control characters",
            ),
            ("a@sha256:00@x".into(), "it has more than one '@'"),
            (
                format!("api:{}", "1".repeat(129)),
                "the tag may hold only letters, digits, '_', '.' and '-'",
            ),
            (
                "api:.x".into(),
                "the tag may hold only letters, digits, '_', '.' and '-'",
            ),
            (
                "api:a+b".into(),
                "the tag may hold only letters, digits, '_', '.' and '-'",
            ),
            (
                "team/api-".into(),
                "each path part must be lower-case letters, digits and '.', '_' or '-' inside",
            ),
            (
                "team/_api".into(),
                "each path part must be lower-case letters, digits and '.', '_' or '-' inside",
            ),
            (
                "team/a+pi".into(),
                "each path part must be lower-case letters, digits and '.', '_' or '-' inside",
            ),
        ];
        for (image, why) in &cases {
            assert_eq!(check_reference(image), Err(*why), "{image}");
        }
        for good in [
            "x".repeat(512),
            format!("api:{}", "1".repeat(128)),
            "api:v1_2.3-rc".into(),
            "0team/a.b_c-d9/x".into(),
            "registry.example:5000/team/api".into(),
            "localhost/team/api".into(),
            "host:5000/api:tag".into(),
        ] {
            assert_eq!(check_reference(&good), Ok(()), "{good}");
        }
    }

    #[test]
    fn only_a_first_part_that_looks_like_a_host_is_taken_for_a_registry() {
        for host in [
            "registry.example",
            "localhost",
            "localhost:5000",
            "r-1.example:443",
            "a.b.c",
        ] {
            assert!(is_domain(host), "{host}");
        }
        for not_host in [
            "team",
            "Team.example:x",
            "registry.example:",
            ".example",
            "example.",
            "-r.example",
            "r-.example",
            "r_x.example",
            ":5000",
            "host:50a0",
        ] {
            assert!(!is_domain(not_host), "{not_host}");
        }
        // A first part that is not a host must itself be a valid path part, and so must a
        // lone part however much it looks like a host (it names an image, not a registry).
        assert!(check_reference("Team/api").is_err());
        assert_eq!(check_reference("Registry.example/api"), Ok(()));
        assert!(check_reference("Registry.example").is_err());
    }

    #[test]
    fn registries_match_only_at_a_path_boundary() {
        assert!(from_registry(
            "us-docker.pkg.dev/acme/api",
            "us-docker.pkg.dev/acme"
        ));
        assert!(from_registry(
            "us-docker.pkg.dev/acme/api",
            "us-docker.pkg.dev/acme/"
        ));
        assert!(!from_registry(
            "us-docker.pkg.dev/acme-evil/api",
            "us-docker.pkg.dev/acme"
        ));
        assert!(!from_registry(
            "us-docker.pkg.dev.evil.example/x",
            "us-docker.pkg.dev"
        ));
        assert!(!from_registry("anything/at/all", ""));
    }

    #[test]
    fn capability_names_compare_without_case_or_prefix() {
        assert_eq!(bare_capability("cap_sys_admin"), "SYS_ADMIN");
        assert_eq!(bare_capability(" NET_RAW "), "NET_RAW");
        assert_eq!(bare_capability("CAP_NET_BIND_SERVICE"), "NET_BIND_SERVICE");
    }

    #[test]
    fn image_references_are_checked_for_shape() {
        let digest = "@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";
        for good in [
            "nginx",
            "nginx:1.27",
            "localhost:5000/team/app:v1",
            &format!("us-docker.pkg.dev/acme/hotfix/api{digest}"),
            &format!("us-docker.pkg.dev/acme/api:1.2{digest}"),
        ] {
            assert_eq!(check_reference(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "us-docker.pkg.dev/acme//api",
            "us-docker.pkg.dev/acme/../api",
            "us-docker.pkg.dev/Acme/api",
            "api:",
            "api:-x",
            "a@b@sha256:00",
            "api latest",
        ] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(
            image_digest(&format!("x{digest}")),
            digest.strip_prefix('@')
        );
        assert_eq!(image_digest("x@sha256:ABC"), None);
    }
}
