//! What a write does in the simulated Cloud Run: the service's new generation, its revision
//! checked by simulated Binary Authorization, the service's conditions and traffic, and the
//! long-running operation that reports it.

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{RunBreakglassAdmission, SimRunConfig, State};

/// Fields of a Service that only the server sets; what a client sends of them is ignored.
pub const OUTPUT_ONLY: [&str; 20] = [
    "name",
    "uid",
    "generation",
    "createTime",
    "updateTime",
    "deleteTime",
    "expireTime",
    "creator",
    "lastModifier",
    "observedGeneration",
    "terminalCondition",
    "conditions",
    "latestReadyRevision",
    "latestCreatedRevision",
    "trafficStatuses",
    "uri",
    "urls",
    "reconciling",
    "etag",
    "satisfiesPzs",
];

/// A Google API error: HTTP status, canonical status name and message.
#[derive(Debug)]
pub struct ApiError(pub u16, pub &'static str, pub String);

const SERVICE_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Service";

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The user's fields of a write, checked as Cloud Run checks them.
fn user_fields(body: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut fields) = body else {
        return Err(ApiError(
            400,
            "INVALID_ARGUMENT",
            "the request body must be a Service".into(),
        ));
    };
    for key in OUTPUT_ONLY {
        fields.remove(key);
    }
    for (at, labels) in [
        ("labels", fields.get("labels")),
        ("template.labels", fields.pointer_in("template", "labels")),
    ] {
        if let Some(Value::Object(labels)) = labels {
            for (key, value) in labels {
                if !is_label_key(key) || !value.as_str().is_some_and(is_label_value) {
                    return Err(ApiError(
                        400,
                        "INVALID_ARGUMENT",
                        format!(
                            "{at}: label {key:?} is invalid: keys and values must be at most 63 lower-case letters, digits, '_' and '-' (keys starting with a letter)"
                        ),
                    ));
                }
            }
        }
    }
    let containers = fields
        .get("template")
        .and_then(|t| t.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    if containers == 0 {
        return Err(ApiError(
            400,
            "INVALID_ARGUMENT",
            "template.containers: at least one container is required".into(),
        ));
    }
    Ok(fields)
}

trait PointerIn {
    fn pointer_in(&self, a: &str, b: &str) -> Option<&Value>;
}

impl PointerIn for Map<String, Value> {
    fn pointer_in(&self, a: &str, b: &str) -> Option<&Value> {
        self.get(a).and_then(|v| v.get(b))
    }
}

fn is_label_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_lowercase()) && is_label_value(key)
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Creates service `id`; returns the operation.
pub fn create(
    config: &SimRunConfig,
    state: &mut State,
    id: &str,
    body: Value,
    who: &str,
) -> Result<Value, ApiError> {
    let name = format!(
        "projects/{}/locations/{}/services/{id}",
        config.project, config.region
    );
    if state.services.contains_key(&name) {
        return Err(ApiError(
            409,
            "ALREADY_EXISTS",
            format!("Resource '{id}' already exists."),
        ));
    }
    let mut service = user_fields(body)?;
    let at = now();
    service.insert("name".into(), name.clone().into());
    service.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    service.insert("generation".into(), "0".into());
    service.insert("createTime".into(), at.into());
    service.insert("creator".into(), who.into());
    write(config, state, id, service, who, true)
}

/// Replaces the user's fields of service `id` (those in `mask` only, when given) if `etag`
/// still matches; returns the operation.
pub fn patch(
    config: &SimRunConfig,
    state: &mut State,
    id: &str,
    body: Value,
    mask: Option<Vec<String>>,
    who: &str,
) -> Result<Value, ApiError> {
    let name = format!(
        "projects/{}/locations/{}/services/{id}",
        config.project, config.region
    );
    let Some(live) = state.services.get(&name).cloned() else {
        return Err(not_found(id));
    };
    check_etag(&live, body.get("etag").and_then(Value::as_str))?;
    let fields = user_fields(body)?;
    let Value::Object(mut service) = live else {
        return Err(ApiError(500, "INTERNAL", "corrupt service".into()));
    };
    // As in Cloud Run, only a change of the template makes a revision; a change of traffic
    // (or of anything else of the service's) does not.
    let template_before = service.get("template").cloned();
    let keep: Vec<String> = service.keys().cloned().collect();
    for key in keep {
        let masked_out = mask.as_ref().is_some_and(|m| !m.contains(&key));
        if !OUTPUT_ONLY.contains(&key.as_str()) && !masked_out {
            service.remove(&key);
        }
    }
    for (key, value) in fields {
        if mask.as_ref().is_none_or(|m| m.contains(&key)) {
            service.insert(key, value);
        }
    }
    let new_revision = service.get("template") != template_before.as_ref()
        || state.revisions.get(&name).is_none_or(Vec::is_empty);
    write(config, state, id, service, who, new_revision)
}

/// Deletes service `id` if `etag` (when given) still matches; returns the operation.
pub fn delete(
    config: &SimRunConfig,
    state: &mut State,
    id: &str,
    etag: Option<&str>,
) -> Result<Value, ApiError> {
    let name = format!(
        "projects/{}/locations/{}/services/{id}",
        config.project, config.region
    );
    let Some(live) = state.services.get(&name) else {
        return Err(not_found(id));
    };
    check_etag(live, etag)?;
    let Some(mut gone) = state.services.remove(&name) else {
        return Err(not_found(id));
    };
    state.revisions.remove(&name);
    gone["deleteTime"] = now().into();
    *state.writes.entry(id.to_owned()).or_default() += 1;
    Ok(operation(config, state, &gone, None))
}

pub fn not_found(id: &str) -> ApiError {
    ApiError(404, "NOT_FOUND", format!("Resource '{id}' was not found"))
}

/// A stale etag is refused as Google's APIs refuse one (AIP-154): 409 ABORTED.
fn check_etag(live: &Value, etag: Option<&str>) -> Result<(), ApiError> {
    match etag {
        Some(etag)
            if !etag.is_empty() && live.get("etag").and_then(Value::as_str) != Some(etag) =>
        {
            Err(ApiError(
                409,
                "ABORTED",
                format!(
                    "etag mismatch: the service was changed since {etag} was read (it is at {})",
                    live["etag"]
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Stores the service's next generation (with a new revision, checked by Binary
/// Authorization, when `new_revision`) and routes its traffic; returns the operation, not done
/// yet as far as the writer knows.
fn write(
    config: &SimRunConfig,
    state: &mut State,
    id: &str,
    mut service: Map<String, Value>,
    who: &str,
    new_revision: bool,
) -> Result<Value, ApiError> {
    let at = now();
    let generation = service
        .get("generation")
        .and_then(Value::as_str)
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let name = service["name"].as_str().unwrap_or_default().to_owned();
    service.insert("generation".into(), generation.to_string().into());
    service.insert("updateTime".into(), at.clone().into());
    service.insert("lastModifier".into(), who.into());
    service.entry("traffic").or_insert_with(
        || json!([{ "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100 }]),
    );
    service
        .entry("ingress")
        .or_insert_with(|| "INGRESS_TRAFFIC_ALL".into());
    service.insert("uri".into(), format!("https://{id}-sim.a.run.app").into());

    // Traffic may name only revisions the service already has.
    let traffic = service.get("traffic").cloned().unwrap_or(json!([]));
    let before: Vec<Value> = state.revisions.get(&name).cloned().unwrap_or_default();
    traffic_statuses(&traffic, None, &before)?;

    let mut denied = None;
    if new_revision {
        denied = make_revision(config, state, &mut service, &name, id, who, &at);
        let ready = denied.is_none();
        service.insert(
            "terminalCondition".into(),
            condition("Ready", ready, denied.as_deref(), &at),
        );
        service.insert(
            "conditions".into(),
            json!([condition(
                "ConfigurationsReady",
                ready,
                denied.as_deref(),
                &at
            )]),
        );
    }
    service.insert("observedGeneration".into(), generation.to_string().into());
    service.insert("reconciling".into(), false.into());
    let latest_ready = service
        .get("latestReadyRevision")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let revisions = state.revisions.get(&name).cloned().unwrap_or_default();
    let statuses = traffic_statuses(&traffic, latest_ready.as_deref(), &revisions)?;
    let serving = statuses.as_array().is_some_and(|s| !s.is_empty());
    service.insert("trafficStatuses".into(), statuses);
    if let Some(Value::Array(conditions)) = service.get_mut("conditions") {
        conditions.retain(|c| c["type"] != "RoutesReady");
        conditions.push(condition("RoutesReady", serving, None, &at));
    }
    state.counter += 1;
    service.insert("etag".into(), format!("\"sim-{}\"", state.counter).into());
    let service = Value::Object(service);
    state.services.insert(name, service.clone());
    *state.writes.entry(id.to_owned()).or_default() += 1;
    Ok(operation(config, state, &service, denied))
}

/// Makes the service's next revision from its template, checked by Binary Authorization; a
/// revision admitted with breakglass carries the justification in its annotations, as Cloud
/// Run's revisions do. Returns why it was refused, if it was.
fn make_revision(
    config: &SimRunConfig,
    state: &mut State,
    service: &mut Map<String, Value>,
    name: &str,
    id: &str,
    who: &str,
    at: &str,
) -> Option<String> {
    let template = service.get("template").cloned().unwrap_or(json!({}));
    let images: Vec<String> = template["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["image"].as_str().map(str::to_owned))
        .collect();
    let justification = service
        .get("binaryAuthorization")
        .and_then(|b| b.get("breakglassJustification"))
        .and_then(Value::as_str)
        .filter(|j| !j.trim().is_empty())
        .map(str::to_owned);
    let unattested: Vec<&String> = images
        .iter()
        .filter(|image| {
            !config
                .attested_prefixes
                .iter()
                .any(|p| image.starts_with(p))
        })
        .collect();
    let revisions = state.revisions.entry(name.to_owned()).or_default();
    let revision_id = format!(
        "{id}-{:05}-{}",
        revisions.len() + 1,
        &uuid::Uuid::new_v4().simple().to_string()[..3]
    );
    let revision_name = format!("{name}/revisions/{revision_id}");
    let denied = match (unattested.first(), &justification) {
        (Some(image), None) => Some(format!(
            "Revision '{revision_id}' is not ready and cannot serve traffic. Container image '{image}' is not authorized by policy: it was not admitted by Binary Authorization (no attestation for it, and no breakglass justification)."
        )),
        _ => None,
    };
    let ready = denied.is_none();
    let mut revision = template.as_object().cloned().unwrap_or_default();
    revision.insert("name".into(), revision_name.clone().into());
    revision.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    revision.insert("generation".into(), "1".into());
    revision.insert("service".into(), name.into());
    revision.insert("createTime".into(), at.into());
    revision.insert("observedGeneration".into(), "1".into());
    revision.insert(
        "conditions".into(),
        json!([condition("Ready", ready, denied.as_deref(), at)]),
    );
    if let Some(binary_authorization) = service.get("binaryAuthorization") {
        revision.insert("binaryAuthorization".into(), binary_authorization.clone());
    }
    if let Some(justification) = &justification {
        let annotations = revision.entry("annotations").or_insert_with(|| json!({}));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(
                crate::domain::unbrokered::RUN_BREAKGLASS_ANNOTATION.into(),
                justification.clone().into(),
            );
        }
    }
    revisions.push(Value::Object(revision));

    service.insert("latestCreatedRevision".into(), revision_name.clone().into());
    if ready {
        service.insert("latestReadyRevision".into(), revision_name.clone().into());
        if let Some(justification) = justification.filter(|_| !unattested.is_empty()) {
            state.admissions.push(RunBreakglassAdmission {
                service: name.to_owned(),
                revision: revision_name,
                images: images.clone(),
                justification,
                by: who.to_owned(),
                at: at.to_owned(),
            });
        }
    }
    denied
}

/// Where `traffic` sends requests: LATEST is the latest ready revision (`latest`; None only
/// checks), REVISION a named revision of the service's, which must exist and be ready.
fn traffic_statuses(
    traffic: &Value,
    latest: Option<&str>,
    revisions: &[Value],
) -> Result<Value, ApiError> {
    let bad = |message: String| ApiError(400, "INVALID_ARGUMENT", message);
    let Some(targets) = traffic.as_array() else {
        return Err(bad("traffic must be a list of traffic targets".into()));
    };
    // No traffic given is all of it to the latest ready revision, as in Cloud Run.
    let latest_only = [json!({ "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100 })];
    let targets = if targets.is_empty() {
        &latest_only[..]
    } else {
        &targets[..]
    };
    let mut statuses = Vec::new();
    let mut total = 0;
    for target in targets {
        let percent = target["percent"].as_u64().unwrap_or(0);
        total += percent;
        // Google's clients may send enums as numbers (`$alt=json;enum-encoding=int`).
        let kind = match &target["type"] {
            Value::Number(n) if n.as_u64() == Some(1) => {
                Some("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST")
            }
            Value::Number(n) if n.as_u64() == Some(2) => {
                Some("TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION")
            }
            other => other.as_str(),
        };
        let revision = match kind {
            Some("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST") => match latest {
                Some(latest) => latest.rsplit('/').next().unwrap_or_default().to_owned(),
                None => continue,
            },
            Some("TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION") => {
                let wanted = target["revision"].as_str().unwrap_or_default();
                let found = revisions.iter().find(|r| {
                    r["name"].as_str().and_then(|n| n.rsplit('/').next()) == Some(wanted)
                });
                let ready =
                    found.is_some_and(|r| r["conditions"][0]["state"] == "CONDITION_SUCCEEDED");
                if !ready {
                    return Err(bad(format!(
                        "traffic: revision {wanted:?} is not a ready revision of this service"
                    )));
                }
                wanted.to_owned()
            }
            _ => {
                let other = &target["type"];
                return Err(bad(format!(
                    "traffic: type {other} is not TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST or TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
                )));
            }
        };
        if percent > 0 {
            statuses.push(json!({
                "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                "revision": revision,
                "percent": percent,
            }));
        }
    }
    if total != 100 {
        return Err(bad(format!(
            "traffic: the percentages add up to {total}, not 100"
        )));
    }
    Ok(json!(statuses))
}

fn condition(kind: &str, ok: bool, failure: Option<&str>, at: &str) -> Value {
    let mut condition = json!({
        "type": kind,
        "state": if ok { "CONDITION_SUCCEEDED" } else { "CONDITION_FAILED" },
        "lastTransitionTime": at,
    });
    if let Some(message) = failure {
        condition["message"] = message.into();
        condition["reason"] = "CONTAINER_IMAGE_UNAUTHORIZED".into();
        condition["severity"] = "ERROR".into();
    }
    condition
}

/// Records a finished operation about `service` and returns what the writer sees: the same
/// operation, not done yet.
fn operation(
    config: &SimRunConfig,
    state: &mut State,
    service: &Value,
    error: Option<String>,
) -> Value {
    let name = format!(
        "projects/{}/locations/{}/operations/{}",
        config.project,
        config.region,
        uuid::Uuid::new_v4()
    );
    let mut typed = service.clone();
    typed["@type"] = SERVICE_TYPE.into();
    let mut done = json!({ "name": name, "metadata": typed.clone(), "done": true });
    match error {
        // FAILED_PRECONDITION, as Cloud Run reports a revision Binary Authorization refused.
        Some(message) => done["error"] = json!({ "code": 9, "message": message }),
        None => done["response"] = typed.clone(),
    }
    state.operations.insert(name.clone(), done);
    json!({ "name": name, "metadata": typed, "done": false })
}
