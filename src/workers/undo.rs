//! Ending an active request: delete what the broker created, restore what it changed, and
//! never clobber a change someone else made since.

use serde_json::{Value, json};

use super::lease::Lease;
use super::{Worker, commit};
use crate::domain::State;
use crate::store::{Request, Store, StoreError};
use crate::targets::{ObjectRef, Target, TargetError};

impl Worker {
    pub(super) async fn undo(&self, request: &Request) -> Result<(), StoreError> {
        let now = self.clock.now();
        let due = request.end_requested.is_some() || request.expires_at.is_some_and(|at| at <= now);
        if !due {
            return Ok(());
        }
        let Some(lease) = self.claim(&request.id, State::Active).await? else {
            return Ok(());
        };
        let request = match self.store.request(&request.id).await? {
            Some(request) if request.state == State::Active => request,
            _ => {
                lease.release().await;
                return Ok(());
            }
        };
        let Some(target) = self.target(&request.target) else {
            return self
                .retry_later(
                    lease,
                    request.attempts,
                    "target is not configured on this replica",
                )
                .await;
        };
        let conflicts = match self.undo_objects(&request, &target, &lease).await {
            Ok(conflicts) => conflicts,
            Err(e) => {
                return self
                    .retry_later(lease, request.attempts, &e.to_string())
                    .await;
            }
        };
        let mut tx = self.store.begin().await?;
        let Some(locked) = Store::lock_request(&mut tx, &request.id).await? else {
            return Ok(());
        };
        if locked.state != State::Active || locked.lease_owner.as_deref() != Some(lease.owner()) {
            return Ok(());
        }
        let (state, action) = match (conflicts.is_empty(), locked.end_requested.as_deref()) {
            (false, _) => (State::NeedsAttention, "request.needs_attention"),
            (true, Some(_)) => (State::Closed, "request.closed"),
            (true, None) => (State::Expired, "request.expired"),
        };
        if !conflicts.is_empty() {
            let message = format!(
                "changed by someone else since the broker applied it: {}",
                conflicts.join(", ")
            );
            Store::record_error(&mut tx, &request.id, &message).await?;
            tracing::error!(request_id = %request.id, %message, "undo left objects alone; needs attention");
        }
        Store::set_state(&mut tx, &request.id, state, self.clock.now()).await?;
        let event = self
            .event(&mut tx, &locked, action, json!({ "conflicts": conflicts }))
            .await?;
        commit(tx, vec![event]).await
    }

    /// Undoes every recorded object, last first. Returns the objects left alone because
    /// someone else changed them; stops at the first transient failure, and before any write
    /// once the lease may have passed to another worker.
    pub(super) async fn undo_objects(
        &self,
        request: &Request,
        target: &Target,
        lease: &Lease,
    ) -> Result<Vec<String>, TargetError> {
        let recorded = self
            .store
            .applied_objects(&request.id)
            .await
            .map_err(|e| TargetError::Unavailable(e.to_string()))?;
        let mut conflicts = Vec::new();
        for object in recorded.iter().rev() {
            if !lease.held() {
                return Err(TargetError::Unavailable(
                    "the lease on this request ran out; another replica takes over".into(),
                ));
            }
            let reference = ObjectRef {
                api_version: object.api_version.clone(),
                kind: object.kind.clone(),
                namespace: object.namespace.clone(),
                name: object.name.clone(),
            };
            let result = match (&object.before_apply, &object.applied_version) {
                // Never applied (a rollback after a refusal part-way): nothing of ours is there.
                (_, None) => Ok(()),
                // Gone already (NotFound) counts as deleted: a takeover after a crash repeats this.
                (None, Some(version)) => target.delete(&reference, Some(version)).await,
                (Some(before), Some(version)) => {
                    let before: Value = serde_json::from_str(before).map_err(|e| {
                        TargetError::Refused(format!("recorded state unreadable: {e}"))
                    })?;
                    restore(target, &reference, &before, version).await
                }
            };
            match result {
                Ok(()) => {}
                Err(TargetError::Conflict(_)) => {
                    conflicts.push(format!("{}/{}", object.kind, object.name))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(conflicts)
    }
}

/// Puts back what stood before, if the object is still at the version the broker left. An
/// object that already reads as it did before (restored by an earlier holder of the lease that
/// died before recording it) is done, not a conflict: restoring it again would change nothing.
async fn restore(
    target: &Target,
    reference: &ObjectRef,
    before: &Value,
    version: &str,
) -> Result<(), TargetError> {
    match target.restore(reference, before, version).await {
        Err(TargetError::NotFound) => Err(TargetError::Conflict("deleted by someone else".into())),
        Err(TargetError::Conflict(message)) => match target.get(reference).await? {
            Some(live) if reads_as(&live, before) => Ok(()),
            _ => Err(TargetError::Conflict(message)),
        },
        other => other,
    }
}

/// Same spec, labels and annotations: what a restore puts back.
fn reads_as(live: &Value, before: &Value) -> bool {
    ["/spec", "/metadata/labels", "/metadata/annotations"]
        .iter()
        .all(|p| live.pointer(p) == before.pointer(p))
}
