//! Create, apply, replace, patch and delete, with the real server's checks.
//!
//! Each write validates the body against the URL, keeps server-owned metadata out of
//! clients' hands, runs simulated admission on the object as it would be stored, and
//! only then commits, so a denied or conflicting write leaves no trace.

use std::time::SystemTime;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::BreakglassAdmission;
use super::admission::{self, Verdict};
use super::merge::{self, Owners, SERVER_METADATA};
use super::objects::{Store, WriteKind, key_for, unix_millis};
use super::policy;
use super::resources::ResourceType;
use super::selector::{is_dns_subdomain, is_label_value, is_qualified_name};
use super::status::ApiError;

/// Who writes what, where.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Write<'a> {
    pub res: &'static ResourceType,
    /// Empty for cluster-scoped resources.
    pub namespace: &'a str,
    pub user: &'a str,
    /// `fieldManager`, used for apply ownership.
    pub manager: &'a str,
    pub dry_run: bool,
    pub attested: &'a [String],
    /// Whether the admission policy `deploy/` ships is installed: only the broker may then
    /// admit a breakglass pod template.
    pub policy: bool,
    /// A delete with `propagationPolicy: Orphan` leaves the object's dependents.
    pub orphan: bool,
}

/// DeleteOptions preconditions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Preconditions {
    pub resource_version: Option<String>,
    pub uid: Option<String>,
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

fn check_name(res: &ResourceType, name: &str) -> Result<(), ApiError> {
    if is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            res,
            name,
            &format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

fn check_string_map(
    res: &ResourceType,
    name: &str,
    meta: &Map<String, Value>,
    field: &str,
    values_are_labels: bool,
) -> Result<(), ApiError> {
    let Some(map) = meta.get(field).filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let invalid = |problem: String| ApiError::invalid(res, name, &problem);
    let map = map
        .as_object()
        .ok_or_else(|| invalid(format!("metadata.{field}: must be a map of strings")))?;
    for (key, value) in map {
        if !is_qualified_name(key) {
            return Err(invalid(format!(
                "metadata.{field}: Invalid value: {key:?}: not a qualified name"
            )));
        }
        match value.as_str() {
            Some(v) if !values_are_labels || is_label_value(v) => {}
            None if value.is_null() => {}
            _ => {
                return Err(invalid(format!(
                    "metadata.{field}: Invalid value: {value}: must be a valid label value"
                )));
            }
        }
    }
    Ok(())
}

/// Checks a request body against the URL and fills in `apiVersion` and `kind`.
fn check_body(w: &Write, body: Value, url_name: Option<&str>) -> Result<Value, ApiError> {
    let Value::Object(mut top) = body else {
        return Err(ApiError::bad_request("the request body must be an object"));
    };
    let res = w.res;
    for (field, want) in [
        ("apiVersion", res.api_version()),
        ("kind", res.kind.to_owned()),
    ] {
        match top.get(field) {
            None | Some(Value::Null) => {
                top.insert(field.to_owned(), json!(want));
            }
            Some(Value::String(got)) if *got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(format!(
                    "{field} {got} does not match the resource served at this URL ({want})"
                )));
            }
        }
    }
    let meta = top.entry("metadata").or_insert_with(|| json!({}));
    let Value::Object(meta) = meta else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    let body_name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if let Some(url_name) = url_name
        && !body_name.is_empty()
        && body_name != url_name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
        )));
    }
    let body_namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    if res.namespaced && !body_namespace.is_empty() && body_namespace != w.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let name = url_name.unwrap_or(body_name);
    check_string_map(res, name, meta, "labels", true)?;
    check_string_map(res, name, meta, "annotations", false)?;
    Ok(Value::Object(top))
}

fn spec_of(object: &Value) -> Value {
    let mut spec = object.clone();
    if let Some(top) = spec.as_object_mut() {
        top.remove("metadata");
        top.remove("status");
    }
    spec
}

/// Puts server-owned metadata on an object: fresh for a create, carried over otherwise, and
/// the writer in `managedFields` (one entry per manager and operation, with the time of its
/// last write), as a real API server keeps them.
fn stamp(
    object: &mut Value,
    w: &Write,
    name: &str,
    existing: Option<&Value>,
    operation: &str,
    written: Option<&Value>,
) {
    let fields = fields_v1(written.unwrap_or(object), true);
    let generation = match existing {
        None => 1,
        Some(old) => {
            let old_generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            old_generation + i64::from(spec_of(old) != spec_of(object))
        }
    };
    let status = existing.and_then(|old| old.get("status")).cloned();
    let Some(top) = object.as_object_mut() else {
        return;
    };
    match status {
        Some(status) => top.insert("status".to_owned(), status),
        None => top.remove("status"),
    };
    let meta = top.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        for key in SERVER_METADATA {
            meta.remove(*key);
        }
        meta.insert("name".to_owned(), json!(name));
        if w.res.namespaced {
            meta.insert("namespace".to_owned(), json!(w.namespace));
        }
        let carried = |field: &str| existing.and_then(|o| o["metadata"].get(field)).cloned();
        let uid = carried("uid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
        let created = carried("creationTimestamp")
            .unwrap_or_else(|| json!(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)));
        meta.insert("uid".to_owned(), uid);
        meta.insert("creationTimestamp".to_owned(), created);
        meta.insert("generation".to_owned(), json!(generation));
        meta.insert(
            "managedFields".to_owned(),
            managed_fields(existing, w.manager, operation, fields),
        );
    }
}

/// The object's `managedFields` after a write by `manager`.
fn managed_fields(
    existing: Option<&Value>,
    manager: &str,
    operation: &str,
    fields: Value,
) -> Value {
    let manager = if manager.is_empty() {
        "unknown"
    } else {
        manager
    };
    let mut entries: Vec<Value> = existing
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == operation));
    entries.push(json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": "v1",
        "time": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }));
    Value::Array(entries)
}

/// The fields a write set, in the `FieldsV1` form a real server records per manager
/// (`{"f:spec": {"f:template": ...}}`); list items are not itemised.
fn fields_v1(written: &Value, top: bool) -> Value {
    let Some(map) = written.as_object() else {
        return json!({});
    };
    let mut fields = Map::new();
    for (key, value) in map {
        let server_owned = top && ["apiVersion", "kind", "status"].contains(&key.as_str());
        if server_owned || value.is_null() {
            continue;
        }
        let inner = if top && key == "metadata" {
            let mut meta = value.clone();
            if let Some(m) = meta.as_object_mut() {
                for field in SERVER_METADATA {
                    m.remove(*field);
                }
            }
            fields_v1(&meta, false)
        } else {
            fields_v1(value, false)
        };
        fields.insert(format!("f:{key}"), inner);
    }
    Value::Object(fields)
}

/// Runs admission on the object as it would be stored, then stores it unless dry-run. A
/// breakglass admission is recorded with `request` (what the writer sent) and the object as
/// stored, as GKE's audit log keeps them.
fn admit_and_commit(
    store: &mut Store,
    w: &Write,
    name: &str,
    kind: WriteKind,
    (object, request): (Value, Value),
    owners: Owners,
) -> Result<Value, ApiError> {
    let verdict = admission::admit(w.res, name, &object, w.attested)?;
    if w.policy {
        let key = key_for(w.res, w.namespace, name);
        let operation = if store.stored(&key).is_some() {
            "UPDATE"
        } else {
            "CREATE"
        };
        let review = policy::Review {
            res: w.res,
            operation,
            namespace: w.namespace,
            name,
            user: w.user,
            object: &object,
        };
        if let Err(message) = policy::review(&review) {
            return Err(ApiError::denied(
                w.res,
                name,
                format!(
                    "admission webhook \"validation.policy.admission.k8s.io\" denied the request: {message}"
                ),
            ));
        }
    }
    if w.dry_run {
        return Ok(object);
    }
    let key = key_for(w.res, w.namespace, name);
    let object = store.commit(key.clone(), kind, object, owners);
    if let Verdict::Breakglass {
        images,
        labels,
        annotations,
    } = verdict
    {
        let res = w.res;
        let group = if res.group.is_empty() {
            "core"
        } else {
            res.group
        };
        let verb = match kind {
            WriteKind::Create => "create",
            WriteKind::Replace => "update",
            WriteKind::Apply | WriteKind::Patch => "patch",
            WriteKind::Delete => "delete",
        };
        store.record_admission(BreakglassAdmission {
            at: unix_millis(SystemTime::now()),
            key,
            images,
            user: w.user.to_owned(),
            labels,
            annotations,
            method: format!("io.k8s.{group}.{}.{}.{verb}", res.version, res.plural),
            resource_name: format!(
                "{group}/{}/namespaces/{}/{}/{name}",
                res.version, w.namespace, res.plural
            ),
            request,
            response: object.clone(),
        });
    }
    Ok(object)
}

/// A `metadata.resourceVersion` in a write body is an optimistic-lock precondition.
fn check_resource_version(
    w: &Write,
    name: &str,
    body: &Value,
    current: &Value,
) -> Result<(), ApiError> {
    match meta_str(body, "resourceVersion") {
        Some(want) if Some(want) != meta_str(current, "resourceVersion") => {
            Err(ApiError::modified(w.res, name))
        }
        _ => Ok(()),
    }
}

/// `POST` to a collection.
pub(crate) fn create(store: &mut Store, w: &Write, body: Value) -> Result<Value, ApiError> {
    let mut object = check_body(w, body, None)?;
    let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
        (Some(name), _) => name.to_owned(),
        (None, Some(prefix)) => {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{prefix}{}", &suffix[..5])
        }
        (None, None) => {
            return Err(ApiError::invalid(
                w.res,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    check_name(w.res, &name)?;
    if meta_str(&object, "resourceVersion").is_some() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if store.stored(&key_for(w.res, w.namespace, &name)).is_some() {
        return Err(ApiError::already_exists(w.res, &name));
    }
    let request = object.clone();
    stamp(&mut object, w, &name, None, "Update", None);
    admit_and_commit(
        store,
        w,
        &name,
        WriteKind::Create,
        (object, request),
        Owners::new(),
    )
}

/// Server-side apply; the flag says whether the object was created.
pub(crate) fn apply(
    store: &mut Store,
    w: &Write,
    name: &str,
    body: Value,
    force: bool,
) -> Result<(Value, bool), ApiError> {
    check_name(w.res, name)?;
    let applied = check_body(w, body, Some(name))?;
    let existing = store.stored(&key_for(w.res, w.namespace, name)).cloned();
    let (mut object, mut owners) = match &existing {
        Some(stored) => {
            check_resource_version(w, name, &applied, &stored.object)?;
            (stored.object.clone(), stored.owners.clone())
        }
        None => (
            json!({ "apiVersion": w.res.api_version(), "kind": w.res.kind, "metadata": {} }),
            Owners::new(),
        ),
    };
    merge::apply(&mut object, &mut owners, &applied, w.manager, force)
        .map_err(|message| ApiError::apply_conflict(w.res, name, message))?;
    stamp(
        &mut object,
        w,
        name,
        existing.as_ref().map(|s| &s.object),
        "Apply",
        Some(&applied),
    );
    let object = admit_and_commit(store, w, name, WriteKind::Apply, (object, applied), owners)?;
    Ok((object, existing.is_none()))
}

/// `PUT`: replaces the whole object, guarded by `metadata.resourceVersion` when given.
pub(crate) fn replace(
    store: &mut Store,
    w: &Write,
    name: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let mut object = check_body(w, body, Some(name))?;
    let Some(stored) = store.stored(&key_for(w.res, w.namespace, name)).cloned() else {
        return Err(ApiError::not_found(w.res, name));
    };
    check_resource_version(w, name, &object, &stored.object)?;
    let request = object.clone();
    stamp(&mut object, w, name, Some(&stored.object), "Update", None);
    let mut owners = stored.owners;
    merge::disown_changed(&mut owners, &stored.object, &object);
    admit_and_commit(
        store,
        w,
        name,
        WriteKind::Replace,
        (object, request),
        owners,
    )
}

/// JSON merge patch (strategic merge patches are treated the same way).
pub(crate) fn patch(
    store: &mut Store,
    w: &Write,
    name: &str,
    patch: Value,
) -> Result<Value, ApiError> {
    let Some(stored) = store.stored(&key_for(w.res, w.namespace, name)).cloned() else {
        return Err(ApiError::not_found(w.res, name));
    };
    check_resource_version(w, name, &patch, &stored.object)?;
    let mut object = stored.object.clone();
    merge::merge_patch(&mut object, &patch);
    let mut object = check_body(w, object, Some(name))?;
    stamp(
        &mut object,
        w,
        name,
        Some(&stored.object),
        "Update",
        Some(&patch),
    );
    let mut owners = stored.owners;
    merge::disown_changed(&mut owners, &stored.object, &object);
    admit_and_commit(store, w, name, WriteKind::Patch, (object, patch), owners)
}

/// `DELETE`: checks preconditions, removes the object and returns it.
pub(crate) fn delete(
    store: &mut Store,
    w: &Write,
    name: &str,
    preconditions: &Preconditions,
) -> Result<Value, ApiError> {
    let key = key_for(w.res, w.namespace, name);
    let Some(current) = store.get(&key) else {
        return Err(ApiError::not_found(w.res, name));
    };
    let checks = [
        ("UID", &preconditions.uid, "uid"),
        (
            "ResourceVersion",
            &preconditions.resource_version,
            "resourceVersion",
        ),
    ];
    for (label, want, field) in checks {
        let actual = meta_str(&current, field).unwrap_or("");
        if let Some(want) = want
            && want != actual
        {
            return Err(ApiError::conflict(
                w.res,
                name,
                &format!(
                    "Precondition failed: {label} in precondition: {want}, {label} in object meta: {actual}"
                ),
            ));
        }
    }
    if w.dry_run {
        return Ok(current);
    }
    let removed = store.remove(&key).unwrap_or(current);
    if !w.orphan {
        store.collect_dependents(meta_str(&removed, "uid").unwrap_or_default());
    }
    Ok(removed)
}
