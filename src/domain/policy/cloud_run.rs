//! Guardrails on a Cloud Run service a request would change: only listed services, images
//! from the allowed registries pinned by digest, only listed runtime service accounts, and
//! nothing of the service's exposure (ingress, IAM) or of the breakglass itself.

use serde_json::Value;

use super::{Finding, Policy, check_all_metadata, kind_of, quoted};
use crate::domain::cloud_run::{API_VERSION, KIND, is_service};
use crate::domain::manifest::Object;

/// What a Cloud Run target lets a breakglass touch.
#[derive(Clone, Debug, Default)]
pub struct CloudRunPolicy {
    /// The services a request may name.
    pub services: Vec<String>,
    /// The runtime service accounts (emails) a revision may run as.
    pub service_accounts: Vec<String>,
}

/// Service fields a breakglass may not set, and why: the broker keeps what the service has.
pub const FORBIDDEN: [(&str, &str); 6] = [
    (
        "ingress",
        "may not be changed in a breakglass; leave it out and the service keeps its own",
    ),
    (
        "invokerIamDisabled",
        "would change who may call the service (IAM); a breakglass may not",
    ),
    (
        "iapEnabled",
        "would change who may call the service (IAM); a breakglass may not",
    ),
    (
        "defaultUriDisabled",
        "would change how the service is reached; a breakglass may not",
    ),
    (
        "binaryAuthorization",
        "is set by the broker itself (the breakglass justification); remove it",
    ),
    (
        "traffic",
        "may not be set: the breakglass revision serves the service's traffic while it lasts",
    ),
];

impl Policy {
    /// Checks one object on a Cloud Run target.
    pub(super) fn check_service(
        &self,
        run: &CloudRunPolicy,
        object: &Object,
        findings: &mut Vec<Finding>,
    ) {
        let label = object.label();
        if !is_service(&object.api_version, &object.kind) {
            findings.push(Finding::new(
                label,
                "kind",
                format!(
                    "{} {} may not be requested on target {}: it takes Cloud Run services (apiVersion: {API_VERSION}, kind: {KIND})",
                    object.api_version,
                    object.kind,
                    self.target
                ),
            ));
            return;
        }
        if !run.services.contains(&object.name) {
            findings.push(Finding::new(
                &label,
                "metadata.name",
                format!(
                    "{} is not a service breakglass may change on target {} (allowed: {})",
                    quoted(&object.name),
                    self.target,
                    run.services.join(", ")
                ),
            ));
        }
        check_all_metadata(&label, "", &object.body, findings);
        let Some(spec) = object.body.get("spec").filter(|s| s.is_object()) else {
            findings.push(Finding::new(
                label,
                "spec",
                "is missing or not a mapping; it holds the revision template",
            ));
            return;
        };
        for (field, why) in FORBIDDEN {
            if spec.get(field).is_some_and(|v| !v.is_null()) {
                findings.push(Finding::new(&label, format!("spec.{field}"), why));
            }
        }
        let Some(template) = spec.pointer("/template/spec").filter(|t| t.is_object()) else {
            findings.push(Finding::new(
                label,
                "spec.template.spec",
                "is missing or not a mapping; it says what the revision runs",
            ));
            return;
        };
        self.check_revision(run, &label, template, findings);
    }

    fn check_revision(
        &self,
        run: &CloudRunPolicy,
        label: &str,
        template: &Value,
        findings: &mut Vec<Finding>,
    ) {
        let path = "spec.template.spec";
        match template.get("serviceAccount") {
            Some(Value::String(account)) if run.service_accounts.contains(account) => {}
            Some(Value::String(account)) => findings.push(Finding::new(
                label,
                format!("{path}.serviceAccount"),
                format!(
                    "{} is not a service account breakglass may run as on target {} (allowed: {})",
                    quoted(account),
                    self.target,
                    run.service_accounts.join(", ")
                ),
            )),
            _ => findings.push(Finding::new(
                label,
                format!("{path}.serviceAccount"),
                "must name the service account the revision runs as (without it Cloud Run uses the project's default one)",
            )),
        }
        let containers = match template.get("containers") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) | None | Some(Value::Null) => {
                findings.push(Finding::new(
                    label,
                    format!("{path}.containers"),
                    "is empty; a revision needs at least one container",
                ));
                return;
            }
            Some(other) => {
                findings.push(Finding::new(
                    label,
                    format!("{path}.containers"),
                    format!("is {}; it must be a list of containers", kind_of(other)),
                ));
                return;
            }
        };
        for (i, container) in containers.iter().enumerate() {
            let at = format!("{path}.containers[{i}].image");
            match container.get("image") {
                Some(Value::String(image)) => self.check_image(label, &at, image, findings),
                _ => findings.push(Finding::new(label, at, "must be given as a string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use regex::Regex;

    use super::*;
    use crate::domain::manifest::{Limits, normalize, parse};
    use crate::domain::policy::{ImagePolicy, PodPolicy};

    const IMAGE: &str = "us-docker.pkg.dev/acme/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";
    const ACCOUNT: &str = "checkout@dev-project.iam.gserviceaccount.com";

    fn findings(manifest: &str) -> Vec<String> {
        let policy = Policy {
            target: "prod-run".into(),
            namespaces: Vec::new(),
            kinds: Vec::new(),
            images: ImagePolicy {
                registries: vec!["us-docker.pkg.dev/acme/".into()],
                require_digest: true,
            },
            pods: PodPolicy::default(),
            cloud_run: Some(CloudRunPolicy {
                services: vec!["checkout".into()],
                service_accounts: vec![ACCOUNT.into()],
            }),
            max_duration: Duration::from_secs(3600),
            ticket_pattern: Regex::new("^INC-[0-9]+$").expect("regex"),
            ticket_pattern_source: "INC-[0-9]+".into(),
        };
        let docs = parse(manifest, &Limits::default()).expect("parses");
        let objects = normalize(docs, "").expect("normalizes");
        policy
            .check_objects(&objects)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn service(name: &str, image: &str, extra: &str) -> String {
        format!(
            "apiVersion: run.googleapis.com/v2\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{extra}  template:\n    spec:\n      serviceAccount: {ACCOUNT}\n      containers: [{{image: \"{image}\"}}]\n"
        )
    }

    #[test]
    fn a_listed_service_with_a_pinned_image_and_listed_account_passes() {
        assert_eq!(
            findings(&service("checkout", IMAGE, "")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unlisted_services_ingress_and_unpinned_images_are_refused_by_name() {
        assert_eq!(
            findings(&service("billing", IMAGE, "")),
            [
                "Service/billing: metadata.name \"billing\" is not a service breakglass may change on target prod-run (allowed: checkout)"
            ]
        );
        assert_eq!(
            findings(&service(
                "checkout",
                IMAGE,
                "  ingress: INGRESS_TRAFFIC_ALL\n"
            )),
            [
                "Service/checkout: spec.ingress may not be changed in a breakglass; leave it out and the service keeps its own"
            ]
        );
        assert_eq!(
            findings(&service(
                "checkout",
                "us-docker.pkg.dev/acme/api:latest",
                ""
            )),
            [
                "Service/checkout: spec.template.spec.containers[0].image \"us-docker.pkg.dev/acme/api:latest\" is not pinned by digest (target prod-run requires digests)"
            ]
        );
        let other_account =
            service("checkout", IMAGE, "").replace(ACCOUNT, "owner@x.iam.gserviceaccount.com");
        assert_eq!(
            findings(&other_account),
            [
                "Service/checkout: spec.template.spec.serviceAccount \"owner@x.iam.gserviceaccount.com\" is not a service account breakglass may run as on target prod-run (allowed: checkout@dev-project.iam.gserviceaccount.com)"
            ]
        );
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: checkout}\n";
        assert_eq!(
            findings(deployment),
            [
                "Deployment/checkout: kind apps/v1 Deployment may not be requested on target prod-run: it takes Cloud Run services (apiVersion: run.googleapis.com/v2, kind: Service)"
            ]
        );
    }

    #[test]
    fn the_brokers_own_labels_and_justification_are_refused() {
        let found = findings(&service(
            "checkout",
            IMAGE,
            "  binaryAuthorization: {breakglassJustification: mine}\n",
        ));
        assert_eq!(
            found,
            [
                "Service/checkout: spec.binaryAuthorization is set by the broker itself (the breakglass justification); remove it"
            ]
        );
        let labelled = service("checkout", IMAGE, "").replace(
            "metadata: {name: checkout}",
            "metadata: {name: checkout, labels: {breakglass-broker-ticket: x}}",
        );
        assert_eq!(
            findings(&labelled),
            [
                "Service/checkout: metadata.labels[\"breakglass-broker-ticket\"] is set by the broker itself; remove it from the manifest"
            ]
        );
    }
}
