//! The in-memory object store and its bookkeeping.
//!
//! One mutex guards objects, the resource-version counter, write counts and the
//! admission log together, so a write and its record can never be seen apart.

use std::collections::BTreeMap;
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

/// Everything the simulated cluster remembers.
#[derive(Debug, Default)]
pub(crate) struct Store {
    objects: BTreeMap<ObjectKey, Stored>,
    resource_version: u64,
    writes: BTreeMap<ObjectKey, WriteCount>,
    admissions: Vec<BreakglassAdmission>,
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
        self.objects.insert(
            key.clone(),
            Stored {
                object: object.clone(),
                owners,
            },
        );
        self.writes.entry(key).or_default().bump(kind);
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
