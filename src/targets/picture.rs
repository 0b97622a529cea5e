//! The detector's picture of a cluster: every object of the pod-bearing kinds, kept up to
//! date by watches ([`super::watch`]) instead of listed again and again.
//!
//! Each watch (a kind across the cluster, or in one namespace where the broker may not list
//! cluster-wide) is one part. A part is complete once its watch has finished a list, while it
//! is not listing again and until its watch fails; the picture is complete only when every
//! part is. Only a complete picture may say that something is gone: a replica whose watch
//! cannot resume must not end what other replicas still see. While a part lists again, the
//! objects it had stay in the picture until the new list replaces them whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use kube::runtime::watcher::Event;
use serde_json::Value;
use tokio::sync::Notify;

use crate::domain::unbrokered::carries_breakglass;

/// What one watch covers: a kind, across the cluster (no namespace) or in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Part {
    pub kind: &'static str,
    pub namespace: Option<String>,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} in {namespace}", self.kind),
            None => write!(f, "{} across the cluster", self.kind),
        }
    }
}

#[derive(Debug, Default)]
struct Objects {
    /// By UID.
    current: HashMap<String, Value>,
    /// A list in progress, which replaces `current` when it is done.
    listing: Option<HashMap<String, Value>>,
    listed: bool,
}

impl Objects {
    fn complete(&self) -> bool {
        self.listed && self.listing.is_none()
    }
}

/// A shared picture: the watches write it, the detector reads it. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Picture {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    parts: Mutex<BTreeMap<Part, Objects>>,
    /// Woken when something that can change a finding changed.
    changed: Notify,
}

/// What the detector evaluates: the breakglass objects and every owner above them.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub objects: Vec<Value>,
    /// Every part is listed and none is listing again: what is absent is gone.
    pub complete: bool,
}

impl Picture {
    pub fn new() -> Picture {
        Picture::default()
    }

    fn parts(&self) -> MutexGuard<'_, BTreeMap<Part, Objects>> {
        // Each change is one insert or remove, so a panic elsewhere leaves the maps whole.
        self.inner
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The parts `kind` is watched in from now on; parts of it not named are dropped with their
    /// objects, parts that are new start unlisted.
    pub fn expect(&self, kind: &'static str, namespaces: Option<&[String]>) {
        let wanted: Vec<Part> = match namespaces {
            None => vec![Part {
                kind,
                namespace: None,
            }],
            Some(namespaces) => namespaces
                .iter()
                .map(|n| Part {
                    kind,
                    namespace: Some(n.clone()),
                })
                .collect(),
        };
        let mut parts = self.parts();
        parts.retain(|part, _| part.kind != kind || wanted.contains(part));
        for part in wanted {
            parts.entry(part).or_default();
        }
        drop(parts);
        self.inner.changed.notify_one();
    }

    /// Takes in one event of the watch of `part` (a part not expected is ignored).
    pub fn record(&self, part: &Part, event: Event<Value>) {
        let mut parts = self.parts();
        let Some(objects) = parts.get_mut(part) else {
            return;
        };
        let matters = match event {
            Event::Init => {
                objects.listing = Some(HashMap::new());
                false
            }
            Event::InitApply(object) => {
                if let Some(listing) = &mut objects.listing {
                    listing.insert(uid(&object), slim(object));
                }
                false
            }
            Event::InitDone => {
                if let Some(listing) = objects.listing.take() {
                    objects.current = listing;
                }
                objects.listed = true;
                true
            }
            Event::Apply(object) => {
                let object = slim(object);
                let now = carries_breakglass(&object);
                let before = objects.current.insert(uid(&object), object);
                now || before.is_some_and(|b| carries_breakglass(&b))
            }
            Event::Delete(object) => objects
                .current
                .remove(&uid(&object))
                .is_some_and(|b| carries_breakglass(&b)),
        };
        drop(parts);
        if matters {
            self.inner.changed.notify_one();
        }
    }

    /// The watch of `part` failed: until it has listed again, the part may have missed
    /// changes (a watch that resumes says nothing until something changes), so it is not
    /// complete. What it had stays in the picture.
    pub fn unsure(&self, part: &Part) {
        if let Some(objects) = self.parts().get_mut(part) {
            objects.listed = false;
            objects.listing = None;
        }
    }

    /// Waits until a breakglass object changed, appeared or went, or a list finished, since
    /// the last wait returned.
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// The breakglass objects with their owners, transitively (what the rules need to find the
    /// top of each controller chain), and whether the picture is complete.
    pub fn snapshot(&self) -> Snapshot {
        let parts = self.parts();
        let complete = !parts.is_empty() && parts.values().all(Objects::complete);
        let find = |uid: &str| parts.values().find_map(|p| p.current.get(uid));
        let mut taken: HashSet<&str> = HashSet::new();
        let mut objects = Vec::new();
        let mut pending: Vec<&Value> = parts
            .values()
            .flat_map(|p| p.current.values())
            .filter(|o| carries_breakglass(o))
            .collect();
        while let Some(object) = pending.pop() {
            if !taken.insert(object["metadata"]["uid"].as_str().unwrap_or_default()) {
                continue;
            }
            let owners = object["metadata"]["ownerReferences"].as_array();
            for owner in owners.into_iter().flatten() {
                if let Some(found) = owner["uid"].as_str().and_then(find) {
                    pending.push(found);
                }
            }
            objects.push(object.clone());
        }
        Snapshot { objects, complete }
    }
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The object without its status, which no rule reads and which is most of a Pod.
fn slim(mut object: Value) -> Value {
    if let Some(fields) = object.as_object_mut() {
        fields.remove("status");
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, uid: &str, breakglass: bool, owner: Option<&str>) -> Value {
        let labels = if breakglass {
            json!({ (crate::domain::BREAKGLASS_LABEL): "true" })
        } else {
            json!({})
        };
        let owners: Vec<Value> = owner
            .map(|o| json!({ "uid": o, "controller": true }))
            .into_iter()
            .collect();
        json!({
            "apiVersion": "v1", "kind": kind,
            // A Pod carries its labels itself, a workload on its pod template.
            "metadata": { "name": uid, "namespace": "prod", "uid": uid, "ownerReferences": owners,
                          "labels": labels },
            "spec": { "template": { "metadata": { "labels": labels } } },
            "status": { "replicas": 1 },
        })
    }

    fn list(picture: &Picture, part: &Part, objects: Vec<Value>) {
        picture.record(part, Event::Init);
        for o in objects {
            picture.record(part, Event::InitApply(o));
        }
        picture.record(part, Event::InitDone);
    }

    fn part(kind: &'static str) -> Part {
        Part {
            kind,
            namespace: None,
        }
    }

    fn uids(snapshot: &Snapshot) -> Vec<&str> {
        let mut uids: Vec<&str> = snapshot
            .objects
            .iter()
            .map(|o| o["metadata"]["uid"].as_str().unwrap_or_default())
            .collect();
        uids.sort_unstable();
        uids
    }

    #[test]
    fn complete_only_when_every_part_has_listed_and_none_is_listing_again() {
        let picture = Picture::new();
        assert!(!picture.snapshot().complete, "nothing expected yet");
        picture.expect("Deployment", None);
        picture.expect("ReplicaSet", None);
        list(&picture, &part("Deployment"), vec![]);
        assert!(!picture.snapshot().complete, "ReplicaSets not listed");
        list(&picture, &part("ReplicaSet"), vec![]);
        assert!(picture.snapshot().complete);
        picture.record(&part("ReplicaSet"), Event::Init);
        assert!(!picture.snapshot().complete, "listing again");
        picture.record(&part("ReplicaSet"), Event::InitDone);
        assert!(picture.snapshot().complete);
        picture.unsure(&part("Deployment"));
        assert!(!picture.snapshot().complete, "a failed watch");
        list(&picture, &part("Deployment"), vec![]);
        assert!(picture.snapshot().complete);
        picture.expect("ReplicaSet", Some(&["prod".to_owned()]));
        assert!(!picture.snapshot().complete, "a new part, not listed");
    }

    #[test]
    fn a_new_list_replaces_the_objects_only_when_it_is_done() {
        let picture = Picture::new();
        picture.expect("Deployment", None);
        let deployments = part("Deployment");
        list(
            &picture,
            &deployments,
            vec![object("Deployment", "old", true, None)],
        );
        picture.record(&deployments, Event::Init);
        picture.record(
            &deployments,
            Event::InitApply(object("Deployment", "new", true, None)),
        );
        assert_eq!(uids(&picture.snapshot()), ["old"]);
        picture.record(&deployments, Event::InitDone);
        assert_eq!(uids(&picture.snapshot()), ["new"]);
        picture.record(
            &deployments,
            Event::Delete(object("Deployment", "new", true, None)),
        );
        assert!(picture.snapshot().objects.is_empty());
    }

    #[test]
    fn the_snapshot_holds_breakglass_objects_and_their_owners_and_nothing_else() {
        let picture = Picture::new();
        for kind in ["Deployment", "ReplicaSet", "Pod"] {
            picture.expect(kind, None);
        }
        list(
            &picture,
            &part("Deployment"),
            vec![
                object("Deployment", "d", false, None),
                object("Deployment", "plain", false, None),
            ],
        );
        list(
            &picture,
            &part("ReplicaSet"),
            vec![object("ReplicaSet", "rs", false, Some("d"))],
        );
        list(
            &picture,
            &part("Pod"),
            vec![
                object("Pod", "p", true, Some("rs")),
                object("Pod", "orphan", true, Some("gone")),
                object("Pod", "other", false, Some("rs")),
            ],
        );
        let snapshot = picture.snapshot();
        assert!(snapshot.complete);
        assert_eq!(uids(&snapshot), ["d", "orphan", "p", "rs"]);
        assert!(snapshot.objects.iter().all(|o| o.get("status").is_none()));
    }

    /// Whether the picture woke a waiter within `ms` milliseconds.
    async fn woke(picture: &Picture, ms: u64) -> bool {
        let wait = std::time::Duration::from_millis(ms);
        tokio::time::timeout(wait, picture.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn only_changes_to_breakglass_objects_and_finished_lists_wake_the_detector() {
        let picture = Picture::new();
        picture.expect("Pod", None);
        let pods = part("Pod");
        list(&picture, &pods, vec![]);
        assert!(woke(&picture, 1000).await, "the finished list");
        picture.record(&pods, Event::Apply(object("Pod", "plain", false, None)));
        assert!(!woke(&picture, 50).await, "an unlabelled pod woke it");
        picture.record(&pods, Event::Apply(object("Pod", "bg", true, None)));
        assert!(woke(&picture, 1000).await, "a breakglass pod");
        picture.record(&pods, Event::Apply(object("Pod", "bg", false, None)));
        assert!(
            woke(&picture, 1000).await,
            "the label taken off: the finding may end"
        );
        picture.record(&pods, Event::Delete(object("Pod", "plain", false, None)));
        assert!(!woke(&picture, 50).await, "an unlabelled pod went");
    }
}
