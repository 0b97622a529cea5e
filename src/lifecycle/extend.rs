//! Extending a running breakglass without a gap: the requester files an extension, a request
//! of its own for the same objects, ticket and target, approved again under the target's rules
//! within its own window (which closes no later than the breakglass ends). Approved in time, it
//! moves the end of the breakglass it extends and ends as `granted`; it never holds or applies
//! the objects itself, so the apply worker never sees it and nothing is undone in between. Not
//! approved in time, it lapses, and the breakglass ends as planned.
//!
//! Extensions are the one exception to "one breakglass per object": the objects stay held by
//! the breakglass they extend.

use serde::Deserialize;
use serde_json::json;

use super::{Actor, Change, Lifecycle, LifecycleError, Limit, RequestForm, RequestRef};
use crate::clock::rfc3339;
use crate::domain::manifest::Object;
use crate::domain::state::check_extendable;
use crate::domain::{AuditAction, Person, State};
use crate::store::{NewRequest, Request, Store};

/// What the requester asks for: how much longer, and why.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendForm {
    pub minutes: u64,
    pub justification: String,
}

impl Lifecycle {
    /// Files an extension of the active breakglass `id` for its requester: `pending` until the
    /// target's approvals are in again.
    pub async fn extend(
        &self,
        caller: &Person,
        id: &str,
        form: ExtendForm,
    ) -> Result<Request, LifecycleError> {
        self.require_requester(caller)?;
        self.require_recording().await?;
        self.count(caller, Limit::Filing)?;
        let (mut change, original) = self.lock_visible(caller, id).await?;
        if original.requester_subject != caller.subject {
            return Err(LifecycleError::Forbidden(format!(
                "only the requester, {}, can extend this breakglass",
                original.requester_name
            )));
        }
        if let Some(extended) = &original.extends {
            return Err(LifecycleError::Conflict(format!(
                "this request is an extension; extend the breakglass itself, request {extended}"
            )));
        }
        check_extendable(original.state).map_err(LifecycleError::Conflict)?;
        let now = self.clock.now();
        let ends = original.expires_at.unwrap_or(now);
        if original.end_requested.is_some() || ends <= now {
            return Err(LifecycleError::Conflict(
                "this breakglass is ending now; file a new request if it is still needed".into(),
            ));
        }
        let entry = self
            .targets
            .get(&original.target)
            .map_err(|e| LifecycleError::Conflict(e.to_string()))?;
        let target = &entry.config;
        let extensions = Store::extensions_in(change.tx(), id).await?;
        if let Some(waiting) = extensions.iter().find(|e| e.state == State::Pending) {
            return Err(LifecycleError::Conflict(format!(
                "extension request {} (/requests/{}) still waits for approval; cancel it or wait for its decision",
                waiting.id, waiting.id
            )));
        }
        let granted = extensions
            .iter()
            .filter(|e| e.state == State::Granted)
            .count();
        if granted >= target.max_extensions as usize {
            return Err(LifecycleError::Conflict(format!(
                "this breakglass was extended {granted} times; target {} allows at most {}",
                target.name, target.max_extensions
            )));
        }
        // The same objects, ticket and target, checked against the policy as it is now: an
        // image the policy no longer allows is not kept running longer.
        let request_form = RequestForm {
            target: original.target.clone(),
            namespace: original.namespace.clone(),
            manifest: original.manifest.clone(),
            ticket: original.ticket.clone(),
            justification: form.justification.clone(),
            duration_minutes: form.minutes,
            ..RequestForm::default()
        };
        let checked = self.check(&request_form)?;
        let window = i64::try_from(target.approval_window.as_millis()).unwrap_or(i64::MAX);
        let new = NewRequest {
            id: uuid::Uuid::now_v7().to_string(),
            target: original.target.clone(),
            namespace: original.namespace.clone(),
            ticket: original.ticket.clone(),
            justification: form.justification.clone(),
            requester_issuer: caller.issuer.clone(),
            requester_subject: caller.subject.clone(),
            requester_name: caller.name.clone(),
            manifest: original.manifest.clone(),
            objects: original.objects.clone(),
            duration_seconds: i64::try_from(form.minutes.saturating_mul(60)).unwrap_or(i64::MAX),
            digest: checked.digest.clone(),
            created_at: now,
            // Approved after the breakglass ended, it could only start a new one: its window
            // closes when the breakglass ends at the latest.
            decide_by: now.saturating_add(window).min(ends),
            extends: Some(original.id.clone()),
        };
        Store::insert_request(change.tx(), &new).await?;
        let reference = RequestRef {
            id: &new.id,
            ticket: &new.ticket,
            target: &new.target,
            namespace: &new.namespace,
        };
        let actor = Actor::Person(caller);
        change
            .record(
                reference,
                actor,
                AuditAction::Created,
                json!({
                    "digest": new.digest,
                    "objects": checked.objects.iter().map(Object::label).collect::<Vec<_>>(),
                    "duration_minutes": form.minutes,
                    "justification": form.justification,
                    "approval_rule": checked.rule,
                    "extends": original.id,
                }),
            )
            .await?;
        change
            .record(
                RequestRef::from(&original),
                actor,
                AuditAction::ExtensionRequested,
                json!({
                    "extension": new.id,
                    "minutes": form.minutes,
                    "justification": form.justification,
                    "expires_at": rfc3339(ends),
                }),
            )
            .await?;
        change.commit().await?;
        // Its window's end is a deadline the workers must learn of.
        self.wake(&new.id);
        self.reload(&new.id).await
    }

    /// In the approval that completes an extension's rule: moves the end of the breakglass it
    /// extends and ends the extension as `granted`, in the same transaction. Refused when that
    /// breakglass no longer runs (or is ending), so an extension never starts a new one.
    /// Returns the extension as it now is.
    pub(super) async fn grant(
        &self,
        change: &mut Change,
        extension: &Request,
        original_id: &str,
        actor: Actor<'_>,
    ) -> Result<Option<Request>, LifecycleError> {
        let original = Store::lock_request(change.tx(), original_id)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        let now = self.clock.now();
        let ends = original.expires_at.filter(|at| *at > now);
        let (State::Active, None, Some(ends)) = (original.state, &original.end_requested, ends)
        else {
            return Err(LifecycleError::Conflict(format!(
                "the breakglass this extends, request {original_id}, has ended or is ending; this extension can no longer be granted"
            )));
        };
        let new_end = ends.saturating_add(extension.duration_seconds.saturating_mul(1000));
        Store::move_expiry(change.tx(), original_id, new_end).await?;
        let granted = change
            .transition(
                RequestRef::from(extension),
                actor,
                AuditAction::ExtensionGranted,
                json!({ "extends": original_id, "expires_at": rfc3339(new_end) }),
            )
            .await?;
        change
            .record(
                RequestRef::from(&original),
                actor,
                AuditAction::Extended,
                json!({
                    "extension": extension.id,
                    "previous_expires_at": rfc3339(ends),
                    "expires_at": rfc3339(new_end),
                }),
            )
            .await?;
        Ok(granted)
    }
}
