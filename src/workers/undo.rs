//! Ending a breakglass: nothing outlives its approval. Each object the broker applied is
//! deleted (it created it) or gets its prior pod template back (it existed), while the
//! breakglass still runs on it; once others replaced it with their own images, only the
//! broker's stamps go ([`crate::domain::end`] decides). Every write is made at the version the
//! broker just read, so nobody's concurrent change is overwritten unseen.

use serde_json::{Value, json};

use super::Worker;
use super::lease::Lease;
use crate::domain::end::{self, EndAction};
use crate::domain::{AuditAction, State};
use crate::lifecycle::{Actor, RequestRef};
use crate::store::{Request, Store, StoreError};
use crate::targets::{ObjectRef, Target, TargetError};

/// How many times the end is tried against an unreachable or failing cluster before a person
/// is called (with backoff that is about ten minutes).
const UNDO_ATTEMPTS: i64 = 10;
/// How many times one object is read again and its end planned again when someone wrote it
/// between the broker's read and its write.
const RACES: usize = 5;

/// What the end did to one object, for the audit event.
pub(super) struct Outcome {
    object: String,
    did: &'static str,
    changed_by_others: Vec<String>,
}

impl Outcome {
    fn to_json(&self) -> Value {
        json!({
            "object": self.object,
            "did": self.did,
            "changed_by_others": self.changed_by_others,
        })
    }
}

impl Worker {
    /// Ends a breakglass that is due (expired, or closed by a person), or runs the end again
    /// for a request that needs attention when a person asked to end it.
    pub(super) async fn undo(&self, request: &Request) -> Result<(), StoreError> {
        let state = request.state;
        let due = |request: &Request| {
            request.end_requested.is_some()
                || (state == State::Active
                    && request.expires_at.is_some_and(|at| at <= self.clock.now()))
        };
        if !due(request) {
            return Ok(());
        }
        // Read again under the lease: an extension granted meanwhile moved the end.
        let Some((lease, request)) = self.claim(&request.id, state).await? else {
            return Ok(());
        };
        if !due(&request) {
            lease.release().await;
            return Ok(());
        }
        let target = match self.target(&request.target) {
            Ok(target) => target,
            Err(message) => return self.retry_later(lease, request.attempts, &message).await,
        };
        let (outcomes, error) = self.end_objects(&request, &*target, &lease).await;
        // A cluster that stays unreachable is retried for a while, then a person is called; a
        // refusal (RBAC, validation, an unreadable record) will not heal by retrying.
        if let Some(e) = &error
            && e.is_transient()
            && request.attempts + 1 < UNDO_ATTEMPTS
        {
            return self
                .retry_later(lease, request.attempts, &e.to_string())
                .await;
        }
        let Some((mut change, locked)) = lease.lock(&self.lifecycle, state).await? else {
            return Ok(());
        };
        let action = match (&error, locked.end_requested.as_deref()) {
            (Some(_), _) => AuditAction::NeedsAttention,
            (None, Some(_)) => AuditAction::Closed,
            (None, None) => AuditAction::Expired,
        };
        match &error {
            Some(e) => {
                let message = if e.is_transient() {
                    format!("the undo did not finish after {UNDO_ATTEMPTS} tries: {e}")
                } else {
                    format!("the undo was refused: {e}")
                };
                Store::record_error(change.tx(), &request.id, &message).await?;
                // Ended again only when a person asks again.
                Store::clear_end_requested(change.tx(), &request.id).await?;
                tracing::error!(request_id = %request.id, %message, "breakglass end did not finish; needs attention");
            }
            None => {
                Store::release_holds(change.tx(), &request.id).await?;
                // An earlier try's error is history now (it stays in the audit).
                Store::clear_error(change.tx(), &request.id).await?;
            }
        }
        let detail = json!({
            "objects": outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>(),
            "error": error.as_ref().map(ToString::to_string),
        });
        change
            .transition(RequestRef::from(&locked), Actor::Broker, action, detail)
            .await?;
        change.commit().await
    }

    /// Ends every recorded object, last first, as [`end::plan`] decides. Returns what was
    /// done, and the error that stopped it, if one did; it stops before any write once the
    /// lease may have passed to another worker.
    pub(super) async fn end_objects(
        &self,
        request: &Request,
        target: &dyn Target,
        lease: &Lease,
    ) -> (Vec<Outcome>, Option<TargetError>) {
        let mut outcomes = Vec::new();
        let prepared = async {
            let recorded = self.store.applied_objects(&request.id).await?;
            let objects = request.objects().map_err(StoreFailure::Record)?;
            let applied = match request.expires_at {
                Some(at) => self.stamped_bodies(request, &objects, at).await?,
                None => Vec::new(),
            };
            Ok::<_, StoreFailure>((recorded, applied))
        }
        .await;
        let (recorded, applied) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return (outcomes, Some(e.into())),
        };
        for object in recorded.iter().rev() {
            if !lease.held() {
                let e = TargetError::Unavailable(
                    "the lease on this request ran out; another replica takes over".into(),
                );
                return (outcomes, Some(e));
            }
            let label = format!("{}/{}", object.kind, object.name);
            if object.applied_version.is_none() {
                // Never written (a rollback after a refusal part-way): nothing of ours is there.
                continue;
            }
            let before = match object.before_apply.as_deref().map(serde_json::from_str) {
                None => None,
                Some(Ok(before)) => Some(before),
                Some(Err(e)) => {
                    let e =
                        TargetError::Refused(format!("{label}: recorded state unreadable: {e}"));
                    return (outcomes, Some(e));
                }
            };
            let ours = usize::try_from(object.position)
                .ok()
                .and_then(|p| applied.get(p))
                .cloned()
                .unwrap_or(Value::Null);
            let uid = object.applied_uid.as_deref();
            match end_one(target, &object.object_ref(), &ours, uid, before.as_ref()).await {
                Ok((did, changed_by_others)) => outcomes.push(Outcome {
                    object: label,
                    did,
                    changed_by_others,
                }),
                Err(e) => {
                    outcomes.push(Outcome {
                        object: label,
                        did: "not ended: see the error",
                        changed_by_others: Vec::new(),
                    });
                    return (outcomes, Some(e));
                }
            }
        }
        (outcomes, None)
    }
}

/// Ends one object: reads it, plans its end, and writes at the version it read; when someone
/// wrote it in between, reads and plans again.
async fn end_one(
    target: &dyn Target,
    reference: &ObjectRef,
    applied: &Value,
    uid: Option<&str>,
    before: Option<&Value>,
) -> Result<(&'static str, Vec<String>), TargetError> {
    for _ in 0..RACES {
        let live = target.get(reference).await?;
        let changed_by_others = end::changed_by_others(before, live.as_ref());
        let version = live
            .as_ref()
            .and_then(|l| l.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let action = end::plan(&reference.kind, applied, uid, before, live.as_ref());
        let written = match &action {
            EndAction::Gone | EndAction::Nothing | EndAction::NotOurs => Ok(()),
            EndAction::Impostor => {
                return Err(TargetError::Refused(format!(
                    "{reference} was deleted and made again by someone else, and it still runs this breakglass's image or the breakglass mark; the broker writes only what it wrote, so a person must remove it"
                )));
            }
            EndAction::Delete => target.delete(reference, Some(&version)).await,
            EndAction::Restore(body) | EndAction::Unmark(body) => {
                target.restore(reference, body, &version).await
            }
        };
        match written {
            Ok(()) => return Ok((action.describe(), changed_by_others)),
            // Written by someone between the read and the write, or deleted: look again.
            Err(TargetError::Conflict(_) | TargetError::NotFound) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(TargetError::Unavailable(format!(
        "{reference} kept changing while the broker ended it"
    )))
}

/// Why the record of what was applied could not be read.
enum StoreFailure {
    Store(StoreError),
    Record(String),
}

impl From<StoreError> for StoreFailure {
    fn from(e: StoreError) -> Self {
        StoreFailure::Store(e)
    }
}

impl From<StoreFailure> for TargetError {
    fn from(e: StoreFailure) -> Self {
        match e {
            StoreFailure::Store(e) => TargetError::Unavailable(e.to_string()),
            StoreFailure::Record(e) => TargetError::Refused(e),
        }
    }
}
