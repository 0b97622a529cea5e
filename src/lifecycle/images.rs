//! A request that names a workload and new images instead of a manifest: the broker reads
//! the live workload through its target and builds the manifest with
//! [`crate::domain::images`], which then goes through the same checks and digest as a pasted
//! one. Nothing is read that the target's policy would not let the request change: the
//! namespace, the kind and (on Cloud Run) the service are checked before the read.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Lifecycle, LifecycleError};
use crate::domain::Person;
use crate::domain::cloud_run::{API_VERSION, KIND};
use crate::domain::images::{Container, containers, with_images};
use crate::domain::manifest::{ObjectRef, is_dns_subdomain};
use crate::domain::policy::{Finding, RequestFields, quoted};
use crate::lifecycle::RequestForm;
use crate::targets::TargetError;

/// The workload a request changes the images of: `{kind, name}` in the request's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRef {
    pub kind: String,
    pub name: String,
}

/// A workload as it runs now, and its containers.
pub struct Workload {
    pub object: ObjectRef,
    pub containers: Vec<Container>,
}

fn refused(path: &str, message: impl Into<String>) -> LifecycleError {
    LifecycleError::Refused(vec![Finding::new("", path, message)])
}

impl Lifecycle {
    /// The form with its manifest built from the live workload when it names one, or as it
    /// came when it gives a manifest.
    pub(super) async fn resolve(
        &self,
        caller: &Person,
        mut form: RequestForm,
    ) -> Result<RequestForm, LifecycleError> {
        let Some(workload) = form.workload.clone() else {
            if form.images.is_some() {
                return Err(refused(
                    "images",
                    "needs workload: {\"kind\": ..., \"name\": ...} naming the workload whose images change",
                ));
            }
            if form.manifest.is_empty() {
                return Err(refused(
                    "manifest",
                    "is missing: give a manifest, or a workload and the new images of its containers",
                ));
            }
            return Ok(form);
        };
        if !form.manifest.trim().is_empty() {
            return Err(refused(
                "manifest",
                "was given together with workload: give either a manifest, or a workload and its new images",
            ));
        }
        let images = form.images.clone().unwrap_or_default();
        if images.is_empty() {
            return Err(refused(
                "images",
                "is empty: give the new image of at least one container, as {\"CONTAINER\": \"IMAGE\"}",
            ));
        }
        let (object, live) = self
            .read_workload(caller, &form.target, &form.namespace, &workload)
            .await?;
        let built = with_images(&live, &object, &images).map_err(LifecycleError::Refused)?;
        form.manifest = serde_json::to_string_pretty(&built).map_err(anyhow::Error::from)?;
        Ok(form)
    }

    /// What a workload of a target runs now, container by container, for someone who may
    /// file requests: the look-up step of the new-request page.
    pub async fn workload(
        &self,
        caller: &Person,
        target: &str,
        namespace: &str,
        workload: &WorkloadRef,
    ) -> Result<Workload, LifecycleError> {
        self.require_requester(caller)?;
        let (object, live) = self
            .read_workload(caller, target, namespace, workload)
            .await?;
        Ok(Workload {
            containers: containers(&live, &object.kind),
            object,
        })
    }

    /// Reads the live workload, once the policy allows a request to change it.
    ///
    /// The broker reads with its own rights, which the caller may not have, and what it reads
    /// (environment values, commands, annotations) becomes part of the request that the
    /// requester, the approvers and auditors see; so every read is logged with who asked.
    async fn read_workload(
        &self,
        caller: &Person,
        target: &str,
        namespace: &str,
        workload: &WorkloadRef,
    ) -> Result<(ObjectRef, Value), LifecycleError> {
        let entry = self
            .targets
            .get(target)
            .map_err(|unknown| refused("target", unknown.to_string()))?;
        let policy = &entry.policy;
        let mut findings: Vec<Finding> = policy
            .check_fields(&RequestFields {
                namespace,
                ticket: "",
                justification: "",
                duration_minutes: 0,
            })
            .into_iter()
            .filter(|f| f.path == "namespace")
            .collect();
        if !is_dns_subdomain(&workload.name) {
            findings.push(Finding::new(
                "",
                "workload.name",
                if workload.name.is_empty() {
                    "is missing: name the workload whose images change".to_owned()
                } else {
                    format!("{} is not a valid name", quoted(&workload.name))
                },
            ));
        }
        let api_version = match &policy.cloud_run {
            Some(run) => {
                if workload.kind != KIND {
                    findings.push(Finding::new(
                        "",
                        "workload.kind",
                        format!(
                            "{} may not be requested on target {target}: it takes Cloud Run services (kind: {KIND})",
                            quoted(&workload.kind)
                        ),
                    ));
                }
                if is_dns_subdomain(&workload.name) && !run.services.contains(&workload.name) {
                    findings.push(Finding::new(
                        "",
                        "workload.name",
                        format!(
                            "{} is not a service breakglass may change on target {target} (allowed: {})",
                            quoted(&workload.name),
                            run.services.join(", ")
                        ),
                    ));
                }
                API_VERSION.to_owned()
            }
            None => match policy.kinds.iter().find(|k| k.kind == workload.kind) {
                Some(known) => known.api_version.clone(),
                None => {
                    let allowed: Vec<&str> = policy.kinds.iter().map(|k| k.kind.as_str()).collect();
                    findings.push(Finding::new(
                        "",
                        "workload.kind",
                        format!(
                            "{} may not be requested on target {target} (allowed: {})",
                            quoted(&workload.kind),
                            allowed.join(", ")
                        ),
                    ));
                    String::new()
                }
            },
        };
        if !findings.is_empty() {
            return Err(LifecycleError::Refused(findings));
        }
        let object = ObjectRef {
            api_version,
            kind: workload.kind.clone(),
            namespace: namespace.to_owned(),
            name: workload.name.clone(),
        };
        tracing::info!(
            target_name = target,
            object = %object,
            actor = %caller.name,
            issuer = %caller.issuer,
            subject = %caller.subject,
            "reading a workload for an images-only request"
        );
        match entry.client.get(&object).await {
            Ok(Some(live)) => Ok((object, live)),
            Ok(None) | Err(TargetError::NotFound) => Err(refused(
                "workload",
                format!("{object} was not found on target {target}"),
            )),
            Err(e) => {
                tracing::warn!(target_name = target, object = %object, error = %e, "reading a workload failed");
                Err(LifecycleError::Unavailable(format!(
                    "{object} could not be read from target {target} just now ({e}); nothing was filed, try again shortly"
                )))
            }
        }
    }
}

/// The images a form gives, as the audit records them.
pub(super) fn built_from(form: &RequestForm) -> Option<Value> {
    let workload = form.workload.as_ref()?;
    let images: &BTreeMap<String, String> = form.images.as_ref()?;
    Some(serde_json::json!({
        "workload": format!("{}/{}", workload.kind, workload.name),
        "images": images,
    }))
}
