//! Applying an approved request, crash-safely.
//!
//! 1. Claim the request's lease, then read the request: what an earlier holder did is what
//!    this attempt continues from.
//! 2. Record what stands in the cluster now and the planned expiry, with a `request.applying`
//!    event, before touching the cluster. Done once per request: a takeover finds it recorded.
//! 3. Server-side apply each stamped object (idempotent, so a retry or a takeover after a crash
//!    repeats it harmlessly), recording the version the broker left after each. A takeover
//!    first looks whether the earlier holder's write already landed, and does not write again.
//! 4. Mark the request active, if the lease is still this worker's.

use serde_json::{Value, json};

use super::Worker;
use super::lease::Lease;
use crate::clock::{Millis, rfc3339};
use crate::domain::digest::{Subject, digest};
use crate::domain::end::runs_breakglass;
use crate::domain::manifest::Object;
use crate::domain::stamp::{self, REQUEST_ID};
use crate::domain::{AuditAction, State};
use crate::lifecycle::{Actor, RequestRef, stamp_of};
use crate::store::{AppliedObject, Named, Request, Store, StoreError};
use crate::targets::{Expect, ObjectRef, Target, TargetError, Written};

/// What step 2 left for step 3.
struct Prepared {
    expires_at: Millis,
    /// An earlier attempt recorded `applying`: some objects may be in the cluster already.
    resumed: bool,
    /// What is recorded of each object, in order.
    recorded: Vec<AppliedObject>,
}

/// How step 2 ended.
enum Prepare {
    Ready(Prepared),
    /// Another breakglass holds one of the objects: this one holds it.
    Held(String),
    /// The request is no longer this worker's to apply.
    Gone,
}

impl Worker {
    pub(super) async fn apply(&self, id: &str) -> Result<(), StoreError> {
        let Some((lease, request)) = self.claim(id, State::Approved).await? else {
            return Ok(());
        };
        // Another replica may know the target (a rolling update that adds one): wait for it
        // rather than fail a request that was approved.
        let target = match self.target(&request.target) {
            Ok(target) => target,
            Err(message) => return self.retry_later(lease, request.attempts, &message).await,
        };
        let objects = match request.objects() {
            Ok(objects) => objects,
            Err(e) => return self.fail(&request, &lease, State::Failed, &e).await,
        };
        // What is applied is what was approved: objects changed in the database since their
        // digest was taken (and approved) are refused before anything reaches the cluster.
        let now_digest = digest(&Subject {
            target: &request.target,
            namespace: &request.namespace,
            objects: &objects,
            duration_seconds: u64::try_from(request.duration_seconds).unwrap_or_default(),
            ticket: &request.ticket,
        });
        if now_digest != request.digest {
            let message = format!(
                "the stored request no longer matches what was approved (approved digest {}, the stored objects give {now_digest}); nothing was applied",
                request.digest
            );
            tracing::error!(request_id = %id, %message, "apply refused");
            return self.fail(&request, &lease, State::Failed, &message).await;
        }
        let prepared = match self.prepare(&request, &lease, &*target, &objects).await {
            Ok(Prepare::Ready(prepared)) => prepared,
            Ok(Prepare::Held(holder)) => {
                let message = format!(
                    "an object of this request is held by breakglass request {holder}; one breakglass per object"
                );
                return self.fail(&request, &lease, State::Failed, &message).await;
            }
            Ok(Prepare::Gone) => {
                lease.release().await;
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                return self
                    .retry_later(lease, request.attempts, &e.to_string())
                    .await;
            }
            Err(e) => {
                return self
                    .fail(&request, &lease, State::Failed, &e.to_string())
                    .await;
            }
        };
        // Nothing reaches the cluster before the record that it will is in the audit chain
        // (and the log): while the chain cannot be written, the apply waits and tries again.
        if !self.store.chained_all_committed().await {
            return self
                .retry_later(
                    lease,
                    request.attempts,
                    "the audit history cannot be written right now; the apply waits for it",
                )
                .await;
        }
        let recorded = &prepared.recorded;
        let named = Named::of(&request, &self.store.approvals(id).await?);
        let bodies = stamped(&request, &named, &objects, prepared.expires_at);
        for (position, (object, body)) in objects.iter().zip(&bodies).enumerate() {
            if !lease.held() {
                tracing::warn!(request_id = %id, "lease ran out mid-apply; another replica takes over");
                return Ok(());
            }
            let reference = ObjectRef::from(object);
            let landed = if prepared.resumed {
                already_applied(&*target, &reference, recorded.get(position), id).await
            } else {
                Ok(None)
            };
            let record = recorded.get(position);
            let before_version = record
                .and_then(|r| r.before_apply.as_deref())
                .map(|before| {
                    serde_json::from_str::<Value>(before)
                        .ok()
                        .and_then(|b| {
                            b.pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .unwrap_or_default()
                });
            let expect = match &before_version {
                None => Expect::Absent,
                Some(version) => Expect::Version(version),
            };
            let result = match landed {
                Ok(Some(written)) => Ok(written),
                Ok(None) => target.apply(&reference, body, expect).await,
                Err(e) => Err(e),
            };
            match result {
                // Recorded at once, so that a rollback or an undo knows exactly what is ours.
                Ok(written) => {
                    self.store
                        .record_applied_version(id, position as i64, &written)
                        .await?
                }
                Err(e) if e.is_transient() => {
                    return self
                        .retry_later(lease, request.attempts, &e.to_string())
                        .await;
                }
                Err(e) => {
                    // Cloud Run services have no namespace.
                    let place = if object.namespace.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", object.namespace)
                    };
                    let message = match (e, expect) {
                        (TargetError::Conflict(_), Expect::Absent) => format!(
                            "{} appeared{place} after the request was approved; the broker did not touch it",
                            object.label(),
                        ),
                        (TargetError::Conflict(_), Expect::Version(_)) => format!(
                            "{}{place} changed after the request was approved; the broker did not touch it",
                            object.label(),
                        ),
                        (e, _) => format!("{}: {e}", object.label()),
                    };
                    // What stands there may be this request's own write whose answer was lost
                    // (and whose request label someone removed since): if it runs this
                    // breakglass, "failed" would hide it; a person must look.
                    let suspect = match target.get(&reference).await {
                        Ok(Some(live)) => runs_breakglass(&object.kind, body, &live),
                        Ok(None) => false,
                        Err(_) => true,
                    };
                    let rolled_back = self.roll_back(&request, &*target, &lease).await;
                    if suspect {
                        let message = format!(
                            "{message}; but it runs this request's image or the breakglass mark (perhaps the broker's own write, its answer lost): a person must look"
                        );
                        tracing::error!(request_id = %id, %message, "apply stopped at an object that runs the breakglass");
                        return self
                            .fail(&request, &lease, State::NeedsAttention, &message)
                            .await;
                    }
                    return match rolled_back {
                        None => self.fail(&request, &lease, State::Failed, &message).await,
                        // Something of it may still run: a person must look, never "failed".
                        Some(left) => {
                            tracing::error!(request_id = %id, %message, %left, "apply refused and rollback incomplete");
                            self.fail(
                                &request,
                                &lease,
                                State::NeedsAttention,
                                &format!("{message}; {left}"),
                            )
                            .await
                        }
                    };
                }
            }
        }
        let Some((mut change, locked)) = lease.lock(&self.lifecycle, State::Approved).await? else {
            return Ok(());
        };
        Store::set_active(change.tx(), id, self.clock.now(), prepared.expires_at).await?;
        let detail = json!({
            "objects": objects.iter().map(Object::label).collect::<Vec<_>>(),
            "approvers": named.approvers,
            "expires_at": rfc3339(prepared.expires_at),
            "digest": request.digest,
        });
        change
            .record(
                RequestRef::from(&locked),
                Actor::Broker,
                AuditAction::Applied,
                detail,
            )
            .await?;
        change.commit().await
    }

    /// Records the objects' current state and the expiry, once, with the holds on the objects
    /// (the approval took them, unless it was given before holds existed).
    async fn prepare(
        &self,
        request: &Request,
        lease: &Lease,
        target: &dyn Target,
        objects: &[Object],
    ) -> Result<Prepare, TargetError> {
        let recorded = self
            .store
            .applied_objects(&request.id)
            .await
            .map_err(store_unavailable)?;
        if !recorded.is_empty() {
            let expires_at = request.expires_at.ok_or_else(|| {
                TargetError::Refused("the recorded apply has no planned expiry".into())
            })?;
            return Ok(Prepare::Ready(Prepared {
                expires_at,
                resumed: true,
                recorded,
            }));
        }
        let mut before = Vec::with_capacity(objects.len());
        for object in objects {
            before.push(target.get(&ObjectRef::from(object)).await?);
        }
        let result: Result<Prepare, StoreError> = async {
            let Some((mut change, locked)) = lease.lock(&self.lifecycle, State::Approved).await?
            else {
                return Ok(Prepare::Gone);
            };
            let references: Vec<ObjectRef> = objects.iter().map(ObjectRef::from).collect();
            if let Some(holder) = Store::hold_objects(change.tx(), &locked, &references).await? {
                return Ok(Prepare::Held(holder));
            }
            let expires_at = self.clock.now() + locked.duration_seconds * 1000;
            Store::plan_expiry(change.tx(), &request.id, expires_at).await?;
            let mut recorded = Vec::with_capacity(objects.len());
            for (position, (object, before)) in objects.iter().zip(&before).enumerate() {
                let record = AppliedObject {
                    position: position as i64,
                    api_version: object.api_version.clone(),
                    kind: object.kind.clone(),
                    namespace: object.namespace.clone(),
                    name: object.name.clone(),
                    before_apply: before.as_ref().map(|b| b.to_string()),
                    applied_version: None,
                    applied_uid: None,
                };
                Store::insert_applied_object(change.tx(), &request.id, &record).await?;
                recorded.push(record);
            }
            let detail = json!({
                "objects": objects
                    .iter()
                    .zip(&before)
                    .map(|(o, b)| json!({ "object": o.label(), "existed": b.is_some() }))
                    .collect::<Vec<_>>(),
            });
            change
                .record(
                    RequestRef::from(&locked),
                    Actor::Broker,
                    AuditAction::Applying,
                    detail,
                )
                .await?;
            change.commit().await?;
            Ok(Prepare::Ready(Prepared {
                expires_at,
                resumed: false,
                recorded,
            }))
        }
        .await;
        result.map_err(store_unavailable)
    }

    /// Each object exactly as the broker applies it: stamped with the request, ticket,
    /// requester, approvers and expiry. The undo rebuilds the same bodies to tell its own
    /// writes from someone else's.
    pub(super) async fn stamped_bodies(
        &self,
        request: &Request,
        objects: &[Object],
        expires_at: Millis,
    ) -> Result<Vec<Value>, StoreError> {
        let named = Named::of(request, &self.store.approvals(&request.id).await?);
        Ok(stamped(request, &named, objects, expires_at))
    }

    /// A refused apply leaves nothing half-done: objects already applied are undone.
    /// Returns what is left in the cluster when the rollback did not finish, in words.
    async fn roll_back(
        &self,
        request: &Request,
        target: &dyn Target,
        lease: &Lease,
    ) -> Option<String> {
        match self.end_objects(request, target, lease).await {
            (_, None) => None,
            (_, Some(e)) => Some(format!("rolling back did not finish: {e}")),
        }
    }

    /// Ends the request as `failed` (nothing of it remains) or `needs_attention` (something
    /// may), unless the lease passed to another worker meanwhile.
    async fn fail(
        &self,
        request: &Request,
        lease: &Lease,
        outcome: State,
        error: &str,
    ) -> Result<(), StoreError> {
        let Some((mut change, locked)) = lease.lock(&self.lifecycle, State::Approved).await? else {
            return Ok(());
        };
        Store::record_error(change.tx(), &request.id, error).await?;
        let action = if outcome == State::Failed {
            // Nothing of it remains: its objects are free for another breakglass.
            Store::release_holds(change.tx(), &request.id).await?;
            AuditAction::Failed
        } else {
            AuditAction::NeedsAttention
        };
        change
            .transition(
                RequestRef::from(&locked),
                Actor::Broker,
                action,
                json!({ "error": error }),
            )
            .await?;
        change.commit().await
    }
}

/// Whether an earlier holder's write of this object landed: the object still stands at the
/// version it recorded, or (when it died before recording one) carries this request's stamp.
/// Returns the version and UID to record, or None when the object must be applied.
async fn already_applied(
    target: &dyn Target,
    reference: &ObjectRef,
    recorded: Option<&AppliedObject>,
    request_id: &str,
) -> Result<Option<Written>, TargetError> {
    let Some(live) = target.get(reference).await? else {
        return Ok(None);
    };
    let written = Written::of(&live);
    let ours = match recorded.and_then(|r| r.applied_version.as_deref()) {
        Some(recorded) => recorded == written.version,
        // A label on Kubernetes objects, an annotation on Cloud Run services.
        None => ["/metadata/labels", "/metadata/annotations"]
            .iter()
            .any(|at| {
                live.pointer(at)
                    .and_then(|stamps| stamps.get(REQUEST_ID))
                    .and_then(Value::as_str)
                    == Some(request_id)
            }),
    };
    Ok(ours.then_some(written))
}

/// Each object stamped with the request, its approvers and its expiry.
fn stamped(request: &Request, named: &Named, objects: &[Object], expires_at: Millis) -> Vec<Value> {
    let expires_text = rfc3339(expires_at);
    let stamp = stamp_of(request, named, &expires_text);
    objects.iter().map(|o| stamp::stamped(o, &stamp)).collect()
}

fn store_unavailable(e: StoreError) -> TargetError {
    TargetError::Unavailable(e.to_string())
}
