//! The detector: finds every breakglass on the targets that the broker did not make, records
//! it once (with its audit event), and on targets with `on_unbrokered = "remove"` deletes it
//! from the top of its controller chain (Kubernetes), or sends a Cloud Run service's traffic
//! back to its newest revision admitted without breakglass (deleting the service when it has
//! none).
//!
//! Kubernetes and GKE targets are watched, not listed again and again: a watch per kind keeps
//! a [`Picture`] of the cluster (`src/targets/watch.rs`), and a change to a breakglass object
//! wakes an evaluation once the target has been quiet for [`DEBOUNCE`] (at most [`SETTLE`]
//! after the change), so that a Deployment with its ReplicaSet and Pods is evaluated once.
//! The picture is also evaluated every [`REVIEW`] without any request to the cluster, since
//! what the broker knows of its own applies changes without the cluster changing, and a
//! removal the cluster refused is tried again. Every [`BACKSTOP`] each watch lists its kind in
//! full again. Cloud Run has no watch API: its services are listed every [`POLL`]. (Real time
//! throughout: a finding must come within seconds of the write, whatever a test's manual clock
//! says; times recorded come from the broker's clock.)
//!
//! An episode ends only when a complete view no longer shows it: a full list, or a picture
//! whose every watch has finished its first list and none is listing again. With several
//! replicas each watches on its own; the findings table's unique key makes one finding per
//! object and episode, and its audit event is written in the same transaction as the insert
//! that won. A restart lists again and finds the open episodes already recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::clock::{Clock, Millis};
use crate::config::{OnUnbrokered, TargetKind};
use crate::domain::unbrokered::{
    Suspect, removable, removable_service, stamped_requests, stamped_services, unbrokered,
    unbrokered_services,
};
use crate::store::{Finding, Store};
use crate::targets::cloud_run::Withdrawal;
use crate::targets::{ObjectRef, Picture, Registry, TargetEntry};

/// How often a target without watches (Cloud Run) is listed.
pub const POLL: Duration = Duration::from_secs(2);

/// How often each watch of a Kubernetes or GKE target lists its kind in full again.
pub const BACKSTOP: Duration = Duration::from_secs(5 * 60);

/// How long a watched target must be quiet after a change before it is evaluated: changes that
/// come together (a Deployment, its ReplicaSet, its Pods) are evaluated once, and the first
/// sighting lists them all.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The longest an evaluation waits for quiet after the first change, so that a target that
/// never stops changing is still evaluated.
pub const SETTLE: Duration = Duration::from_secs(1);

/// How often a watched target's picture is evaluated when nothing on the cluster changed.
pub const REVIEW: Duration = Duration::from_secs(2);

/// How long before watching a target that could not be reached is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// How long an object with an open finding must be missing from this replica's complete view
/// before the replica ends its episode. Replicas see the cluster at slightly different
/// moments: one whose watch is a little behind must not end the episode another has just
/// opened (the object would then be found again, as a second finding, a moment later).
pub const ABSENCE: Duration = Duration::from_secs(3);

pub struct Detector {
    store: Store,
    clock: Clock,
    targets: Registry,
    /// Announces each first sighting to the notification endpoints that want it, and wakes
    /// the notifier to deliver it.
    announcer: Option<Arc<crate::lifecycle::Announcer>>,
    notifier: Option<Arc<super::notify::Notifier>>,
    /// Since when (real time) each open finding's object has been missing from this
    /// replica's complete view, by (target, UID).
    missing: std::sync::Mutex<HashMap<(String, String), Instant>>,
}

/// What one scan (or evaluation of a picture) of a target found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Findings recorded by this scan (first sightings only).
    pub new: Vec<Finding>,
    /// Unbrokered breakglass seen, new or not.
    pub seen: usize,
    pub removed: usize,
}

impl Detector {
    pub fn new(store: Store, clock: Clock, targets: Registry) -> Arc<Detector> {
        Self::announcing(store, clock, targets, None, None)
    }

    /// A detector whose findings are also announced (`breakglass.unbrokered`).
    pub fn announcing(
        store: Store,
        clock: Clock,
        targets: Registry,
        announcer: Option<Arc<crate::lifecycle::Announcer>>,
        notifier: Option<Arc<super::notify::Notifier>>,
    ) -> Arc<Detector> {
        Arc::new(Detector {
            store,
            clock,
            targets,
            announcer,
            notifier,
            missing: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Follows every target until dropped (everything runs in this one future, so aborting
    /// its task stops it all); a failing target or database is logged and tried again.
    pub async fn run(self: Arc<Self>) {
        self.run_relisting_every(BACKSTOP).await;
    }

    /// [`Detector::run`] with watches that list in full again every `backstop`.
    pub async fn run_relisting_every(self: Arc<Self>, backstop: Duration) {
        let follows = self
            .targets
            .iter()
            .map(|entry| self.follow(entry, backstop));
        futures_util::future::join_all(follows).await;
    }

    async fn follow(&self, entry: &TargetEntry, backstop: Duration) {
        if !entry.client.watches() {
            return self.poll(entry).await;
        }
        let picture = Picture::new();
        let watching = async {
            loop {
                let watched = entry
                    .client
                    .watch(&entry.config.namespaces, &picture, backstop)
                    .await;
                if let Err(e) = watched {
                    tracing::warn!(target_name = %entry.name(), error = %e, "cannot watch the target; trying again");
                }
                tokio::time::sleep(RETRY).await;
            }
        };
        tokio::join!(watching, self.evaluate(entry, &picture));
    }

    /// Evaluates the picture once changes have settled ([`DEBOUNCE`], [`SETTLE`]) and every
    /// [`REVIEW`].
    async fn evaluate(&self, entry: &TargetEntry, picture: &Picture) {
        loop {
            if tokio::time::timeout(REVIEW, picture.changed())
                .await
                .is_ok()
            {
                let settled = tokio::time::Instant::now() + SETTLE;
                loop {
                    let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(settled);
                    if tokio::time::timeout_at(quiet, picture.changed())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            let snapshot = picture.snapshot();
            if snapshot.objects.is_empty() && !snapshot.complete {
                continue;
            }
            if let Err(e) = self
                .reconcile(entry, &snapshot.objects, snapshot.complete)
                .await
            {
                tracing::warn!(target_name = %entry.name(), error = %e, "detector evaluation failed; trying again");
            }
        }
    }

    async fn poll(&self, entry: &TargetEntry) {
        loop {
            if let Err(e) = self.scan(entry).await {
                tracing::warn!(target_name = %entry.name(), error = %e, "detector scan failed; trying again");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Lists one target in full and records what is unbrokered on it.
    pub async fn scan(&self, entry: &TargetEntry) -> anyhow::Result<ScanReport> {
        let Some(objects) = entry.client.scan(&entry.config.namespaces).await? else {
            return Ok(ScanReport::default());
        };
        self.reconcile(entry, &objects, true).await
    }

    /// Records what is unbrokered among `objects` (removing it where the target says so);
    /// when `complete`, `objects` is everything on the target, and the episodes of what it
    /// no longer shows end.
    async fn reconcile(
        &self,
        entry: &TargetEntry,
        objects: &[Value],
        complete: bool,
    ) -> anyhow::Result<ScanReport> {
        let name = entry.name();
        let cloud_run = entry.config.kind == TargetKind::CloudRun;
        let stamped: Vec<String> = if cloud_run {
            stamped_services(objects)
        } else {
            stamped_requests(objects)
        }
        .into_iter()
        .collect();
        let known = self.store.known_applies(&stamped).await?;
        let suspects = if cloud_run {
            unbrokered_services(objects, &known)
        } else {
            unbrokered(objects, &known)
        };
        let now = self.clock.now();
        let mut report = ScanReport {
            seen: suspects.len(),
            ..ScanReport::default()
        };
        for suspect in &suspects {
            if let Some((finding, _)) = self
                .store
                .record_sighting(name, suspect, now, announce(self.announcer.clone()))
                .await?
            {
                if let Some(notifier) = &self.notifier {
                    notifier.wake();
                }
                tracing::warn!(
                    target_name = %name, namespace = %suspect.namespace, kind = %suspect.kind,
                    name = %suspect.name, uid = %suspect.uid, "breakglass the broker did not make"
                );
                report.new.push(finding);
            }
            let remove = entry.config.on_unbrokered == OnUnbrokered::Remove;
            let may = if cloud_run {
                removable_service(suspect, &known)
            } else {
                removable(suspect, &known)
            };
            if remove && may {
                // A removal the target refuses (changed meanwhile, not allowed) is tried again
                // at the next scan; it must not keep the other findings from being recorded.
                let removal = if cloud_run {
                    self.withdraw(entry, suspect).await
                } else {
                    self.remove(entry, suspect).await
                };
                match removal {
                    Ok(()) => report.removed += 1,
                    Err(e) => tracing::warn!(
                        target_name = %name, kind = %suspect.kind, name = %suspect.name,
                        error = %e, "could not remove an unbrokered breakglass; will try again"
                    ),
                }
            }
        }
        if complete {
            let present: Vec<String> = suspects.iter().map(|s| s.uid.clone()).collect();
            self.end_missing(name, &present, now).await?;
        }
        Ok(report)
    }

    /// Deletes the suspect (its dependents go with it) at the version it was seen at, and
    /// records what went with it on its finding, once.
    async fn remove(&self, entry: &TargetEntry, suspect: &Suspect) -> anyhow::Result<()> {
        let object = ObjectRef {
            api_version: suspect.api_version.clone(),
            kind: suspect.kind.clone(),
            namespace: suspect.namespace.clone(),
            name: suspect.name.clone(),
        };
        let version = Some(suspect.resource_version.as_str()).filter(|v| !v.is_empty());
        entry.client.delete(&object, version).await?;
        let Some(finding) = self.store.open_episode(entry.name(), &suspect.uid).await? else {
            return Ok(());
        };
        let removed: Vec<Value> = std::iter::once(json!({
            "kind": suspect.kind, "name": suspect.name, "uid": suspect.uid,
        }))
        .chain(suspect.members.iter().map(|m| json!(m)))
        .collect();
        self.store
            .record_removal(&finding, &Value::Array(removed), self.clock.now())
            .await?;
        Ok(())
    }
}

impl Detector {
    /// Ends the episodes of `target`'s open findings whose objects this replica's complete view
    /// has lacked for [`ABSENCE`].
    async fn end_missing(
        &self,
        target: &str,
        present: &[String],
        now: Millis,
    ) -> anyhow::Result<()> {
        let missing = std::sync::Mutex::new(Vec::new());
        let started = Instant::now();
        let first_missed = |uid: &str| {
            let key = (target.to_owned(), uid.to_owned());
            let since = *self
                .missing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_insert(started);
            missing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(uid.to_owned());
            started.duration_since(since) >= ABSENCE
        };
        self.store
            .end_episodes_where(target, present, now, first_missed)
            .await?;
        let missing = missing.into_inner().unwrap_or_else(|e| e.into_inner());
        // Keep only the objects still open and missing, and not yet ended by this call.
        self.missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, uid), since| {
                t != target || (missing.contains(uid) && started.duration_since(*since) < ABSENCE)
            });
        Ok(())
    }

    /// Takes the breakglass off a Cloud Run service at the etag it was seen at (its traffic
    /// back to the newest revision admitted without breakglass, or the service deleted), and
    /// records which on its finding, once.
    async fn withdraw(&self, entry: &TargetEntry, suspect: &Suspect) -> anyhow::Result<()> {
        let object = ObjectRef {
            api_version: suspect.api_version.clone(),
            kind: suspect.kind.clone(),
            namespace: suspect.namespace.clone(),
            name: suspect.name.clone(),
        };
        let done = entry
            .client
            .withdraw_breakglass(&object, &suspect.resource_version)
            .await?;
        let Some(finding) = self.store.open_episode(entry.name(), &suspect.uid).await? else {
            return Ok(());
        };
        let mut removed = json!({ "kind": suspect.kind, "name": suspect.name, "uid": suspect.uid });
        match &done {
            Withdrawal::Rerouted { revision } => {
                removed["action"] = "traffic_to_revision".into();
                removed["revision"] = revision.as_str().into();
            }
            Withdrawal::Deleted => removed["action"] = "deleted".into(),
        }
        tracing::warn!(
            target_name = %entry.name(), name = %suspect.name, action = ?done,
            "took an unbrokered breakglass off a Cloud Run service"
        );
        self.store
            .record_removal(&finding, &json!([removed]), self.clock.now())
            .await?;
        Ok(())
    }
}

/// What a first sighting writes beside the finding: its announcement, when endpoints want it.
pub fn announce(
    announcer: Option<Arc<crate::lifecycle::Announcer>>,
) -> impl for<'t> FnOnce(
    &'t mut crate::store::Tx,
    &'t crate::store::Journaled,
) -> futures_util::future::BoxFuture<'t, crate::store::Result<()>> {
    move |tx, event| {
        Box::pin(async move {
            match announcer {
                Some(announcer) => announcer.announce_finding(tx, event).await,
                None => Ok(()),
            }
        })
    }
}
