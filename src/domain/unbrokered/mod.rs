//! Which breakglass on a cluster the broker did not make.
//!
//! Stamps are not evidence: anyone who can deploy can copy the broker's labels. A workload is
//! the broker's only when both of these hold:
//! - its UID is one the broker recorded when it applied it, for a request that is still
//!   applying or active, and
//! - its `managedFields` show the breakglass label on its pod template owned by the broker's
//!   field manager.
//!
//! A Pod (or ReplicaSet, or Job) counts as the broker's when its controller chain leads to
//! such a workload. Everything else that carries the breakglass label or the older annotation
//! is unbrokered, and is reported once, at the top of its controller chain, with the objects
//! under it listed inside.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::end::FIELD_MANAGER;
use super::stamp::REQUEST_ID;
use super::{BREAKGLASS_ANNOTATION, BREAKGLASS_LABEL};

mod cloud_run;
mod logged;

pub use logged::{Found, LoggedWrite, judge, live_when_written, owner_of};

pub use cloud_run::{
    RUN_BREAKGLASS_ANNOTATION, removable_service, stamped_services, unbrokered_services,
};

/// The kinds that carry a pod spec, and so can carry breakglass.
pub const POD_KINDS: [&str; 7] = [
    "Pod",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

/// The controllers a removal deletes from the top, so nothing recreates what it removed.
pub const TOP_CONTROLLERS: [&str; 5] = ["CronJob", "Deployment", "StatefulSet", "DaemonSet", "Job"];

/// How far an ownerReferences chain is followed; real chains are at most three long
/// (CronJob, Job, Pod), and a cycle someone wrote must not loop.
const MAX_CHAIN: usize = 8;

/// What the broker knows of its own applies on one target.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// UIDs recorded at apply by requests that are applying or active.
    pub live_uids: HashSet<String>,
    /// UIDs recorded at apply by requests that have ended.
    pub ended_uids: HashSet<String>,
    /// Requests named by stamps on the cluster, and whether each is applying or active.
    /// A stamp naming a request not in this map names one the broker never had.
    pub requests: HashMap<String, bool>,
    /// Requests being applied right now: the broker writes an object before it records its
    /// UID, so an object stamped with one of these is judged at the next scan, once the UID
    /// is recorded (a copy of such a stamp is reported then).
    pub applying: HashSet<String>,
    /// UIDs recorded by requests that need attention: the broker could not end them and an
    /// approver is on it. They are findings like any leftover, but a removal leaves them to
    /// the request's own end, which knows to put back a prior template rather than delete.
    pub attention_uids: HashSet<String>,
    /// The images the approvers approved for each UID in `live_uids`: a breakglass under the
    /// broker's own object runs these, or it is not the broker's.
    pub approved_images: HashMap<String, HashSet<String>>,
}

impl Known {
    /// Every `image` anywhere in an approved object: the containers of a pod template or a
    /// Pod, of a Cloud Run service's template.
    pub fn images_of(approved: &Value) -> HashSet<String> {
        fn walk(value: &Value, out: &mut HashSet<String>) {
            match value {
                Value::Object(map) => {
                    for (key, value) in map {
                        match (key.as_str(), value) {
                            ("image", Value::String(image)) => {
                                out.insert(image.clone());
                            }
                            _ => walk(value, out),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = HashSet::new();
        walk(approved, &mut out);
        out
    }

    /// Whether every image of `object`'s pod spec is one approved for the live object `uid`.
    fn approved(&self, uid: &str, object: &Value) -> bool {
        let approved = self.approved_images.get(uid);
        images(object)
            .iter()
            .all(|image| approved.is_some_and(|a| a.contains(image)))
    }
}

/// Why a breakglass is unbrokered. More than one may hold.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// No stamp of the broker at all.
    NotByTheBroker,
    /// A request id the broker never had.
    MadeUpRequest { request_id: String },
    /// A real request id, from a request that has ended.
    EndedRequest { request_id: String },
    /// A real, live request id, on an object that request did not apply.
    CopiedStamp { request_id: String },
    /// The broker applied this object, but the request has ended and the mark is still there.
    LeftAfterEnd,
    /// The broker recorded this object, but its breakglass label is not the broker's write.
    LabelNotWrittenByBroker,
    /// The older annotation, which the broker never sets.
    LegacyAnnotation,
    /// Cloud Audit Logs recorded the admission, and the object was gone when the broker
    /// looked: the log entry is the evidence.
    SeenOnlyInAuditLogs { insert_id: String },
    /// An owner in the object's controller chain could not be found, so the chain could not be
    /// followed to a workload of the broker's (fail closed).
    OwnerNotFound { owner: Member },
    /// Under (or on) an object the broker applied for a live request, but running images the
    /// approvers did not approve: someone changed or joined the broker's breakglass.
    ImagesNotApproved { images: Vec<String> },
}

/// An object of the cluster, by kind, name and UID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct Member {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// One unbrokered breakglass: the workload at the top of its controller chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suspect {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Its resourceVersion when seen: a removal deletes it only at that version.
    pub resource_version: String,
    pub reasons: Vec<Reason>,
    /// Every image of every breakglass pod spec in the chain.
    pub images: Vec<String>,
    /// The field managers that wrote anything in the chain.
    pub writers: Vec<String>,
    /// The objects under it that carry breakglass or sit between it and one that does.
    pub members: Vec<Member>,
}

fn meta<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

/// The pod template (or the Pod itself) and the managedFields path to it.
fn template(object: &Value) -> Option<(&Value, &'static [&'static str])> {
    match kind(object) {
        "Pod" => Some((object, &[])),
        "CronJob" => Some((
            object.pointer("/spec/jobTemplate/spec/template")?,
            &["f:spec", "f:jobTemplate", "f:spec", "f:template"],
        )),
        k if POD_KINDS.contains(&k) => {
            Some((object.pointer("/spec/template")?, &["f:spec", "f:template"]))
        }
        _ => None,
    }
}

/// The label set to "true", as Binary Authorization reads it.
fn has_label(template: &Value) -> bool {
    template["metadata"]["labels"][BREAKGLASS_LABEL].as_str() == Some("true")
}

/// The annotation, with any value: its presence is what GKE honours.
fn has_annotation(template: &Value) -> bool {
    template["metadata"]["annotations"]
        .get(BREAKGLASS_ANNOTATION)
        .is_some()
}

/// Whether the object's pod spec carries breakglass in either form.
pub fn carries_breakglass(object: &Value) -> bool {
    template(object).is_some_and(|(t, _)| has_label(t) || has_annotation(t))
}

/// Whether the broker's field manager owns the breakglass label on the pod template.
pub fn broker_owns_label(object: &Value) -> bool {
    let Some((_, path)) = template(object) else {
        return false;
    };
    let label = format!("f:{BREAKGLASS_LABEL}");
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["manager"] == FIELD_MANAGER)
        .any(|entry| {
            let mut at = &entry["fieldsV1"];
            for step in path.iter().copied().chain(["f:metadata", "f:labels"]) {
                at = &at[step];
            }
            at.get(&label).is_some()
        })
}

/// Every image of the pod spec, containers first.
fn images(object: &Value) -> Vec<String> {
    let Some((template, _)) = template(object) else {
        return Vec::new();
    };
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| template["spec"][list].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str().map(str::to_owned))
        .collect()
}

fn writers(object: &Value) -> impl Iterator<Item = String> + '_ {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["manager"].as_str().map(str::to_owned))
}

/// The request id a stamp names, on the object or its pod template.
fn stamped_request(object: &Value) -> Option<&str> {
    fn on(v: &Value) -> Option<&str> {
        v["metadata"]["labels"][REQUEST_ID].as_str()
    }
    on(object).or_else(|| template(object).and_then(|(t, _)| on(t)))
}

/// The request ids that stamps on these objects name, for the caller to look up.
pub fn stamped_requests(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| carries_breakglass(o))
        .filter_map(|o| stamped_request(o).map(str::to_owned))
        .collect()
}

/// The object's controller reference: the owner marked `controller: true`, else the first.
fn owner_reference(object: &Value) -> Option<&Value> {
    let owners = object["metadata"]["ownerReferences"].as_array()?;
    owners
        .iter()
        .find(|o| o["controller"] == true)
        .or_else(|| owners.first())
}

fn owner_uid(object: &Value) -> Option<&str> {
    owner_reference(object).and_then(|o| o["uid"].as_str())
}

/// Every unbrokered breakglass among `objects` (everything of the pod kinds in one namespace
/// or cluster), one per top of a controller chain.
///
/// A chain is followed up through owners that are present and carry breakglass themselves, as
/// a controller's copies of its template do: an `ownerReferences` entry is only what its
/// writer claimed. So a labelled Pod that names someone else's unlabelled Deployment as its
/// owner is a finding of its own (removing it never touches that Deployment), and one that
/// names an owner nobody can find is reported as itself, saying so. Under the broker's own
/// live object, everything must run images the approvers approved for it.
pub fn unbrokered(objects: &[Value], known: &Known) -> Vec<Suspect> {
    let by_uid: HashMap<&str, &Value> = objects
        .iter()
        .map(|o| (meta(o, "uid"), o))
        .filter(|(uid, _)| !uid.is_empty())
        .collect();
    // Each breakglass object, with the chain from it up to the highest owner that carries
    // breakglass too, grouped by that top.
    let mut groups: Vec<(&str, Vec<&Value>)> = Vec::new();
    let mut lost: Vec<(&Value, Member)> = Vec::new();
    for object in objects.iter().filter(|o| carries_breakglass(o)) {
        let mut chain = vec![object];
        let mut seen = HashSet::from([meta(object, "uid")]);
        while chain.len() < MAX_CHAIN {
            let last = chain[chain.len() - 1];
            match owner_uid(last).and_then(|uid| by_uid.get(uid)) {
                Some(owner) if carries_breakglass(owner) && seen.insert(meta(owner, "uid")) => {
                    chain.push(owner)
                }
                _ => break,
            }
        }
        let root = chain[chain.len() - 1];
        let root_uid = meta(root, "uid");
        if known.live_uids.contains(root_uid) && broker_owns_label(root) {
            // The broker's own: everything on the way up runs what was approved for it, or the
            // part below it that does not is someone else's.
            if chain.iter().all(|o| known.approved(root_uid, o)) {
                continue;
            }
            if !known.approved(root_uid, root) {
                group(&mut groups, root, &chain);
            } else {
                let below = chain.len() - 1;
                group(&mut groups, chain[below - 1], &chain[..below]);
            }
            continue;
        }
        // An owner claimed but not present: gone (its dependents wait for the garbage
        // collector), or never there.
        if let Some(reference) = owner_reference(root)
            && let Some(owner) = reference["uid"].as_str()
            && !by_uid.contains_key(owner)
        {
            // The broker's own object, deleted at its end or still live: what is left of it,
            // running what was approved or already on its way out, is the garbage collector's.
            let collecting = root["metadata"]["deletionTimestamp"].is_string()
                && (known.live_uids.contains(owner) || known.ended_uids.contains(owner));
            if collecting
                || (known.live_uids.contains(owner)
                    && chain.iter().all(|o| known.approved(owner, o)))
            {
                continue;
            }
            lost.push((
                root,
                Member {
                    kind: reference["kind"].as_str().unwrap_or_default().to_owned(),
                    name: reference["name"].as_str().unwrap_or_default().to_owned(),
                    uid: owner.to_owned(),
                },
            ));
        }
        group(&mut groups, root, &chain);
    }
    let mut found = Vec::new();
    for (root_uid, chain) in groups {
        let Some(root) = by_uid.get(root_uid).copied() else {
            continue;
        };
        let being_applied = !known.live_uids.contains(root_uid)
            && stamped_request(root).is_some_and(|id| known.applying.contains(id));
        if being_applied {
            continue;
        }
        let mut suspect = suspect(root, &chain, known);
        if let Some((_, owner)) = lost.iter().find(|(o, _)| meta(o, "uid") == root_uid) {
            suspect.reasons.push(Reason::OwnerNotFound {
                owner: owner.clone(),
            });
            suspect.reasons.sort();
            suspect.reasons.dedup();
        }
        found.push(suspect);
    }
    found.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    found
}

/// Adds `chain` to the group under `root`, starting one if there is none.
fn group<'a>(groups: &mut Vec<(&'a str, Vec<&'a Value>)>, root: &'a Value, chain: &[&'a Value]) {
    let root_uid = meta(root, "uid");
    match groups.iter_mut().find(|(r, _)| *r == root_uid) {
        Some((_, members)) => members.extend(chain.iter().copied()),
        None => groups.push((root_uid, chain.to_vec())),
    }
}

fn suspect(root: &Value, chain: &[&Value], known: &Known) -> Suspect {
    let uid = meta(root, "uid");
    let mut reasons = BTreeSet::new();
    let marked: Vec<&Value> = chain
        .iter()
        .copied()
        .filter(|o| carries_breakglass(o))
        .collect();
    if marked
        .iter()
        .any(|o| template(o).is_some_and(|(t, _)| has_annotation(t)))
    {
        reasons.insert(Reason::LegacyAnnotation);
    }
    for object in std::iter::once(root).chain(marked.iter().copied()) {
        if let Some(id) = stamped_request(object) {
            let request_id = id.to_owned();
            reasons.insert(match known.requests.get(id) {
                None => Reason::MadeUpRequest { request_id },
                Some(false) => Reason::EndedRequest { request_id },
                Some(true) => Reason::CopiedStamp { request_id },
            });
        }
    }
    if known.ended_uids.contains(uid) {
        reasons.insert(Reason::LeftAfterEnd);
        // The stamp is the broker's own, from the request that made it: not a forgery.
        reasons.retain(|r| !matches!(r, Reason::EndedRequest { .. }));
    }
    if known.live_uids.contains(uid) {
        if broker_owns_label(root) {
            let unapproved: BTreeSet<String> = marked
                .iter()
                .flat_map(|o| images(o))
                .filter(|i| {
                    !known
                        .approved_images
                        .get(uid)
                        .is_some_and(|a| a.contains(i))
                })
                .collect();
            reasons.insert(Reason::ImagesNotApproved {
                images: unapproved.into_iter().collect(),
            });
        } else {
            reasons.insert(Reason::LabelNotWrittenByBroker);
        }
        reasons.retain(|r| !matches!(r, Reason::CopiedStamp { .. }));
    }
    if reasons.is_empty() {
        reasons.insert(Reason::NotByTheBroker);
    }
    let mut image_list: Vec<String> = Vec::new();
    for image in marked.iter().flat_map(|o| images(o)) {
        if !image_list.contains(&image) {
            image_list.push(image);
        }
    }
    let writers: BTreeSet<String> = chain.iter().flat_map(|o| writers(o)).collect();
    let members: BTreeSet<Member> = chain
        .iter()
        .filter(|o| meta(o, "uid") != uid)
        .map(|o| Member {
            kind: kind(o).to_owned(),
            name: meta(o, "name").to_owned(),
            uid: meta(o, "uid").to_owned(),
        })
        .collect();
    Suspect {
        api_version: root["apiVersion"].as_str().unwrap_or_default().to_owned(),
        kind: kind(root).to_owned(),
        namespace: meta(root, "namespace").to_owned(),
        name: meta(root, "name").to_owned(),
        uid: uid.to_owned(),
        resource_version: meta(root, "resourceVersion").to_owned(),
        reasons: reasons.into_iter().collect(),
        images: image_list,
        writers: writers.into_iter().collect(),
        members: members.into_iter().collect(),
    }
}

/// Whether a removal may delete this object: only a controller at the top of its chain (so
/// nothing recreates what is removed), or a Pod nobody controls, and never one the broker's
/// live request applied.
pub fn removable(suspect: &Suspect, known: &Known) -> bool {
    let top = TOP_CONTROLLERS.contains(&suspect.kind.as_str())
        || suspect.kind == "Pod"
        || suspect.kind == "ReplicaSet";
    let live = std::iter::once(suspect.uid.as_str())
        .chain(suspect.members.iter().map(|m| m.uid.as_str()))
        .any(|uid| known.live_uids.contains(uid) || known.attention_uids.contains(uid));
    let seen_at_a_version = !suspect.resource_version.is_empty();
    top && !live && seen_at_a_version
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owned_by_broker(path: &[&str]) -> Value {
        let mut fields =
            json!({ "f:metadata": { "f:labels": { format!("f:{BREAKGLASS_LABEL}"): {} } } });
        for step in path.iter().rev() {
            fields = json!({ *step: fields });
        }
        json!({ "manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields })
    }

    fn written_by(manager: &str) -> Value {
        json!({ "manager": manager, "operation": "Update", "fieldsV1": {} })
    }

    fn deployment(uid: &str, labels: Value, managed: Vec<Value>) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": format!("d-{uid}"), "namespace": "prod", "uid": uid,
                          "resourceVersion": "7", "labels": labels.clone(), "managedFields": managed },
            "spec": { "template": { "metadata": { "labels": labels },
                      "spec": { "containers": [{ "name": "a", "image": "evil@sha256:1" }] } } }
        })
    }

    fn owned(kind: &str, uid: &str, owner: &str, labels: Value) -> Value {
        let mut object = json!({
            "apiVersion": if kind == "Pod" { "v1" } else { "apps/v1" }, "kind": kind,
            "metadata": { "name": format!("{kind}-{uid}"), "namespace": "prod", "uid": uid,
                          "labels": labels.clone(),
                          "ownerReferences": [{ "uid": owner, "controller": true }],
                          "managedFields": [written_by("kube-controller-manager")] },
        });
        let spec = json!({ "containers": [{ "name": "a", "image": "evil@sha256:1" }] });
        if kind == "Pod" {
            object["spec"] = spec;
        } else {
            object["spec"] =
                json!({ "template": { "metadata": { "labels": labels }, "spec": spec } });
        }
        object
    }

    fn label() -> Value {
        json!({ BREAKGLASS_LABEL: "true" })
    }

    /// The broker's live objects, each approved to run the image the fixtures use.
    fn live(uids: &[&str]) -> Known {
        Known {
            live_uids: uids.iter().map(|u| (*u).to_owned()).collect(),
            approved_images: uids
                .iter()
                .map(|u| ((*u).to_owned(), HashSet::from(["evil@sha256:1".to_owned()])))
                .collect(),
            ..Known::default()
        }
    }

    #[test]
    fn a_deployment_someone_labelled_is_one_finding_with_its_replicaset_and_pods_inside() {
        let objects = vec![
            deployment("d1", label(), vec![written_by("kubectl")]),
            owned("ReplicaSet", "rs1", "d1", label()),
            owned("Pod", "p1", "rs1", label()),
            owned("Pod", "p2", "rs1", label()),
        ];
        let found = unbrokered(&objects, &Known::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!((f.kind.as_str(), f.uid.as_str()), ("Deployment", "d1"));
        assert_eq!(f.reasons, vec![Reason::NotByTheBroker]);
        assert_eq!(f.images, vec!["evil@sha256:1"]);
        assert_eq!(f.writers, vec!["kube-controller-manager", "kubectl"]);
        let members: Vec<&str> = f.members.iter().map(|m| m.uid.as_str()).collect();
        assert_eq!(members, vec!["p1", "p2", "rs1"]);
        assert_eq!(f.resource_version, "7");
    }

    #[test]
    fn the_brokers_live_deployment_and_its_pods_are_not_findings() {
        let objects = vec![
            deployment(
                "d1",
                label(),
                vec![owned_by_broker(&["f:spec", "f:template"])],
            ),
            owned("ReplicaSet", "rs1", "d1", label()),
            owned("Pod", "p1", "rs1", label()),
        ];
        assert!(unbrokered(&objects, &live(&["d1"])).is_empty());
    }

    #[test]
    fn a_recorded_uid_is_not_enough_without_the_brokers_ownership_of_the_label() {
        let objects = vec![deployment(
            "d1",
            label(),
            vec![
                written_by(FIELD_MANAGER),
                json!({ "manager": "kubectl", "fieldsV1": { "f:spec": { "f:template": { "f:metadata": { "f:labels": { format!("f:{BREAKGLASS_LABEL}"): {} } } } } } }),
            ],
        )];
        let found = unbrokered(&objects, &live(&["d1"]));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reasons, vec![Reason::LabelNotWrittenByBroker]);
    }

    #[test]
    fn the_brokers_ownership_is_not_enough_without_a_recorded_uid() {
        // A forger can name the broker's field manager; it cannot make the broker record a UID.
        let objects = vec![deployment(
            "d2",
            label(),
            vec![owned_by_broker(&["f:spec", "f:template"])],
        )];
        assert_eq!(unbrokered(&objects, &live(&["d1"])).len(), 1);
    }

    #[test]
    fn ownership_of_the_label_must_be_on_the_pod_template_not_the_object() {
        let objects = vec![deployment("d1", label(), vec![owned_by_broker(&[])])];
        assert_eq!(unbrokered(&objects, &live(&["d1"])).len(), 1);
        assert!(!broker_owns_label(&objects[0]));
    }

    #[test]
    fn forged_stamps_are_told_apart() {
        let stamped = |uid: &str, id: &str| {
            let labels = json!({ BREAKGLASS_LABEL: "true", REQUEST_ID: id });
            deployment(uid, labels, vec![written_by("kubectl")])
        };
        let objects = vec![
            stamped("a", "made-up"),
            stamped("b", "ended"),
            stamped("c", "live"),
        ];
        let known = Known {
            requests: HashMap::from([("ended".to_owned(), false), ("live".to_owned(), true)]),
            ..Known::default()
        };
        let found = unbrokered(&objects, &known);
        let reasons: Vec<_> = found.iter().map(|f| f.reasons.clone()).collect();
        assert_eq!(
            reasons,
            vec![
                vec![Reason::MadeUpRequest {
                    request_id: "made-up".into()
                }],
                vec![Reason::EndedRequest {
                    request_id: "ended".into()
                }],
                vec![Reason::CopiedStamp {
                    request_id: "live".into()
                }],
            ]
        );
        assert_eq!(
            stamped_requests(&objects).into_iter().collect::<Vec<_>>(),
            vec!["ended", "live", "made-up"]
        );
    }

    #[test]
    fn an_object_of_a_request_being_applied_waits_for_its_uid_to_be_recorded() {
        let labels = json!({ BREAKGLASS_LABEL: "true", REQUEST_ID: "r1" });
        let objects = vec![deployment(
            "d1",
            labels,
            vec![owned_by_broker(&["f:spec", "f:template"])],
        )];
        let mut known = Known {
            requests: HashMap::from([("r1".to_owned(), true)]),
            applying: HashSet::from(["r1".to_owned()]),
            ..Known::default()
        };
        assert!(unbrokered(&objects, &known).is_empty());
        known.applying.clear();
        assert_eq!(
            unbrokered(&objects, &known).len(),
            1,
            "no UID recorded once applied"
        );
        known.live_uids.insert("d1".into());
        assert_eq!(
            unbrokered(&objects, &known)[0].reasons,
            vec![Reason::ImagesNotApproved {
                images: vec!["evil@sha256:1".into()]
            }],
            "its images must be the approved ones"
        );
        known
            .approved_images
            .insert("d1".into(), HashSet::from(["evil@sha256:1".to_owned()]));
        assert!(unbrokered(&objects, &known).is_empty());
    }

    #[test]
    fn marks_left_after_a_request_ended_are_a_finding() {
        let labels = json!({ BREAKGLASS_LABEL: "true", REQUEST_ID: "r1" });
        let objects = vec![deployment(
            "d1",
            labels,
            vec![owned_by_broker(&["f:spec", "f:template"])],
        )];
        let known = Known {
            ended_uids: HashSet::from(["d1".to_owned()]),
            requests: HashMap::from([("r1".to_owned(), false)]),
            ..Known::default()
        };
        let found = unbrokered(&objects, &known);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reasons, vec![Reason::LeftAfterEnd]);
    }

    #[test]
    fn the_legacy_annotation_is_a_finding_with_any_value_and_false_label_is_not() {
        let mut annotated = deployment("d1", json!({}), vec![]);
        annotated["spec"]["template"]["metadata"]["annotations"] =
            json!({ BREAKGLASS_ANNOTATION: "anything" });
        let not_true = deployment("d2", json!({ BREAKGLASS_LABEL: "false" }), vec![]);
        let found = unbrokered(&[annotated, not_true], &Known::default());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].uid, "d1");
        assert_eq!(found[0].reasons, vec![Reason::LegacyAnnotation]);
    }

    #[test]
    fn a_label_on_the_object_but_not_on_its_template_admits_nothing_and_is_no_finding() {
        let mut object = deployment("d1", json!({}), vec![]);
        object["metadata"]["labels"] = label();
        assert!(unbrokered(&[object], &Known::default()).is_empty());
    }

    #[test]
    fn a_labelled_pod_under_the_brokers_live_deployment_counts_as_the_brokers() {
        let objects = vec![
            deployment(
                "d1",
                label(),
                vec![owned_by_broker(&["f:spec", "f:template"])],
            ),
            owned("ReplicaSet", "rs1", "d1", label()),
            owned("Pod", "p1", "rs1", label()),
        ];
        let found = unbrokered(&objects[1..], &live(&["rs0"]));
        assert_eq!(found.len(), 1, "under a workload that is not there");
        assert_eq!(found[0].uid, "rs1");
        assert!(
            found[0]
                .reasons
                .iter()
                .any(|r| matches!(r, Reason::OwnerNotFound { owner } if owner.uid == "d1"))
        );
        assert!(unbrokered(&objects, &live(&["d1"])).is_empty());
    }

    #[test]
    fn a_pod_that_names_the_brokers_live_deployment_as_owner_but_runs_other_images_is_a_finding_of_its_own()
     {
        let mut intruder = owned("Pod", "p9", "d1", label());
        intruder["spec"]["containers"][0]["image"] = json!("miner@sha256:2");
        let objects = vec![
            deployment(
                "d1",
                label(),
                vec![owned_by_broker(&["f:spec", "f:template"])],
            ),
            intruder,
        ];
        let found = unbrokered(&objects, &live(&["d1"]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].kind.as_str(), found[0].uid.as_str()),
            ("Pod", "p9")
        );
        assert_eq!(found[0].images, vec!["miner@sha256:2"]);
    }

    #[test]
    fn the_brokers_live_deployment_changed_to_other_images_is_a_finding_never_removed() {
        let mut changed = deployment(
            "d1",
            label(),
            vec![owned_by_broker(&["f:spec", "f:template"])],
        );
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("miner@sha256:2");
        let known = live(&["d1"]);
        let found = unbrokered(&[changed], &known);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].reasons,
            vec![Reason::ImagesNotApproved {
                images: vec!["miner@sha256:2".into()]
            }]
        );
        assert!(!removable(&found[0], &known));
    }

    #[test]
    fn a_labelled_pod_under_an_unlabelled_workload_is_a_finding_of_its_own() {
        // An ownerReference is only what its writer claimed: the unlabelled workload it names
        // admitted no breakglass, and a removal must never reach it.
        let objects = vec![
            deployment("d1", json!({}), vec![written_by("kubectl")]),
            owned("ReplicaSet", "rs1", "d1", json!({})),
            owned("Pod", "p1", "rs1", label()),
        ];
        let found = unbrokered(&objects, &Known::default());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].uid, "p1");
        assert!(found[0].members.is_empty());
    }

    #[test]
    fn a_bare_pod_and_a_cronjob_are_findings_of_their_own() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "p", "namespace": "prod", "uid": "p9", "labels": label() },
            "spec": { "containers": [{ "name": "a", "image": "x" }], "initContainers": [{ "name": "i", "image": "y" }] }
        });
        let cron = json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": { "name": "c", "namespace": "prod", "uid": "c1",
                          "managedFields": [owned_by_broker(&["f:spec", "f:jobTemplate", "f:spec", "f:template"])] },
            "spec": { "jobTemplate": { "spec": { "template": { "metadata": { "labels": label() },
                      "spec": { "containers": [{ "name": "a", "image": "z" }] } } } } }
        });
        let found = unbrokered(&[pod, cron.clone()], &Known::default());
        assert_eq!(found.len(), 2);
        let pod = found.iter().find(|f| f.kind == "Pod").expect("the pod");
        assert_eq!(pod.images, vec!["x", "y"]);
        assert!(broker_owns_label(&cron));
        let mut known = live(&["c1"]);
        known
            .approved_images
            .insert("c1".into(), HashSet::from(["z".to_owned()]));
        assert!(unbrokered(&[cron], &known).is_empty());
    }

    #[test]
    fn dependents_whose_owner_is_gone_are_reported_as_themselves_unless_the_brokers_own_are_being_collected()
     {
        let mut objects = vec![
            owned("ReplicaSet", "rs1", "d1", label()),
            owned("Pod", "p1", "rs1", label()),
            owned("Pod", "p2", "rs1", label()),
        ];
        let found = unbrokered(&objects, &Known::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].uid, "rs1");
        assert_eq!(found[0].members.len(), 2);
        // The broker's own Deployment, ended: a dependent named under it is a finding, unless
        // the collector is already deleting it.
        let ended = Known {
            ended_uids: HashSet::from(["d1".to_owned()]),
            ..Known::default()
        };
        assert_eq!(unbrokered(&objects, &ended).len(), 1);
        objects[0]["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        assert!(unbrokered(&objects, &ended).is_empty());
        // Pods whose ReplicaSet is gone, each its own finding.
        assert_eq!(unbrokered(&objects[1..], &live(&["d1"])).len(), 2);
        // Under the broker's live Deployment, running what was approved for it.
        objects[0]["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("deletionTimestamp");
        assert!(unbrokered(&objects, &live(&["d1"])).is_empty());
    }

    #[test]
    fn an_ownership_cycle_ends() {
        let mut a = owned("ReplicaSet", "a", "b", label());
        let b = owned("ReplicaSet", "b", "a", label());
        a["metadata"]["name"] = json!("a");
        let found = unbrokered(&[a, b], &Known::default());
        assert!(!found.is_empty() && found.len() <= 2);
    }

    #[test]
    fn removal_never_takes_what_a_live_request_applied() {
        let objects = vec![deployment("d1", label(), vec![])];
        let found = unbrokered(&objects, &live(&["d1"]));
        assert_eq!(found.len(), 1);
        assert!(!removable(&found[0], &live(&["d1"])));
        assert!(removable(&found[0], &Known::default()));
        let mut with_live_member = found[0].clone();
        with_live_member.uid = "other".into();
        with_live_member.members.push(Member {
            kind: "Pod".into(),
            name: "p".into(),
            uid: "d1".into(),
        });
        assert!(!removable(&with_live_member, &live(&["d1"])));
        let attention = Known {
            attention_uids: HashSet::from(["d1".to_owned()]),
            ..Known::default()
        };
        assert!(!removable(&found[0], &attention));
        let mut job_under_unknown = found[0].clone();
        job_under_unknown.kind = "Secret".into();
        assert!(!removable(&job_under_unknown, &Known::default()));
    }
}
