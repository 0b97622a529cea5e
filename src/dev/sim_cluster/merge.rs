//! Server-side apply and JSON merge patch, simplified to what the broker relies on.
//!
//! Field ownership is tracked per apply manager at the granularity of top-level
//! fields (`spec`, `data`, `metadata.finalizers`) and individual label and annotation
//! keys. That is enough for the behaviour that matters when the broker undoes a
//! change: re-applying a config without a label removes the label the same manager
//! set earlier, while labels other managers own survive.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// A field an apply manager can own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Field {
    /// A whole top-level field (`spec`) or `metadata` field (`metadata.finalizers`).
    Path(String),
    Label(String),
    Annotation(String),
}

/// The fields each apply manager owns on one object.
pub(crate) type Owners = BTreeMap<String, BTreeSet<Field>>;

/// Metadata the server manages; clients cannot set or own it.
pub(crate) const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// Top-level keys that are not configuration.
const NOT_CONFIG: &[&str] = &["apiVersion", "kind", "metadata", "status"];

fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// The fields an apply configuration sets (nulls set nothing).
pub(crate) fn fields_of(applied: &Value) -> BTreeSet<Field> {
    let mut fields = BTreeSet::new();
    if let Some(top) = applied.as_object() {
        for (key, value) in top {
            if !NOT_CONFIG.contains(&key.as_str()) && !value.is_null() {
                fields.insert(Field::Path(key.clone()));
            }
        }
    }
    for (key, value) in metadata(applied).into_iter().flatten() {
        if value.is_null() || SERVER_METADATA.contains(&key.as_str()) {
            continue;
        }
        let keyed = |make: fn(String) -> Field| {
            value
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_null())
                .map(move |(k, _)| make(k.clone()))
        };
        match key.as_str() {
            "labels" => fields.extend(keyed(Field::Label)),
            "annotations" => fields.extend(keyed(Field::Annotation)),
            _ => {
                fields.insert(Field::Path(format!("metadata.{key}")));
            }
        }
    }
    fields
}

/// The value of `field` in `object`, if set.
pub(crate) fn get<'a>(object: &'a Value, field: &Field) -> Option<&'a Value> {
    let found = match field {
        Field::Path(path) => match path.strip_prefix("metadata.") {
            Some(key) => metadata(object)?.get(key),
            None => object.get(path),
        },
        Field::Label(key) => metadata(object)?.get("labels")?.get(key),
        Field::Annotation(key) => metadata(object)?.get("annotations")?.get(key),
    };
    found.filter(|v| !v.is_null())
}

fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let top = object.as_object_mut()?;
    let meta = top
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

fn keyed_map_mut<'a>(object: &'a mut Value, map: &str) -> Option<&'a mut Map<String, Value>> {
    let entry = metadata_mut(object)?
        .entry(map)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

fn set(object: &mut Value, field: &Field, value: Value) {
    match field {
        Field::Path(path) => match path.strip_prefix("metadata.") {
            Some(key) => {
                if let Some(meta) = metadata_mut(object) {
                    meta.insert(key.to_owned(), value);
                }
            }
            None => {
                if let Some(top) = object.as_object_mut() {
                    top.insert(path.clone(), value);
                }
            }
        },
        Field::Label(key) => {
            if let Some(labels) = keyed_map_mut(object, "labels") {
                labels.insert(key.clone(), value);
            }
        }
        Field::Annotation(key) => {
            if let Some(annotations) = keyed_map_mut(object, "annotations") {
                annotations.insert(key.clone(), value);
            }
        }
    }
}

fn remove(object: &mut Value, field: &Field) {
    let (map, key) = match field {
        Field::Path(path) => {
            match path.strip_prefix("metadata.") {
                Some(key) => {
                    if let Some(meta) = metadata_mut(object) {
                        meta.remove(key);
                    }
                }
                None => {
                    if let Some(top) = object.as_object_mut() {
                        top.remove(path);
                    }
                }
            }
            return;
        }
        Field::Label(key) => ("labels", key),
        Field::Annotation(key) => ("annotations", key),
    };
    if let Some(meta) = metadata_mut(object) {
        let now_empty = meta
            .get_mut(map)
            .and_then(Value::as_object_mut)
            .is_some_and(|m| {
                m.remove(key);
                m.is_empty()
            });
        if now_empty {
            meta.remove(map);
        }
    }
}

/// Applies `applied` for `manager` onto `object`, updating `owners`.
///
/// Without `force`, a field another manager owns with a different value is a
/// conflict; the returned error lists them in the real server's words.
pub(crate) fn apply(
    object: &mut Value,
    owners: &mut Owners,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<(), String> {
    let fields = fields_of(applied);
    let differs = |object: &Value, f: &Field| get(object, f) != get(applied, f);
    if !force {
        let conflicts: Vec<String> = owners
            .iter()
            .filter(|(m, _)| m.as_str() != manager)
            .flat_map(|(m, owned)| {
                owned
                    .iter()
                    .filter(|f| fields.contains(f) && differs(object, f))
                    .map(move |f| format!("conflict with \"{m}\": {}", describe(f)))
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                conflicts.join(", ")
            ));
        }
    }
    let previous = owners.remove(manager).unwrap_or_default();
    for field in previous.difference(&fields) {
        if !owners.values().any(|owned| owned.contains(field)) {
            remove(object, field);
        }
    }
    for owned in owners.values_mut() {
        owned.retain(|f| !fields.contains(f) || !differs(object, f));
    }
    owners.retain(|_, owned| !owned.is_empty());
    for field in &fields {
        if let Some(value) = get(applied, field) {
            set(object, field, value.clone());
        }
    }
    owners.insert(manager.to_owned(), fields);
    Ok(())
}

fn describe(field: &Field) -> String {
    match field {
        Field::Path(path) => format!(".{path}"),
        Field::Label(key) => format!(".metadata.labels.{key}"),
        Field::Annotation(key) => format!(".metadata.annotations.{key}"),
    }
}

/// After a non-apply write, apply managers lose the fields whose values changed.
pub(crate) fn disown_changed(owners: &mut Owners, before: &Value, after: &Value) {
    for owned in owners.values_mut() {
        owned.retain(|f| get(before, f) == get(after, f));
    }
    owners.retain(|_, owned| !owned.is_empty());
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reapplying_without_a_label_removes_only_that_managers_label() -> Result<(), String> {
        let mut object = json!({ "metadata": { "labels": { "team": "pay" } }, "spec": { "a": 1 } });
        let mut owners = Owners::new();
        let with = json!({ "metadata": { "labels": { "bg": "true" } }, "spec": { "a": 2 } });
        apply(&mut object, &mut owners, &with, "broker", true)?;
        assert_eq!(
            object["metadata"]["labels"],
            json!({ "team": "pay", "bg": "true" })
        );
        let without = json!({ "metadata": { "labels": {} }, "spec": { "a": 1 } });
        apply(&mut object, &mut owners, &without, "broker", true)?;
        assert_eq!(object["metadata"]["labels"], json!({ "team": "pay" }));
        assert_eq!(object["spec"], json!({ "a": 1 }));
        Ok(())
    }

    #[test]
    fn conflicting_apply_without_force_is_refused() -> Result<(), String> {
        let mut object = json!({ "metadata": {} });
        let mut owners = Owners::new();
        apply(
            &mut object,
            &mut owners,
            &json!({ "spec": { "a": 1 } }),
            "kubectl",
            false,
        )?;
        let err = apply(
            &mut object,
            &mut owners,
            &json!({ "spec": { "a": 2 } }),
            "broker",
            false,
        );
        assert_eq!(
            err,
            Err("Apply failed with 1 conflict: conflict with \"kubectl\": .spec".to_owned())
        );
        apply(
            &mut object,
            &mut owners,
            &json!({ "spec": { "a": 2 } }),
            "broker",
            true,
        )?;
        assert_eq!(object["spec"]["a"], 2);
        assert!(!owners.contains_key("kubectl"));
        Ok(())
    }

    #[test]
    fn merge_patch_removes_nulls_and_merges_objects() {
        let mut target = json!({ "a": { "b": 1, "c": 2 }, "d": [1] });
        merge_patch(
            &mut target,
            &json!({ "a": { "b": null, "e": 3 }, "d": [2] }),
        );
        assert_eq!(target, json!({ "a": { "c": 2, "e": 3 }, "d": [2] }));
    }
}
