//! The in-memory object store and its bookkeeping.
//!
//! One mutex guards objects, the resource-version counter, write counts, the admission log
//! and the recent changes that watches replay, so a write and its record can never be seen
//! apart. [`Store::commit`] and [`Store::remove`] are the only writes, and each records its
//! change.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::merge::Owners;
use super::resources::ResourceType;
use super::{BreakglassAdmission, ObjectKey, WriteCount};

/// One stored object and who owns which of its fields.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub object: Value,
    pub owners: Owners,
}

/// Which counter a successful write bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    Create,
    Apply,
    Patch,
    Replace,
    Delete,
}

/// How many recent changes the store keeps for watches to replay, as the API server's watch
/// cache keeps a window of recent events: a watch that resumes from further back is told
/// 410 Expired and must list again.
pub(crate) const HISTORY: usize = 4096;

/// What a change did, as a watch event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One change to one object, at the resource version it made.
#[derive(Debug)]
pub(crate) struct Change {
    pub resource_version: u64,
    pub change: ChangeType,
    pub key: ObjectKey,
    /// The object after the change; for a delete, as it was, at the delete's version.
    pub object: Value,
    /// The object before a modification, so that a watch with a selector can tell an object
    /// that left it (DELETED to that watch) from one that entered it (ADDED).
    pub previous: Option<Value>,
}

/// Everything the simulated cluster remembers.
#[derive(Debug)]
pub(crate) struct Store {
    objects: BTreeMap<ObjectKey, Stored>,
    resource_version: u64,
    writes: BTreeMap<ObjectKey, WriteCount>,
    admissions: Vec<BreakglassAdmission>,
    /// Recent changes, oldest first; every change after `forgotten` is here.
    changes: VecDeque<Arc<Change>>,
    /// The newest resource version whose change is no longer kept (0: none forgotten yet).
    forgotten: u64,
    history: usize,
    /// The newest resource version, for watches waiting for changes.
    latest: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            // Never "0": a list's version is where a watch resumes, and "0" asks a watch to
            // start from whatever is current instead. The namespaces are at "1".
            resource_version: 1,
            writes: BTreeMap::new(),
            admissions: Vec::new(),
            changes: VecDeque::new(),
            forgotten: 0,
            history: HISTORY,
            latest: tokio::sync::watch::Sender::new(1),
        }
    }
}

/// A watch asked to resume from a resource version older than the kept changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired {
    pub oldest: u64,
}

impl WriteCount {
    fn bump(&mut self, kind: WriteKind) {
        let counter = match kind {
            WriteKind::Create => &mut self.creates,
            WriteKind::Apply => &mut self.applies,
            WriteKind::Patch => &mut self.patches,
            WriteKind::Replace => &mut self.replaces,
            WriteKind::Delete => &mut self.deletes,
        };
        *counter += 1;
    }
}

/// Milliseconds since the Unix epoch, for admission records.
pub(crate) fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The key an object of `res` is stored under.
pub(crate) fn key_for(res: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        api_version: res.api_version(),
        kind: res.kind.to_owned(),
        namespace: if res.namespaced {
            namespace.to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    }
}

impl Store {
    pub(crate) fn resource_version(&self) -> String {
        self.resource_version.to_string()
    }

    pub(crate) fn latest_version(&self) -> u64 {
        self.resource_version
    }

    /// A receiver that sees every new resource version.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The kept changes after resource version `after`, or [`Expired`] when some of them are
    /// no longer kept.
    pub(crate) fn changes_after(&self, after: u64) -> Result<Vec<Arc<Change>>, Expired> {
        if after < self.forgotten {
            return Err(Expired {
                oldest: self.forgotten + 1,
            });
        }
        let skip = self
            .changes
            .partition_point(|c| c.resource_version <= after);
        Ok(self.changes.range(skip..).cloned().collect())
    }

    /// Keeps at most `limit` recent changes from now on, forgetting older ones at once.
    pub(crate) fn set_history(&mut self, limit: usize) {
        self.history = limit;
        self.forget_beyond_history();
    }

    fn forget_beyond_history(&mut self) {
        while self.changes.len() > self.history {
            if let Some(old) = self.changes.pop_front() {
                self.forgotten = old.resource_version;
            }
        }
    }

    /// Records the change that made resource version `self.resource_version`.
    fn record(
        &mut self,
        change: ChangeType,
        key: ObjectKey,
        object: Value,
        previous: Option<Value>,
    ) {
        self.changes.push_back(Arc::new(Change {
            resource_version: self.resource_version,
            change,
            key,
            object,
            previous,
        }));
        self.forget_beyond_history();
        self.latest.send_replace(self.resource_version);
    }

    pub(crate) fn stored(&self, key: &ObjectKey) -> Option<&Stored> {
        self.objects.get(key)
    }

    pub(crate) fn get(&self, key: &ObjectKey) -> Option<Value> {
        self.objects.get(key).map(|s| s.object.clone())
    }

    /// Objects of `res`, in one namespace or all, that pass `keep`, ordered by namespace and name.
    pub(crate) fn list(
        &self,
        res: &ResourceType,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let api_version = res.api_version();
        self.objects
            .iter()
            .filter(|(k, _)| k.api_version == api_version && k.kind == res.kind)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, s)| keep(&s.object))
            .map(|(_, s)| s.object.clone())
            .collect()
    }

    /// Stores `object` under a fresh resource version and counts the write.
    pub(crate) fn commit(
        &mut self,
        key: ObjectKey,
        kind: WriteKind,
        mut object: Value,
        owners: Owners,
    ) -> Value {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let previous = self.objects.insert(
            key.clone(),
            Stored {
                object: object.clone(),
                owners,
            },
        );
        self.writes.entry(key.clone()).or_default().bump(kind);
        let change = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(change, key, object.clone(), previous.map(|p| p.object));
        object
    }

    /// Removes an object, counting the delete; the caller has checked preconditions.
    pub(crate) fn remove(&mut self, key: &ObjectKey) -> Option<Value> {
        let stored = self.objects.remove(key)?;
        self.resource_version += 1;
        self.writes
            .entry(key.clone())
            .or_default()
            .bump(WriteKind::Delete);
        let mut last = stored.object.clone();
        last["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.record(ChangeType::Deleted, key.clone(), last, None);
        Some(stored.object)
    }

    /// Deletes every object whose ownerReferences name `uid`, and theirs in turn, as the
    /// garbage collector does after a delete that propagates.
    pub(crate) fn collect_dependents(&mut self, uid: &str) {
        let mut gone = vec![uid.to_owned()];
        while let Some(owner) = gone.pop() {
            if owner.is_empty() {
                continue;
            }
            let dependents: Vec<ObjectKey> = self
                .objects
                .iter()
                .filter(|(_, s)| {
                    s.object["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner.as_str()))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in dependents {
                if let Some(object) = self.remove(&key) {
                    gone.push(
                        object["metadata"]["uid"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            }
        }
    }

    pub(crate) fn record_admission(&mut self, admission: BreakglassAdmission) {
        self.admissions.push(admission);
    }

    pub(crate) fn admissions(&self) -> Vec<BreakglassAdmission> {
        self.admissions.clone()
    }

    pub(crate) fn write_count(&self, key: &ObjectKey) -> WriteCount {
        self.writes.get(key).copied().unwrap_or_default()
    }

    pub(crate) fn write_counts(&self) -> Vec<(ObjectKey, WriteCount)> {
        self.writes.iter().map(|(k, c)| (k.clone(), *c)).collect()
    }
}
