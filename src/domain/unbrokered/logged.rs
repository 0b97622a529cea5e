//! A write as GKE's Cloud Audit Logs record it, judged by the same rule as what the detector
//! lists: the logged object (as the write stored it) and whatever of its controller chain
//! can still be found go through [`unbrokered`], so a finding has the key the detector would
//! give it (the top of the chain) and one object makes one finding, not two.

use std::collections::HashSet;

use serde_json::Value;

use super::{Known, Member, POD_KINDS, Reason, Suspect, carries_breakglass, owner_reference};
use super::{meta, unbrokered};
use crate::clock::Millis;

/// One logged write of a Pod or a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedWrite {
    pub insert_id: String,
    /// The entry's timestamp (Google's clock), in milliseconds.
    pub at: Millis,
    /// `io.k8s.core.v1.pods.create`, ...
    pub method: String,
    /// Who wrote it: `authenticationInfo.principalEmail`.
    pub principal: String,
    /// The object as the write stored it (`response`); when the log kept none, as it was sent
    /// (`request`), named from `resourceName`.
    pub object: Value,
}

impl LoggedWrite {
    /// Reads a LogEntry of a GKE Admin Activity audit log; None for one that records no
    /// write of a Pod or a workload with a pod template.
    pub fn from_entry(entry: &Value) -> Option<LoggedWrite> {
        let payload = &entry["protoPayload"];
        let method = payload["methodName"].as_str()?;
        let verb = method.rsplit('.').next()?;
        if !["create", "update", "patch"].contains(&verb) {
            return None;
        }
        let at = chrono::DateTime::parse_from_rfc3339(entry["timestamp"].as_str()?)
            .ok()?
            .timestamp_millis();
        let resource = payload["resourceName"].as_str()?;
        let (namespace, name) = resource_name(resource)?;
        let mut object = if payload["response"]["metadata"].is_object() {
            payload["response"].clone()
        } else {
            payload["request"].clone()
        };
        let map = object.as_object_mut()?;
        map.remove("@type");
        // A patch body need not say what it patches; the resource name does.
        if let Some((api_version, kind)) = type_of(resource) {
            map.entry("apiVersion")
                .or_insert_with(|| api_version.into());
            map.entry("kind").or_insert_with(|| kind.into());
        }
        let metadata = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        let metadata = metadata.as_object_mut()?;
        metadata.insert("namespace".into(), namespace.into());
        metadata
            .entry("name")
            .or_insert_with(|| Value::String(name));
        // A write the log kept no stored object of still counts (fail closed); its entry
        // stands in for the UID it does not name.
        let insert_id = entry["insertId"].as_str().unwrap_or_default().to_owned();
        if metadata
            .get("uid")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            metadata.insert("uid".into(), format!("log-entry/{insert_id}").into());
        }
        if !POD_KINDS.contains(&object["kind"].as_str().unwrap_or_default()) {
            return None;
        }
        Some(LoggedWrite {
            insert_id,
            at,
            method: method.to_owned(),
            principal: payload["authenticationInfo"]["principalEmail"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            object,
        })
    }

    pub fn uid(&self) -> &str {
        meta(&self.object, "uid")
    }

    pub fn namespace(&self) -> &str {
        meta(&self.object, "namespace")
    }

    pub fn name(&self) -> &str {
        meta(&self.object, "name")
    }

    pub fn carries_breakglass(&self) -> bool {
        carries_breakglass(&self.object)
    }
}

/// `apps/v1/namespaces/NS/deployments/NAME` (or `core/v1/...`): the namespace and the name.
fn resource_name(text: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [_, _, "namespaces", namespace, _, name] if !namespace.is_empty() && !name.is_empty() => {
            Some(((*namespace).to_owned(), (*name).to_owned()))
        }
        _ => None,
    }
}

/// The owner an object's controller chain continues with: the reference marked
/// `controller: true`, else the first.
pub fn owner_of(object: &Value) -> Option<&Value> {
    owner_reference(object)
}

/// The `apiVersion` and kind a resource name (`apps/v1/namespaces/NS/deployments/NAME`)
/// names, for the kinds that carry a pod spec.
fn type_of(resource: &str) -> Option<(String, &'static str)> {
    let mut parts = resource.split('/');
    let (group, version) = (parts.next()?, parts.next()?);
    let plural = parts.nth(2)?;
    let kind = POD_KINDS
        .into_iter()
        .find(|kind| format!("{}s", kind.to_ascii_lowercase()) == plural)?;
    let api_version = if group == "core" {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some((api_version, kind))
}

/// What the broker found of the logged object and its owners on the target.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The owners above the logged object, nearest first, as far as they could be found.
    pub owners: Vec<Value>,
    /// The logged object itself is no longer on the target (or another object has its name).
    pub gone: bool,
}

/// The finding a logged write makes, if it makes one: [`unbrokered`] over the logged object
/// and the owners found above it, with what the log adds (the writer, that the object is
/// gone, that an owner could not be found).
pub fn judge(write: &LoggedWrite, found: &Found, known: &Known) -> Option<Suspect> {
    let objects: Vec<Value> = std::iter::once(write.object.clone())
        .chain(found.owners.iter().cloned())
        .collect();
    let mut suspect = unbrokered(&objects, known).into_iter().next()?;
    let top = objects.last().unwrap_or(&write.object);
    let mut reasons: Vec<Reason> = suspect.reasons.clone();
    if found.gone {
        reasons.push(Reason::SeenOnlyInAuditLogs {
            insert_id: write.insert_id.clone(),
        });
    }
    if let Some(owner) = owner_reference(top) {
        reasons.push(Reason::OwnerNotFound {
            owner: Member {
                kind: owner["kind"].as_str().unwrap_or_default().to_owned(),
                name: owner["name"].as_str().unwrap_or_default().to_owned(),
                uid: owner["uid"].as_str().unwrap_or_default().to_owned(),
            },
        });
    }
    reasons.sort();
    reasons.dedup();
    suspect.reasons = reasons;
    if !suspect.writers.contains(&write.principal) {
        suspect.writers.push(write.principal.clone());
        suspect.writers.sort();
    }
    Some(suspect)
}

/// `known`, with the UIDs the broker recorded for a request that was live when the write was
/// made counted as live: a breakglass the broker applied is its own in the log, even when the
/// request has ended since.
pub fn live_when_written(mut known: Known, live_then: HashSet<String>) -> Known {
    for uid in live_then {
        known.ended_uids.remove(&uid);
        known.live_uids.insert(uid);
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::BREAKGLASS_LABEL;
    use crate::domain::end::FIELD_MANAGER;
    use serde_json::json;

    fn pod(uid: &str, owner: Option<(&str, &str)>) -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "p", "namespace": "prod", "uid": uid,
                          "labels": { BREAKGLASS_LABEL: "true" },
                          "managedFields": [{ "manager": "kubectl-create", "fieldsV1": {} }] },
            "spec": { "containers": [{ "name": "a", "image": "evil@sha256:1" }] },
        });
        if let Some((kind, owner_uid)) = owner {
            pod["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": kind, "name": "rs", "uid": owner_uid, "controller": true,
            }]);
        }
        pod
    }

    fn logged(object: Value) -> Value {
        json!({
            "insertId": "e1",
            "timestamp": "2030-01-02T03:04:05.678901234Z",
            "resource": { "type": "k8s_cluster" },
            "protoPayload": {
                "methodName": "io.k8s.core.v1.pods.create",
                "resourceName": "core/v1/namespaces/prod/pods/p",
                "authenticationInfo": { "principalEmail": "deployer@example.com" },
                "request": { "metadata": { "name": "p" } },
                "response": object,
            },
        })
    }

    #[test]
    fn an_entry_is_read_into_the_object_as_stored_with_its_writer_and_time() {
        let write = LoggedWrite::from_entry(&logged(pod("u1", None))).expect("a write");
        assert_eq!(write.uid(), "u1");
        assert_eq!((write.namespace(), write.name()), ("prod", "p"));
        assert_eq!(write.principal, "deployer@example.com");
        assert_eq!(write.at, 1_893_553_445_678);
        assert!(write.carries_breakglass());
        let mut deleted = logged(pod("u1", None));
        deleted["protoPayload"]["methodName"] = json!("io.k8s.core.v1.pods.delete");
        assert!(LoggedWrite::from_entry(&deleted).is_none());
        let mut patch = logged(Value::Null);
        patch["protoPayload"]["methodName"] = json!("io.k8s.apps.v1.deployments.patch");
        patch["protoPayload"]["resourceName"] = json!("apps/v1/namespaces/prod/deployments/d");
        patch["protoPayload"]["request"] = json!({ "spec": { "template": { "metadata": {
            "labels": { BREAKGLASS_LABEL: "true" } } } } });
        let write = LoggedWrite::from_entry(&patch).expect("a patch without a stored object");
        assert_eq!(
            (&write.object["apiVersion"], &write.object["kind"]),
            (&json!("apps/v1"), &json!("Deployment"))
        );
        assert_eq!((write.name(), write.uid()), ("d", "log-entry/e1"));
        assert!(write.carries_breakglass());
        let mut secret = logged(json!({ "kind": "Secret", "metadata": { "uid": "s" } }));
        secret["protoPayload"]["resourceName"] = json!("core/v1/namespaces/prod/secrets/s");
        assert!(LoggedWrite::from_entry(&secret).is_none());
    }

    #[test]
    fn a_pod_gone_before_anyone_listed_it_is_a_finding_of_its_writer() {
        let write = LoggedWrite::from_entry(&logged(pod("u1", None))).expect("a write");
        let found = Found {
            owners: Vec::new(),
            gone: true,
        };
        let suspect = judge(&write, &found, &Known::default()).expect("a finding");
        assert_eq!((suspect.kind.as_str(), suspect.uid.as_str()), ("Pod", "u1"));
        assert_eq!(suspect.writers, ["deployer@example.com", "kubectl-create"]);
        assert_eq!(
            suspect.reasons,
            [
                Reason::NotByTheBroker,
                Reason::SeenOnlyInAuditLogs {
                    insert_id: "e1".into()
                }
            ]
        );
        assert_eq!(suspect.images, ["evil@sha256:1"]);
    }

    #[test]
    fn a_pod_whose_owner_cannot_be_found_is_reported_as_itself_and_says_so() {
        let write = LoggedWrite::from_entry(&logged(pod("u1", Some(("ReplicaSet", "rs1")))))
            .expect("a write");
        let suspect = judge(&write, &Found::default(), &Known::default()).expect("fails closed");
        assert_eq!((suspect.kind.as_str(), suspect.uid.as_str()), ("Pod", "u1"));
        assert!(suspect.reasons.contains(&Reason::OwnerNotFound {
            owner: Member {
                kind: "ReplicaSet".into(),
                name: "rs".into(),
                uid: "rs1".into()
            }
        }));
        assert!(suspect.members.is_empty());
    }

    #[test]
    fn a_pod_under_the_brokers_live_workload_is_the_brokers() {
        let write = LoggedWrite::from_entry(&logged(pod("u1", Some(("ReplicaSet", "rs1")))))
            .expect("a write");
        let replicaset = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": { "name": "rs", "namespace": "prod", "uid": "rs1",
                          "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "d1", "controller": true }] },
            "spec": { "template": { "metadata": { "labels": { BREAKGLASS_LABEL: "true" } } } },
        });
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "d", "namespace": "prod", "uid": "d1",
                          "managedFields": [{ "manager": FIELD_MANAGER, "fieldsV1": { "f:spec": { "f:template": {
                              "f:metadata": { "f:labels": { format!("f:{BREAKGLASS_LABEL}"): {} } } } } } }] },
            "spec": { "template": { "metadata": { "labels": { BREAKGLASS_LABEL: "true" } } } },
        });
        let found = Found {
            owners: vec![replicaset, deployment],
            gone: false,
        };
        let ended = Known {
            ended_uids: HashSet::from(["d1".to_owned()]),
            ..Known::default()
        };
        let suspect = judge(&write, &found, &ended).expect("an ended request's object");
        assert_eq!(suspect.uid, "d1", "keyed as the detector keys it");
        let mut then = live_when_written(ended, HashSet::from(["d1".to_owned()]));
        assert!(
            judge(&write, &found, &then).is_some(),
            "not running what was approved for it"
        );
        then.approved_images
            .insert("d1".into(), HashSet::from(["evil@sha256:1".to_owned()]));
        assert!(judge(&write, &found, &then).is_none());
    }
}
