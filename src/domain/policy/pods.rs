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
    use super::*;

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
