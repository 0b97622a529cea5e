//! The broker's marks on what it applies, so every breakglass admission points back at its
//! request and ticket.

use serde_json::{Map, Value};

use super::cloud_run;
use super::manifest::Object;
use super::policy::template_path;
use super::{BREAKGLASS_LABEL, BROKER_PREFIX};

pub struct Stamp<'a> {
    pub request_id: &'a str,
    pub ticket: &'a str,
    pub requester: &'a str,
    pub approvers: &'a [String],
    pub expires_at: &'a str,
}

pub const REQUEST_ID: &str = "breakglass-broker.io/request-id";
pub const TICKET: &str = "breakglass-broker.io/ticket";

/// The object exactly as the broker applies it: the submitted object plus the breakglass label
/// and the broker's labels and annotations, on the object and on its pod template. A Cloud Run
/// service gets its breakglass justification instead of the label, and labels that Google
/// Cloud accepts (its request id annotation is what finds it again).
pub fn stamped(object: &Object, stamp: &Stamp<'_>) -> Value {
    let mut body = object.body.clone();
    let cloud_run = cloud_run::is_service(&object.api_version, &object.kind);
    mark(&mut body, stamp, cloud_run);
    if let Some(path) = template_path(&object.kind).filter(|p| !p.is_empty()) {
        let pointer = format!("/{}", path.replace('.', "/"));
        if let Some(template) = body.pointer_mut(&pointer) {
            mark(template, stamp, cloud_run);
        }
    }
    if cloud_run && let Some(map) = body.as_object_mut() {
        let authorization = entry_object(entry_object(map, "spec"), "binaryAuthorization");
        authorization.insert(
            "breakglassJustification".into(),
            cloud_run::justification(stamp.ticket, stamp.request_id, stamp.approvers).into(),
        );
    }
    body
}

fn mark(target: &mut Value, stamp: &Stamp<'_>, cloud_run: bool) {
    let Some(map) = target.as_object_mut() else {
        return;
    };
    let metadata = entry_object(map, "metadata");
    let labels = entry_object(metadata, "labels");
    if cloud_run {
        let prefix = cloud_run::LABEL_PREFIX;
        labels.insert(
            format!("{prefix}request-id"),
            cloud_run::label_value(stamp.request_id).into(),
        );
        labels.insert(
            format!("{prefix}ticket"),
            cloud_run::label_value(stamp.ticket).into(),
        );
    } else {
        labels.insert(BREAKGLASS_LABEL.into(), "true".into());
        labels.insert(REQUEST_ID.into(), stamp.request_id.into());
        labels.insert(TICKET.into(), label_value(stamp.ticket).into());
    }
    let annotations = entry_object(metadata, "annotations");
    if cloud_run {
        annotations.insert(REQUEST_ID.into(), stamp.request_id.into());
    }
    for (key, value) in [
        ("ticket", stamp.ticket.to_owned()),
        ("requester", stamp.requester.to_owned()),
        ("approvers", stamp.approvers.join(",")),
        ("expires-at", stamp.expires_at.to_owned()),
    ] {
        annotations.insert(format!("{BROKER_PREFIX}{key}"), value.into());
    }
}

fn entry_object<'m>(map: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("replaced by an object above"),
    }
}

/// Label values are at most 63 characters of `[A-Za-z0-9_.-]`, starting and ending
/// alphanumeric; the full ticket always goes in the annotation too.
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// Whether a key in a stamped object was put there by the broker (for marking it in the UI).
pub fn is_broker_key(key: &str) -> bool {
    key.starts_with(BROKER_PREFIX)
        || key.starts_with(cloud_run::LABEL_PREFIX)
        || key == BREAKGLASS_LABEL
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest::{Limits, normalize, parse};

    #[test]
    fn deployment_is_stamped_on_the_object_and_its_pod_template() {
        let docs = parse(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: a, image: x}]}\n",
            &Limits::default(),
        )
        .expect("parses");
        let objects = normalize(docs, "prod").expect("normalizes");
        let approvers = ["bob".to_owned(), "carol".to_owned()];
        let body = stamped(
            &objects[0],
            &Stamp {
                request_id: "r1",
                ticket: "INC 42",
                requester: "alice",
                approvers: &approvers,
                expires_at: "2026-01-01T00:00:00Z",
            },
        );
        let template_labels = &body["spec"]["template"]["metadata"]["labels"];
        assert_eq!(template_labels[BREAKGLASS_LABEL], "true");
        assert_eq!(template_labels["app"], "api");
        assert_eq!(body["metadata"]["labels"][TICKET], "INC_42");
        assert_eq!(
            body["metadata"]["annotations"]["breakglass-broker.io/ticket"],
            "INC 42"
        );
        assert_eq!(
            body["spec"]["template"]["metadata"]["annotations"]["breakglass-broker.io/approvers"],
            "bob,carol"
        );
    }

    #[test]
    fn label_values_are_made_safe() {
        assert_eq!(label_value("INC-123"), "INC-123");
        assert_eq!(label_value("-x y-"), "x_y");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
    }
}
