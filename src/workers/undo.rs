//! Ending an active request: delete what the broker created, restore what it changed, and
//! never clobber a change someone else made since.

use serde_json::{Value, json};

use super::Worker;
use super::lease::Lease;
use crate::domain::stamp::REQUEST_ID;
use crate::domain::{AuditAction, State};
use crate::lifecycle::{Actor, RequestRef};
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
        let target = match self.target(&request.target) {
            Ok(target) => target,
            Err(message) => return self.retry_later(lease, request.attempts, &message).await,
        };
        // A refusal (RBAC, validation, an unreadable record) will not heal by retrying: the
        // request goes to a person instead of sitting active past its expiry.
        let (conflicts, refusal) = match self.undo_objects(&request, &*target, &lease).await {
            Ok(conflicts) => (conflicts, None),
            Err(e) if e.is_transient() => {
                return self
                    .retry_later(lease, request.attempts, &e.to_string())
                    .await;
            }
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let Some((mut change, locked)) = lease.lock(&self.lifecycle, State::Active).await? else {
            return Ok(());
        };
        let problem = match (&refusal, conflicts.is_empty()) {
            (Some(refused), _) => Some(format!("the undo was refused: {refused}")),
            (None, false) => Some(format!(
                "changed by someone else since the broker applied it: {}",
                conflicts.join(", ")
            )),
            (None, true) => None,
        };
        let action = match (&problem, locked.end_requested.as_deref()) {
            (Some(_), _) => AuditAction::NeedsAttention,
            (None, Some(_)) => AuditAction::Closed,
            (None, None) => AuditAction::Expired,
        };
        if let Some(message) = &problem {
            Store::record_error(change.tx(), &request.id, message).await?;
            tracing::error!(request_id = %request.id, %message, "undo did not finish; needs attention");
        }
        change
            .transition(
                RequestRef::from(&locked),
                Actor::Broker,
                action,
                json!({ "conflicts": conflicts, "error": refusal }),
            )
            .await?;
        change.commit().await
    }

    /// Undoes every recorded object, last first. Returns the objects left alone because
    /// someone else changed them; stops at the first transient failure, and before any write
    /// once the lease may have passed to another worker.
    pub(super) async fn undo_objects(
        &self,
        request: &Request,
        target: &dyn Target,
        lease: &Lease,
    ) -> Result<Vec<String>, TargetError> {
        let recorded = self
            .store
            .applied_objects(&request.id)
            .await
            .map_err(|e| TargetError::Unavailable(e.to_string()))?;
        // What the broker applied, rebuilt exactly, to tell its own object from someone else's
        // when the version moved (controllers write status all the time).
        let objects = request.objects().map_err(TargetError::Refused)?;
        let applied = match request.expires_at {
            Some(at) => self
                .stamped_bodies(request, &objects, at)
                .await
                .map_err(|e| TargetError::Unavailable(e.to_string()))?,
            None => Vec::new(),
        };
        let mut conflicts = Vec::new();
        for object in recorded.iter().rev() {
            if !lease.held() {
                return Err(TargetError::Unavailable(
                    "the lease on this request ran out; another replica takes over".into(),
                ));
            }
            let reference = object.object_ref();
            let ours = usize::try_from(object.position)
                .ok()
                .and_then(|p| applied.get(p));
            let result = match (&object.before_apply, &object.applied_version) {
                // Never applied (a rollback after a refusal part-way): nothing of ours is there.
                (_, None) => Ok(()),
                // Gone already (NotFound) counts as deleted: a takeover after a crash repeats this.
                (None, Some(version)) => match target.delete(&reference, Some(version)).await {
                    Err(TargetError::Conflict(message)) => {
                        match still_ours(target, &reference, ours, &request.id).await? {
                            Some(live_version) => {
                                target.delete(&reference, Some(&live_version)).await
                            }
                            None => Err(TargetError::Conflict(message)),
                        }
                    }
                    other => other,
                },
                (Some(before), Some(version)) => {
                    let before: Value = serde_json::from_str(before).map_err(|e| {
                        TargetError::Refused(format!("recorded state unreadable: {e}"))
                    })?;
                    match restore(target, &reference, &before, version).await {
                        Err(TargetError::Conflict(message)) => {
                            match still_ours(target, &reference, ours, &request.id).await? {
                                Some(live_version) => {
                                    restore(target, &reference, &before, &live_version).await
                                }
                                None => Err(TargetError::Conflict(message)),
                            }
                        }
                        other => other,
                    }
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
    target: &dyn Target,
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

/// The live object's version, if it is still what the broker applied: its request label and
/// every field of the applied spec unchanged. Fields the server added (defaults, status) and
/// metadata others touched do not make it someone else's; a changed image or replica count does.
async fn still_ours(
    target: &dyn Target,
    reference: &ObjectRef,
    applied: Option<&Value>,
    request_id: &str,
) -> Result<Option<String>, TargetError> {
    let (Some(applied), Some(live)) = (applied, target.get(reference).await?) else {
        return Ok(None);
    };
    let labelled = live.pointer(&format!(
        "/metadata/labels/{}",
        REQUEST_ID.replace('/', "~1")
    )) == Some(&Value::String(request_id.to_owned()));
    let unchanged = contains(&live["spec"], &applied["spec"]);
    let version = live
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(version.filter(|_| labelled && unchanged))
}

/// Whether `live` holds everything in `applied`: objects may have more keys, lists must match
/// element by element, scalars must be equal.
fn contains(live: &Value, applied: &Value) -> bool {
    match (live, applied) {
        (Value::Object(live), Value::Object(applied)) => applied
            .iter()
            .all(|(k, v)| live.get(k).is_some_and(|l| contains(l, v))),
        (Value::Array(live), Value::Array(applied)) => {
            live.len() == applied.len() && live.iter().zip(applied).all(|(l, a)| contains(l, a))
        }
        (live, applied) => live == applied,
    }
}

/// Same spec, labels and annotations: what a restore puts back.
fn reads_as(live: &Value, before: &Value) -> bool {
    ["/spec", "/metadata/labels", "/metadata/annotations"]
        .iter()
        .all(|p| live.pointer(p) == before.pointer(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_defaults_do_not_hide_the_brokers_spec_but_changes_do() {
        let applied = json!({ "replicas": 1, "template": { "spec": { "containers": [{ "name": "a", "image": "x" }] } } });
        let defaulted = json!({
            "replicas": 1, "revisionHistoryLimit": 10,
            "template": { "spec": { "containers": [{ "name": "a", "image": "x", "imagePullPolicy": "IfNotPresent" }], "dnsPolicy": "ClusterFirst" } }
        });
        assert!(contains(&defaulted, &applied));
        let scaled = json!({ "replicas": 5, "template": { "spec": { "containers": [{ "name": "a", "image": "x" }] } } });
        assert!(!contains(&scaled, &applied));
        let swapped = json!({ "replicas": 1, "template": { "spec": { "containers": [{ "name": "a", "image": "y" }] } } });
        assert!(!contains(&swapped, &applied));
        let sidecar = json!({ "replicas": 1, "template": { "spec": { "containers": [{ "name": "a", "image": "x" }, { "name": "b", "image": "z" }] } } });
        assert!(!contains(&sidecar, &applied));
    }
}
