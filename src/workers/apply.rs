//! Applying an approved request, crash-safely.
//!
//! 1. Claim the request's lease.
//! 2. Record what stands in the cluster now and the planned expiry, with a `request.applying`
//!    event, before touching the cluster.
//! 3. Server-side apply each stamped object (idempotent, so a retry or a takeover after a crash
//!    repeats it harmlessly), recording the version the broker left after each.
//! 4. Mark the request active.

use serde_json::{Value, json};

use super::{Worker, commit};
use crate::clock::rfc3339;
use crate::domain::State;
use crate::domain::manifest::Object;
use crate::domain::stamp::{Stamp, stamped};
use crate::store::{AppliedObject, Request, Store, StoreError};
use crate::targets::{ObjectRef, Target, TargetError};

impl Worker {
    pub(super) async fn apply(&self, request: &Request) -> Result<(), StoreError> {
        let owner = self.owner();
        if !self.claim(&request.id, State::Approved, &owner).await? {
            return Ok(());
        }
        let Some(target) = self.target(&request.target) else {
            return self
                .fail(
                    request,
                    &format!(
                        "target {} is not configured on this replica",
                        request.target
                    ),
                )
                .await;
        };
        let objects = match objects_of(request) {
            Ok(objects) => objects,
            Err(e) => return self.fail(request, &e).await,
        };
        let expires_at = match self.prepare(request, &target, &objects).await {
            Ok(Some(at)) => at,
            Ok(None) => return Ok(()),
            Err(e) if e.is_transient() => {
                return self
                    .retry_later(&request.id, &owner, request.attempts, &e.to_string())
                    .await;
            }
            Err(e) => return self.fail(request, &e.to_string()).await,
        };
        let approvers = self.approver_names(&request.id).await?;
        let expires_text = rfc3339(expires_at);
        let stamp = Stamp {
            request_id: &request.id,
            ticket: &request.ticket,
            requester: &request.requester_name,
            approvers: &approvers,
            expires_at: &expires_text,
        };
        for (position, object) in objects.iter().enumerate() {
            match target
                .apply(&object_ref(object), &stamped(object, &stamp))
                .await
            {
                // Recorded at once, so that a rollback or an undo knows exactly what is ours.
                Ok(version) => {
                    self.store
                        .record_applied_version(&request.id, position as i64, &version)
                        .await?
                }
                Err(e) if e.is_transient() => {
                    return self
                        .retry_later(&request.id, &owner, request.attempts, &e.to_string())
                        .await;
                }
                Err(e) => {
                    let message = format!("{}: {e}", object.label());
                    self.roll_back(request, &target).await;
                    return self.fail(request, &message).await;
                }
            }
        }
        let mut tx = self.store.begin().await?;
        let Some(locked) = Store::lock_request(&mut tx, &request.id).await? else {
            return Ok(());
        };
        if locked.state != State::Approved || locked.lease_owner.as_deref() != Some(owner.as_str())
        {
            return Ok(());
        }
        Store::set_active(&mut tx, &request.id, self.clock.now(), expires_at).await?;
        let detail = json!({
            "objects": objects.iter().map(Object::label).collect::<Vec<_>>(),
            "approvers": approvers,
            "expires_at": expires_text,
            "digest": request.digest,
        });
        let event = self
            .event(&mut tx, &locked, "request.applied", detail)
            .await?;
        commit(tx, vec![event]).await
    }

    /// Records the objects' current state and the expiry, once; returns the expiry, or None
    /// when the request is no longer ours to apply.
    async fn prepare(
        &self,
        request: &Request,
        target: &Target,
        objects: &[Object],
    ) -> Result<Option<i64>, TargetError> {
        let recorded = self
            .store
            .applied_objects(&request.id)
            .await
            .map_err(store_unavailable)?;
        if !recorded.is_empty() {
            return Ok(request.expires_at);
        }
        let mut before = Vec::with_capacity(objects.len());
        for object in objects {
            before.push(target.get(&object_ref(object)).await?);
        }
        let result: Result<Option<i64>, StoreError> = async {
            let mut tx = self.store.begin().await?;
            let Some(locked) = Store::lock_request(&mut tx, &request.id).await? else {
                return Ok(None);
            };
            if locked.state != State::Approved {
                return Ok(None);
            }
            let expires_at = self.clock.now() + locked.duration_seconds * 1000;
            Store::plan_expiry(&mut tx, &request.id, expires_at).await?;
            for (position, (object, before)) in objects.iter().zip(&before).enumerate() {
                let record = AppliedObject {
                    position: position as i64,
                    api_version: object.api_version.clone(),
                    kind: object.kind.clone(),
                    namespace: object.namespace.clone(),
                    name: object.name.clone(),
                    before_apply: before.as_ref().map(|b| b.to_string()),
                    applied_version: None,
                };
                Store::insert_applied_object(&mut tx, &request.id, &record).await?;
            }
            let detail = json!({
                "objects": objects
                    .iter()
                    .zip(&before)
                    .map(|(o, b)| json!({ "object": o.label(), "existed": b.is_some() }))
                    .collect::<Vec<_>>(),
            });
            let event = self
                .event(&mut tx, &locked, "request.applying", detail)
                .await?;
            commit(tx, vec![event]).await?;
            Ok(Some(expires_at))
        }
        .await;
        result.map_err(store_unavailable)
    }

    async fn approver_names(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .approvals(id)
            .await?
            .into_iter()
            .filter(|a| a.decision == "approve")
            .map(|a| a.approver_name)
            .collect())
    }

    /// A refused apply leaves nothing half-done: objects already applied are undone.
    async fn roll_back(&self, request: &Request, target: &Target) {
        if let Err(e) = self.undo_objects(request, target).await {
            tracing::error!(request_id = %request.id, error = %e, "rolling back a failed apply did not finish");
        }
    }

    async fn fail(&self, request: &Request, error: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        let Some(locked) = Store::lock_request(&mut tx, &request.id).await? else {
            return Ok(());
        };
        if locked.state != State::Approved {
            return Ok(());
        }
        Store::record_error(&mut tx, &request.id, error).await?;
        Store::set_state(&mut tx, &request.id, State::Failed, self.clock.now()).await?;
        let event = self
            .event(
                &mut tx,
                &locked,
                "request.failed",
                json!({ "error": error }),
            )
            .await?;
        commit(tx, vec![event]).await
    }
}

fn store_unavailable(e: StoreError) -> TargetError {
    TargetError::Unavailable(e.to_string())
}

pub(super) fn object_ref(object: &Object) -> ObjectRef {
    ObjectRef {
        api_version: object.api_version.clone(),
        kind: object.kind.clone(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
    }
}

/// The request's normalized objects, as stored when it was made.
pub(super) fn objects_of(request: &Request) -> Result<Vec<Object>, String> {
    let bodies: Vec<Value> = serde_json::from_str(&request.objects)
        .map_err(|e| format!("stored objects are unreadable: {e}"))?;
    bodies
        .into_iter()
        .map(|body| {
            let field = |p: &str| {
                body.pointer(p)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("stored object lacks {p}"))
            };
            Ok(Object {
                api_version: field("/apiVersion")?,
                kind: field("/kind")?,
                namespace: field("/metadata/namespace")?,
                name: field("/metadata/name")?,
                body,
            })
        })
        .collect()
}
