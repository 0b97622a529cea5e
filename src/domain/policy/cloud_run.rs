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

/// The fields a request may write, level by level, in the Admin API v2's own camelCase. Any
/// other key is refused: another spelling the API may also accept (`invoker_iam_disabled`), a
/// setting of the whole service (which the end would not put back), or a field this broker
/// does not know; so nothing reaches the service that these checks did not read.
const SERVICE_FIELDS: [&str; 1] = ["template"];
const OBJECT_FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];
const METADATA_FIELDS: [&str; 3] = ["name", "labels", "annotations"];
const TEMPLATE_FIELDS: [&str; 2] = ["metadata", "spec"];
const TEMPLATE_METADATA_FIELDS: [&str; 2] = ["labels", "annotations"];
const REVISION_FIELDS: [&str; 17] = [
    "revision",
    "scaling",
    "vpcAccess",
    "timeout",
    "serviceAccount",
    "containers",
    "volumes",
    "executionEnvironment",
    "encryptionKey",
    "maxInstanceRequestConcurrency",
    "serviceMesh",
    "encryptionKeyRevocationAction",
    "encryptionKeyShutdownDuration",
    "sessionAffinity",
    "healthCheckDisabled",
    "nodeSelector",
    "gpuZonalRedundancyDisabled",
];
const CONTAINER_FIELDS: [&str; 13] = [
    "name",
    "image",
    "baseImageUri",
    "command",
    "args",
    "env",
    "resources",
    "ports",
    "volumeMounts",
    "workingDir",
    "livenessProbe",
    "startupProbe",
    "dependsOn",
];
const ENV_FIELDS: [&str; 3] = ["name", "value", "valueSource"];
const VALUE_SOURCE_FIELDS: [&str; 1] = ["secretKeyRef"];
const SECRET_KEY_REF_FIELDS: [&str; 2] = ["secret", "version"];
const VOLUME_FIELDS: [&str; 6] = [
    "name",
    "secret",
    "cloudSqlInstance",
    "emptyDir",
    "nfs",
    "gcs",
];

/// Refuses every key of `value` (a mapping at `path`) that is not in `known`, saying why.
fn only_known(label: &str, path: &str, value: &Value, known: &[&str], findings: &mut Vec<Finding>) {
    let Some(map) = value.as_object() else {
        return;
    };
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        findings.push(Finding::new(
            label,
            at,
            format!(
                "is not a field a breakglass may write here (it may write: {}; fields are spelled as the Cloud Run Admin API v2 spells them)",
                known.join(", ")
            ),
        ));
    }
}

/// [`only_known`] on each mapping of a list at `path`.
fn each_only_known(
    label: &str,
    path: &str,
    list: Option<&Value>,
    known: &[&str],
    findings: &mut Vec<Finding>,
) {
    for (i, item) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        only_known(label, &format!("{path}[{i}]"), item, known, findings);
    }
}

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
        only_known(&label, "", &object.body, &OBJECT_FIELDS, findings);
        if let Some(metadata) = object.body.get("metadata") {
            only_known(&label, "metadata", metadata, &METADATA_FIELDS, findings);
        }
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
        if let Some(fields) = spec.as_object() {
            for key in fields.keys() {
                let known = SERVICE_FIELDS.contains(&key.as_str());
                let said = FORBIDDEN.iter().any(|(field, _)| field == key);
                if !known && !said {
                    findings.push(Finding::new(
                        &label,
                        format!("spec.{key}"),
                        "is a setting of the whole service, which would outlive the breakglass; a breakglass changes only spec.template (the revision), and the service keeps its own settings",
                    ));
                }
            }
        }
        if let Some(template) = spec.get("template") {
            only_known(
                &label,
                "spec.template",
                template,
                &TEMPLATE_FIELDS,
                findings,
            );
            if let Some(metadata) = template.get("metadata") {
                only_known(
                    &label,
                    "spec.template.metadata",
                    metadata,
                    &TEMPLATE_METADATA_FIELDS,
                    findings,
                );
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
        only_known(label, path, template, &REVISION_FIELDS, findings);
        let containers_at = format!("{path}.containers");
        each_only_known(
            label,
            &containers_at,
            template.get("containers"),
            &CONTAINER_FIELDS,
            findings,
        );
        for (i, container) in template
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let env_at = format!("{containers_at}[{i}].env");
            each_only_known(label, &env_at, container.get("env"), &ENV_FIELDS, findings);
            for (j, env) in container
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(source) = env.get("valueSource") {
                    let at = format!("{env_at}[{j}].valueSource");
                    only_known(label, &at, source, &VALUE_SOURCE_FIELDS, findings);
                    if let Some(secret) = source.get("secretKeyRef") {
                        only_known(
                            label,
                            &format!("{at}.secretKeyRef"),
                            secret,
                            &SECRET_KEY_REF_FIELDS,
                            findings,
                        );
                    }
                }
            }
        }
        each_only_known(
            label,
            &format!("{path}.volumes"),
            template.get("volumes"),
            &VOLUME_FIELDS,
            findings,
        );
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
    fn another_spelling_or_a_setting_of_the_whole_service_is_refused() {
        let refused = |extra: &str| findings(&service("checkout", IMAGE, extra));
        for (extra, field) in [
            (
                "  invoker_iam_disabled: true\n",
                "spec.invoker_iam_disabled",
            ),
            (
                "  binary_authorization: {breakglass_justification: x}\n",
                "spec.binary_authorization",
            ),
            ("  scaling: {minInstanceCount: 3}\n", "spec.scaling"),
            ("  customAudiences: [x]\n", "spec.customAudiences"),
            ("  description: left behind\n", "spec.description"),
        ] {
            let found = refused(extra);
            assert!(
                found
                    .iter()
                    .any(|f| f.contains(&format!("Service/checkout: {field} "))),
                "{extra}: {found:?}"
            );
        }
        let snake = "apiVersion: run.googleapis.com/v2\nkind: Service\nmetadata: {name: checkout}\nspec:\n  template:\n    spec:\n      serviceAccount: ACCOUNT\n      service_account: owner@x.iam.gserviceaccount.com\n      containers:\n      - image: \"IMAGE\"\n        env: [{name: K, value_source: {secret_key_ref: {secret: projects/x/secrets/y}}}]\n"
            .replace("ACCOUNT", ACCOUNT)
            .replace("IMAGE", IMAGE);
        let found = findings(&snake);
        for field in [
            "spec.template.spec.service_account",
            "spec.template.spec.containers[0].env[0].value_source",
        ] {
            assert!(
                found
                    .iter()
                    .any(|f| f.contains(&format!("{field} is not a field"))),
                "{field}: {found:?}"
            );
        }
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
