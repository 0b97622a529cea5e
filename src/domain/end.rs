//! What the end of a breakglass does to one object: decided from what the broker applied,
//! what stood there before, and what stands now, so that nothing outlives its approval and
//! nobody else's work is lost.
//!
//! - While the live pod template still runs an image the broker put there, or still carries
//!   the breakglass label or annotation, the breakglass is still running: an object the broker
//!   created is deleted; one that existed before gets its prior pod template back, and keeps
//!   what others changed outside the template (replicas, say).
//! - Once others replaced the template with images of their own and no breakglass mark (a
//!   normal, attested deploy), the breakglass is over by itself: only the broker's stamps go.

use serde_json::{Map, Value};

use super::cloud_run;
use super::policy::template_path;
use super::{BREAKGLASS_ANNOTATION, BREAKGLASS_LABEL, BROKER_PREFIX};

/// The field manager every broker write is made under.
pub const FIELD_MANAGER: &str = "breakglass-broker";

/// What to do to one object.
#[derive(Clone, Debug, PartialEq)]
pub enum EndAction {
    /// It is gone already: nothing to do.
    Gone,
    /// The broker created it and its breakglass still runs.
    Delete,
    /// It existed before and its breakglass still runs: write this body (the live object with
    /// its prior pod template and without the broker's marks) at the live version.
    Restore(Value),
    /// Others replaced the breakglass with their own: write this body, the live object without
    /// the broker's stamps, at the live version.
    Unmark(Value),
    /// Neither a breakglass nor a stamp of the broker's is left on it.
    Nothing,
    /// The object under that name is not the one the broker wrote (it was deleted and made
    /// again, with another UID) and runs no breakglass: left alone.
    NotOurs,
    /// Another object under that name, made by someone else, still runs the broker's image or
    /// the breakglass mark: the broker does not write what it did not write, so a person must.
    Impostor,
}

impl EndAction {
    /// In words, for the audit event.
    pub fn describe(&self) -> &'static str {
        match self {
            EndAction::Gone => "already gone",
            EndAction::Delete => "deleted",
            EndAction::Restore(_) => "restored its prior pod template",
            EndAction::Unmark(_) => "replaced by others since; removed only the broker's stamps",
            EndAction::Nothing => "nothing of the breakglass left",
            EndAction::NotOurs => "deleted and made again by someone else; left alone",
            EndAction::Impostor => {
                "made again by someone else and still running the breakglass; left for a person"
            }
        }
    }
}

/// Decides the end of one object of `kind`: `applied` is the body the broker applied, `uid`
/// the UID its write left (when known), `before` what stood there before (None when the
/// broker created it), `live` what stands now.
pub fn plan(
    kind: &str,
    applied: &Value,
    uid: Option<&str>,
    before: Option<&Value>,
    live: Option<&Value>,
) -> EndAction {
    let Some(live) = live else {
        return EndAction::Gone;
    };
    let still_running = runs_breakglass(kind, applied, live);
    if let Some(uid) = uid
        && live.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
    {
        return if still_running {
            EndAction::Impostor
        } else {
            EndAction::NotOurs
        };
    }
    let template = template_pointer(kind);
    if still_running {
        return match before {
            None => EndAction::Delete,
            Some(before) => EndAction::Restore(restored(live, applied, before, &template)),
        };
    }
    let unmarked = without_stamps(live, &template);
    if &unmarked == live {
        EndAction::Nothing
    } else {
        EndAction::Unmark(unmarked)
    }
}

/// Whether `live` still runs the breakglass the broker applied as `applied`: its pod template
/// runs an image the broker put there, or carries the breakglass label or annotation. Binary
/// Authorization reads the pod's marks, so the template's are what count; the object's own
/// breakglass label is only a stamp. A Cloud Run service's justification admits any image of
/// the service, so it counts wherever it is.
pub fn runs_breakglass(kind: &str, applied: &Value, live: &Value) -> bool {
    let template = template_pointer(kind);
    let ours = images_at(applied, &template);
    let in_template = live.pointer(&template).is_some_and(|t| {
        images(t).iter().any(|image| ours.contains(image)) || has_breakglass_mark(t)
    });
    in_template || cloud_run::has_justification(live)
}

/// Who else wrote the object while the breakglass ran: the field managers (with their
/// operation) in the live object's `managedFields` that were not there before, the broker's
/// own left out.
pub fn changed_by_others(before: Option<&Value>, live: Option<&Value>) -> Vec<String> {
    let entries = |object: Option<&Value>| -> Vec<(String, String, String)> {
        object
            .and_then(|o| o.pointer("/metadata/managedFields"))
            .and_then(Value::as_array)
            .map(|fields| {
                fields
                    .iter()
                    .map(|f| {
                        let text =
                            |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                        (text("manager"), text("operation"), text("time"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let earlier = entries(before);
    let mut others: Vec<String> = entries(live)
        .into_iter()
        .filter(|(manager, _, _)| manager != FIELD_MANAGER)
        .filter(|entry| !earlier.contains(entry))
        .map(|(manager, operation, _)| format!("{manager} ({operation})"))
        .collect();
    others.sort();
    others.dedup();
    others
}

fn template_pointer(kind: &str) -> String {
    match template_path(kind) {
        Some(path) if !path.is_empty() => format!("/{}", path.replace('.', "/")),
        _ => String::new(),
    }
}

fn images_at(object: &Value, pointer: &str) -> Vec<String> {
    object.pointer(pointer).map(images).unwrap_or_default()
}

/// Every image a pod template (or a Pod) runs.
fn images(template: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| {
            template
                .pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .filter_map(|c| c.get("image").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The breakglass label or the legacy annotation on this object or template's own metadata.
fn has_breakglass_mark(object: &Value) -> bool {
    let label = object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(BREAKGLASS_LABEL))
        .is_some();
    let annotation = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BREAKGLASS_ANNOTATION))
        .is_some();
    label || annotation
}

/// A label or annotation key that belongs to the breakglass: the broker's own, and the
/// marks that admit any image. None of them survives the end.
fn is_breakglass_key(key: &str) -> bool {
    key.starts_with(BROKER_PREFIX)
        || key.starts_with(cloud_run::LABEL_PREFIX)
        || key == BREAKGLASS_LABEL
        || key == BREAKGLASS_ANNOTATION
}

/// The live object with the prior pod template and without any breakglass key; everything
/// else others changed meanwhile (outside the template) is kept.
fn restored(live: &Value, applied: &Value, before: &Value, template: &str) -> Value {
    let mut body = live.clone();
    if template.is_empty() {
        // A Pod is its own template: its prior spec comes back whole.
        if let (Some(slot), Some(prior)) = (body.get_mut("spec"), before.get("spec")) {
            *slot = prior.clone();
        }
    } else if let (Some(slot), Some(prior)) = (body.pointer_mut(template), before.pointer(template))
    {
        *slot = prior.clone();
        strip_breakglass_keys(slot);
    }
    restore_metadata(&mut body, applied, before);
    cloud_run::clear_justification(&mut body);
    clean_server_fields(&mut body);
    body
}

/// The live object without the broker's stamps and breakglass marks, on itself and its
/// template; nothing else changes.
fn without_stamps(live: &Value, template: &str) -> Value {
    let mut body = live.clone();
    strip_breakglass_keys(&mut body);
    cloud_run::clear_justification(&mut body);
    if !template.is_empty()
        && let Some(slot) = body.pointer_mut(template)
    {
        strip_breakglass_keys(slot);
    }
    if &body != live {
        clean_server_fields(&mut body);
    }
    body
}

/// The object's own labels and annotations as they were before, plus the keys others added
/// meanwhile (in neither what stood before nor what the broker applied); no breakglass key.
fn restore_metadata(body: &mut Value, applied: &Value, before: &Value) {
    for field in ["labels", "annotations"] {
        let pointer = format!("/metadata/{field}");
        let map_at = |object: &Value| -> Map<String, Value> {
            object
                .pointer(&pointer)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let (prior, ours) = (map_at(before), map_at(applied));
        let mut restored = prior.clone();
        for (key, value) in map_at(body) {
            if !prior.contains_key(&key) && !ours.contains_key(&key) {
                restored.insert(key, value);
            }
        }
        restored.retain(|key, _| !is_breakglass_key(key));
        if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert(field.to_owned(), Value::Object(restored));
        }
    }
}

fn strip_breakglass_keys(object: &mut Value) {
    for field in ["labels", "annotations"] {
        if let Some(map) = object
            .pointer_mut(&format!("/metadata/{field}"))
            .and_then(Value::as_object_mut)
        {
            map.retain(|key, _| !is_breakglass_key(key));
        }
    }
}

/// Fields the server owns and a write must not send back.
fn clean_server_fields(body: &mut Value) {
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    if let Some(object) = body.as_object_mut() {
        object.remove("status");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HOTFIX: &str = "us-docker.pkg.dev/acme/hotfix/api@sha256:1";
    const RELEASE: &str = "us-docker.pkg.dev/acme/release/api@sha256:2";
    const THEIRS: &str = "us-docker.pkg.dev/acme/release/api@sha256:3";

    fn deployment(image: &str, replicas: u32, marked: bool) -> Value {
        let mut labels = json!({ "app": "api" });
        if marked {
            labels[BREAKGLASS_LABEL] = json!("true");
            labels[format!("{BROKER_PREFIX}request-id")] = json!("r1");
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "api", "resourceVersion": "7", "labels": labels.clone(),
                          "annotations": { "team": "payments" } },
            "spec": {
                "replicas": replicas,
                "template": {
                    "metadata": { "labels": labels },
                    "spec": { "containers": [{ "name": "api", "image": image }] }
                }
            }
        })
    }

    #[test]
    fn a_created_object_still_running_the_hotfix_is_deleted_even_after_someone_scaled_it() {
        let applied = deployment(HOTFIX, 1, true);
        let live = deployment(HOTFIX, 5, true);
        assert_eq!(
            plan("Deployment", &applied, None, None, Some(&live)),
            EndAction::Delete
        );
    }

    #[test]
    fn a_created_object_whose_mark_was_kept_with_other_images_is_still_deleted() {
        let applied = deployment(HOTFIX, 1, true);
        let live = deployment(THEIRS, 1, true);
        assert_eq!(
            plan("Deployment", &applied, None, None, Some(&live)),
            EndAction::Delete
        );
    }

    #[test]
    fn a_changed_object_gets_its_prior_template_back_and_keeps_others_scaling() {
        let before = deployment(RELEASE, 3, false);
        let applied = deployment(HOTFIX, 3, true);
        let mut live = deployment(HOTFIX, 5, true);
        live["metadata"]["labels"]["added-by-others"] = json!("yes");
        let EndAction::Restore(body) =
            plan("Deployment", &applied, None, Some(&before), Some(&live))
        else {
            panic!("expected a restore");
        };
        assert_eq!(body["spec"]["replicas"], 5, "the scale is kept");
        assert_eq!(body["spec"]["template"], before["spec"]["template"]);
        assert_eq!(
            body["metadata"]["resourceVersion"], "7",
            "written at the live version"
        );
        let labels = body["metadata"]["labels"].as_object().expect("labels");
        assert!(labels.keys().all(|k| !is_breakglass_key(k)), "{labels:?}");
        assert_eq!(body["metadata"]["annotations"]["team"], "payments");
        assert_eq!(body["metadata"]["labels"]["added-by-others"], "yes");
        assert_eq!(body["metadata"]["labels"]["app"], "api");
    }

    #[test]
    fn a_template_someone_replaced_with_their_own_images_only_loses_the_brokers_stamps() {
        let before = deployment(RELEASE, 3, false);
        let applied = deployment(HOTFIX, 3, true);
        let mut live = deployment(THEIRS, 3, false);
        live["metadata"]["labels"][format!("{BROKER_PREFIX}ticket")] = json!("INC-1");
        let EndAction::Unmark(body) =
            plan("Deployment", &applied, None, Some(&before), Some(&live))
        else {
            panic!("expected only the stamps to go");
        };
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["image"],
            THEIRS
        );
        assert!(
            body["metadata"]["labels"]
                .get(format!("{BROKER_PREFIX}ticket"))
                .is_none()
        );
        assert_eq!(
            plan(
                "Deployment",
                &applied,
                None,
                None,
                Some(&deployment(THEIRS, 3, false))
            ),
            EndAction::Nothing
        );
    }

    #[test]
    fn the_legacy_annotation_on_the_template_keeps_the_breakglass_running() {
        let applied = deployment(HOTFIX, 1, true);
        let mut live = deployment(THEIRS, 1, false);
        live["spec"]["template"]["metadata"]["annotations"] =
            json!({ BREAKGLASS_ANNOTATION: "true" });
        assert_eq!(
            plan("Deployment", &applied, None, None, Some(&live)),
            EndAction::Delete
        );
    }

    #[test]
    fn a_label_left_on_the_object_alone_is_a_stamp_to_remove_not_a_running_breakglass() {
        let applied = deployment(HOTFIX, 1, true);
        let mut live = deployment(THEIRS, 1, false);
        live["metadata"]["labels"][BREAKGLASS_LABEL] = json!("true");
        let EndAction::Unmark(body) = plan("Deployment", &applied, None, None, Some(&live)) else {
            panic!("expected only the marks to go");
        };
        assert!(body["metadata"]["labels"].get(BREAKGLASS_LABEL).is_none());
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["image"],
            THEIRS
        );
    }

    #[test]
    fn a_bare_pod_is_its_own_template() {
        let pod = |image: &str, marked: bool| {
            let mut labels = json!({ "app": "api" });
            if marked {
                labels[BREAKGLASS_LABEL] = json!("true");
            }
            json!({ "apiVersion": "v1", "kind": "Pod",
                    "metadata": { "name": "p", "labels": labels, "resourceVersion": "3" },
                    "spec": { "containers": [{ "name": "a", "image": image }] } })
        };
        let applied = pod(HOTFIX, true);
        assert_eq!(
            plan("Pod", &applied, None, None, Some(&pod(HOTFIX, false))),
            EndAction::Delete
        );
        assert_eq!(
            plan("Pod", &applied, None, None, Some(&pod(THEIRS, true))),
            EndAction::Delete
        );
        assert_eq!(
            plan("Pod", &applied, None, None, Some(&pod(THEIRS, false))),
            EndAction::Nothing
        );
    }

    #[test]
    fn an_object_made_again_under_the_same_name_is_not_the_brokers_to_write() {
        let applied = deployment(HOTFIX, 1, true);
        let end = |live: &Value| {
            plan(
                "Deployment",
                &applied,
                Some("the-brokers"),
                None,
                Some(live),
            )
        };
        let mut again = deployment(HOTFIX, 1, true);
        again["metadata"]["uid"] = json!("someone-elses");
        assert_eq!(
            end(&again),
            EndAction::Impostor,
            "still runs the breakglass: a person must look"
        );
        let mut clean = deployment(THEIRS, 1, false);
        clean["metadata"]["uid"] = json!("someone-elses");
        assert_eq!(end(&clean), EndAction::NotOurs);
        again["metadata"]["uid"] = json!("the-brokers");
        assert_eq!(end(&again), EndAction::Delete);
    }

    #[test]
    fn an_object_already_gone_needs_nothing() {
        assert_eq!(
            plan("Deployment", &deployment(HOTFIX, 1, true), None, None, None),
            EndAction::Gone
        );
    }

    #[test]
    fn others_who_wrote_meanwhile_are_named_by_field_manager() {
        let entry = |manager: &str, time: &str| json!({ "manager": manager, "operation": "Update", "time": time });
        let before = json!({ "metadata": { "managedFields": [entry("kubectl", "t1")] } });
        let live = json!({ "metadata": { "managedFields": [
            entry("kubectl", "t1"), entry(FIELD_MANAGER, "t2"), entry("kubectl-scale", "t3")
        ] } });
        assert_eq!(
            changed_by_others(Some(&before), Some(&live)),
            ["kubectl-scale (Update)"]
        );
    }
}
