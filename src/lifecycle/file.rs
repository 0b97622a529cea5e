//! Filing a request: checked against its target's policy, stored with its digest, and
//! recorded, in one transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::images::{WorkloadRef, built_from};
use super::{Actor, Lifecycle, LifecycleError, Limit, RequestRef};
use crate::domain::approval;
use crate::domain::digest::{Subject, digest};
use crate::domain::manifest::{self, Object, ObjectRef, ParseError};
use crate::domain::policy::{Finding, RequestFields};
use crate::domain::{AuditAction, Person};
use crate::store::{NewRequest, Request, Store};

/// What an engineer asks for: a manifest, or a workload and the new images of some of its
/// containers (the broker builds the manifest from the live workload).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestForm {
    pub target: String,
    /// Omitted for Cloud Run, whose services have no namespace.
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub manifest: String,
    /// Instead of `manifest`: the workload whose images change.
    #[serde(default)]
    pub workload: Option<WorkloadRef>,
    /// With `workload`: container name (or, for an unnamed Cloud Run container, its place in
    /// the list) to its new image.
    #[serde(default)]
    pub images: Option<BTreeMap<String, String>>,
    pub ticket: String,
    pub justification: String,
    pub duration_minutes: u64,
}

/// A request checked against its target's policy, ready to be filed.
pub struct Checked {
    pub objects: Vec<Object>,
    pub digest: String,
    pub rule: String,
}

impl Lifecycle {
    /// Everything a request would be refused for, or the objects and digest if nothing.
    ///
    /// A manifest over the target's size limit is refused as too large before anything in it
    /// is read; every other refusal lists all its findings.
    pub fn check(&self, form: &RequestForm) -> Result<Checked, LifecycleError> {
        let entry = self.targets.get(&form.target).map_err(|unknown| {
            LifecycleError::Refused(vec![Finding::new("", "target", unknown.to_string())])
        })?;
        let target = &entry.config;
        let limits = target.limits();
        let too_large = |bytes: usize| {
            LifecycleError::TooLarge(format!(
                "manifest is {bytes} bytes; target {} accepts at most {} bytes",
                target.name, limits.max_bytes
            ))
        };
        if form.manifest.len() > limits.max_bytes {
            return Err(too_large(form.manifest.len()));
        }
        let duration = Duration::from_secs(form.duration_minutes.saturating_mul(60));
        let mut findings = entry.policy.check_fields(&RequestFields {
            namespace: &form.namespace,
            ticket: &form.ticket,
            justification: &form.justification,
            duration_minutes: form.duration_minutes,
        });
        let docs = match manifest::parse(&form.manifest, &limits) {
            Ok(docs) => docs,
            Err(ParseError::TooLarge { bytes, .. }) => return Err(too_large(bytes)),
            Err(ParseError::TooManyObjects { count, limit, more }) => {
                findings.push(Finding::new(
                    "",
                    "manifest",
                    format!(
                        "has {}{count} objects; target {} accepts at most {limit}",
                        if more { "more than " } else { "" },
                        target.name
                    ),
                ));
                return Err(LifecycleError::Refused(findings));
            }
            Err(problem) => {
                findings.push(Finding::new("", "manifest", problem.to_string()));
                return Err(LifecycleError::Refused(findings));
            }
        };
        let objects = match manifest::normalize(docs, &form.namespace) {
            Ok(objects) => objects,
            Err(more) => {
                findings.extend(more);
                return Err(LifecycleError::Refused(findings));
            }
        };
        findings.extend(entry.policy.check_objects(&objects));
        if !findings.is_empty() {
            return Err(LifecycleError::Refused(findings));
        }
        let digest = digest(&Subject {
            target: &form.target,
            namespace: &form.namespace,
            objects: &objects,
            duration_seconds: duration.as_secs(),
            ticket: &form.ticket,
        });
        Ok(Checked {
            objects,
            digest,
            rule: approval::describe(entry.rules()),
        })
    }

    /// What a request would be, for someone who may file one: the policy's answers name
    /// targets, namespaces and rules, which nobody else learns.
    pub async fn preview(
        &self,
        caller: &Person,
        form: &RequestForm,
    ) -> Result<Checked, LifecycleError> {
        self.require_requester(caller)?;
        let form = self.resolve(caller, form.clone()).await?;
        self.check(&form)
    }

    pub(super) fn require_requester(&self, caller: &Person) -> Result<(), LifecycleError> {
        if self.roles.may_file(caller) {
            Ok(())
        } else {
            Err(LifecycleError::Forbidden(format!(
                "filing breakglass requests needs membership in one of: {}",
                self.roles.requesters.join(", ")
            )))
        }
    }

    /// Files a request for someone with the requester role: `pending` until approved.
    pub async fn file(
        &self,
        caller: &Person,
        form: RequestForm,
    ) -> Result<Request, LifecycleError> {
        self.require_requester(caller)?;
        self.require_recording().await?;
        self.count(caller, Limit::Filing)?;
        self.check_reviewed(caller, &form.target).await?;
        let form = self.resolve(caller, form).await?;
        let checked = self.check(&form)?;
        let objects: Vec<ObjectRef> = checked.objects.iter().map(ObjectRef::from).collect();
        if let Some(holder) = self.store.holder(&form.target, &objects).await? {
            // Name the holder only to those who may see it.
            let visible = self
                .store
                .request(&holder)
                .await?
                .is_some_and(|r| self.may_see(caller, &r));
            return Err(if visible {
                super::decide::held_by(&holder)
            } else {
                LifecycleError::Conflict(
                    "an object of this request is held by another breakglass request until it ends; one breakglass per object".into(),
                )
            });
        }
        let target = &self
            .targets
            .get(&form.target)
            .map_err(|e| LifecycleError::Conflict(e.to_string()))?
            .config;
        let now = self.clock.now();
        let window = i64::try_from(target.approval_window.as_millis()).unwrap_or(i64::MAX);
        let new = NewRequest {
            id: uuid::Uuid::now_v7().to_string(),
            target: form.target.clone(),
            namespace: form.namespace.clone(),
            ticket: form.ticket.clone(),
            justification: form.justification.clone(),
            requester_issuer: caller.issuer.clone(),
            requester_subject: caller.subject.clone(),
            requester_name: caller.name.clone(),
            manifest: form.manifest.clone(),
            objects: serde_json::to_string(
                &checked.objects.iter().map(|o| &o.body).collect::<Vec<_>>(),
            )
            .map_err(anyhow::Error::from)?,
            duration_seconds: i64::try_from(form.duration_minutes.saturating_mul(60))
                .unwrap_or(i64::MAX),
            digest: checked.digest.clone(),
            created_at: now,
            decide_by: now.saturating_add(window),
            extends: None,
        };
        let mut change = self.begin().await?;
        Store::insert_request(change.tx(), &new).await?;
        let mut detail = json!({
            "digest": new.digest,
            "objects": checked.objects.iter().map(Object::label).collect::<Vec<_>>(),
            "duration_minutes": form.duration_minutes,
            "justification": form.justification,
            "approval_rule": checked.rule,
        });
        if let Some(built) = built_from(&form) {
            detail["built_from"] = built;
        }
        let reference = RequestRef {
            id: &new.id,
            ticket: &new.ticket,
            target: &new.target,
            namespace: &new.namespace,
        };
        change
            .record(
                reference,
                Actor::Person(caller),
                AuditAction::Created,
                detail,
            )
            .await?;
        change.commit().await?;
        // The approval window's end is a deadline the workers must learn of.
        self.wake(&new.id);
        self.store
            .request(&new.id)
            .await?
            .ok_or(LifecycleError::NotFound)
    }
}
