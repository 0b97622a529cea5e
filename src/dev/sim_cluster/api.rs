//! Resource URLs: routing, authentication, content negotiation, and the verbs.
//!
//! Handlers read top to bottom: find the resource from the path, authenticate writes,
//! decode the body, do the work under the store lock, render the answer.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::objects::key_for;
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::table::{self, IncludeObject, Rendering};
use super::watch;
use super::writes::{self, Preconditions, Write};
use super::{BROKER_USER, SimCluster};

/// What a resource URL names.
struct Target<'a> {
    res: &'static ResourceType,
    /// Set for namespaced URLs.
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

fn target(path: &str) -> Result<Target<'_>, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(ApiError::no_such_path());
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_such_path()),
    };
    let (namespace, plural, name) = match rest {
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        _ => return Err(ApiError::no_such_path()),
    };
    let res = resources::find(group, version, plural).ok_or_else(ApiError::no_such_path)?;
    let cluster_wide_item = res.namespaced && namespace.is_none() && name.is_some();
    if (!res.namespaced && namespace.is_some()) || cluster_wide_item {
        return Err(ApiError::no_such_path());
    }
    Ok(Target {
        res,
        namespace,
        name,
    })
}

/// Every request to `/api/v1/...` and `/apis/{group}/{version}/...`.
pub(crate) async fn handle(
    State(sim): State<SimCluster>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let request = Request {
        sim: &sim,
        headers: &headers,
        query: &query,
    };
    let outcome = target(uri.path()).and_then(|t| request.dispatch(&method, &t, &body));
    match outcome {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

struct Request<'a> {
    sim: &'a SimCluster,
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Parses a body that may be JSON or YAML (JSON first: it is what clients send most).
fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body).or_else(|json_error| {
        serde_saphyr::from_slice::<Value>(body).map_err(|yaml_error| {
            ApiError::bad_request(format!(
                "the request body is neither JSON ({json_error}) nor YAML ({yaml_error})"
            ))
        })
    })
}

impl Request<'_> {
    fn dispatch(&self, method: &Method, t: &Target, body: &[u8]) -> Result<Response, ApiError> {
        if *method == Method::GET {
            return match t.name {
                None => self.list(t),
                Some(name) => self.get(t, name),
            };
        }
        let verb = match (method.as_str(), t.name) {
            ("POST", None) => "create",
            ("PUT", Some(_)) => "update",
            ("PATCH", Some(_)) => "patch",
            ("DELETE", Some(_)) => "delete",
            _ => return Err(ApiError::method_not_allowed()),
        };
        let user = self.authenticate(t, verb)?;
        if t.res.read_only {
            return Err(ApiError::method_not_allowed());
        }
        let namespace = t.namespace.ok_or_else(ApiError::method_not_allowed)?;
        if !self.sim.namespace_exists(namespace) {
            return Err(ApiError::namespace_not_found(namespace));
        }
        let w = Write {
            res: t.res,
            namespace,
            user: &user,
            manager: self.param("fieldManager").unwrap_or(""),
            dry_run: self.param("dryRun") == Some("All"),
            attested: &self.sim.config().attested_prefixes,
            policy: self.sim.admission_policy(),
            orphan: false,
        };
        match (verb, t.name) {
            ("create", _) => {
                let object = writes::create(&mut self.sim.store(), &w, parse_body(body)?)?;
                Ok(json_response(StatusCode::CREATED, &object))
            }
            ("update", Some(name)) => {
                let object = writes::replace(&mut self.sim.store(), &w, name, parse_body(body)?)?;
                Ok(json_response(StatusCode::OK, &object))
            }
            ("patch", Some(name)) => self.patch(&w, name, body),
            ("delete", Some(name)) => self.delete(w, name, body),
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// Reads are open to anyone; writes need the configured bearer token.
    fn authenticate(&self, t: &Target, verb: &str) -> Result<String, ApiError> {
        let token = self
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match token {
            None | Some("") => Err(ApiError::unauthorized()),
            Some(token) if constant_time_eq(token, &self.sim.config().write_token) => {
                Ok(BROKER_USER.to_owned())
            }
            Some(token) if self.sim.writer(token).is_some() => {
                Ok(self.sim.writer(token).unwrap_or_default())
            }
            Some(_) => Err(ApiError::forbidden(format!(
                "{} is forbidden: User \"system:anonymous\" cannot {verb} resource \"{}\" in API group \"{}\" in the namespace \"{}\"",
                t.res.qualified(),
                t.res.plural,
                t.res.group,
                t.namespace.unwrap_or(""),
            ))),
        }
    }

    fn rendering(&self) -> Result<Rendering, ApiError> {
        let accept = self
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        Rendering::negotiate(accept).ok_or_else(ApiError::not_acceptable)
    }

    fn list(&self, t: &Target) -> Result<Response, ApiError> {
        let watching = watch::requested(self.query);
        if t.res.namespaced && t.namespace.is_none() && !self.sim.cluster_wide_reads() {
            // As under RBAC that grants reads only by RoleBindings in some namespaces.
            return Err(ApiError::forbidden(format!(
                "{} is forbidden: cannot {} resource \"{}\" in API group \"{}\" at the cluster scope",
                t.res.qualified(),
                if watching { "watch" } else { "list" },
                t.res.plural,
                t.res.group,
            )));
        }
        let rendering = self.rendering()?;
        let labels = LabelSelector::parse(self.param("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(self.param("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        if watching {
            let request = watch::Request {
                res: t.res,
                namespace: t.namespace.map(str::to_owned),
                labels,
                fields,
                rendering,
                include: IncludeObject::parse(self.param("includeObject"))
                    .map_err(ApiError::bad_request)?,
            };
            return watch::serve(self.sim, request, self.query);
        }
        self.sim.count_list(t.res);
        let keep = |object: &Value| {
            let meta = &object["metadata"];
            labels.matches(meta.get("labels")) && fields.matches(meta)
        };
        let (items, resource_version) = if t.res.read_only {
            let items = self
                .sim
                .namespace_objects()
                .iter()
                .filter(|o| keep(o))
                .cloned()
                .collect();
            (items, self.sim.store().resource_version())
        } else {
            let store = self.sim.store();
            (
                store.list(t.res, t.namespace, keep),
                store.resource_version(),
            )
        };
        let body = match rendering {
            Rendering::Object => json!({
                "kind": format!("{}List", t.res.kind),
                "apiVersion": t.res.api_version(),
                "metadata": { "resourceVersion": resource_version },
                "items": items,
            }),
            Rendering::Metadata => table::partial_metadata_list(&items, &resource_version),
            Rendering::Table => self.table(t, &items, &resource_version)?,
        };
        Ok(json_response(StatusCode::OK, &body))
    }

    fn get(&self, t: &Target, name: &str) -> Result<Response, ApiError> {
        let rendering = self.rendering()?;
        let (object, resource_version) = if t.res.read_only {
            let object = self
                .sim
                .namespace_objects()
                .iter()
                .find(|o| o["metadata"]["name"] == name)
                .cloned();
            (object, self.sim.store().resource_version())
        } else {
            let key = key_for(t.res, t.namespace.unwrap_or(""), name);
            let store = self.sim.store();
            (store.get(&key), store.resource_version())
        };
        let object = object.ok_or_else(|| ApiError::not_found(t.res, name))?;
        let body = match rendering {
            Rendering::Object => object,
            Rendering::Metadata => table::partial_metadata(&object),
            Rendering::Table => self.table(t, std::slice::from_ref(&object), &resource_version)?,
        };
        Ok(json_response(StatusCode::OK, &body))
    }

    fn table(
        &self,
        t: &Target,
        items: &[Value],
        resource_version: &str,
    ) -> Result<Value, ApiError> {
        let include =
            IncludeObject::parse(self.param("includeObject")).map_err(ApiError::bad_request)?;
        Ok(table::table(
            t.res,
            items,
            resource_version,
            include,
            SystemTime::now(),
        ))
    }

    fn patch(&self, w: &Write, name: &str, body: &[u8]) -> Result<Response, ApiError> {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/apply-patch+yaml" => {
                if w.manager.is_empty() {
                    return Err(ApiError::bad_request(
                        "PATCH with application/apply-patch+yaml requires a fieldManager parameter",
                    ));
                }
                let force = self.param("force") == Some("true");
                let (object, created) =
                    writes::apply(&mut self.sim.store(), w, name, parse_body(body)?, force)?;
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok(json_response(code, &object))
            }
            // Strategic merge differs from JSON merge only for lists with merge keys,
            // which the simulator's callers (labels, annotations) never patch.
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let object = writes::patch(&mut self.sim.store(), w, name, parse_body(body)?)?;
                Ok(json_response(StatusCode::OK, &object))
            }
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }

    fn delete(&self, mut w: Write, name: &str, body: &[u8]) -> Result<Response, ApiError> {
        let options = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let text = |pointer: &str| {
            options
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let preconditions = Preconditions {
            resource_version: text("/preconditions/resourceVersion"),
            uid: text("/preconditions/uid"),
        };
        let dry_run_all = options["dryRun"]
            .as_array()
            .is_some_and(|modes| modes.iter().any(|m| m == "All"));
        w.dry_run |= dry_run_all;
        w.orphan = options["propagationPolicy"] == "Orphan";
        let object = writes::delete(&mut self.sim.store(), &w, name, &preconditions)?;
        Ok(json_response(StatusCode::OK, &object))
    }
}

/// Compares tokens without stopping at the first differing byte.
pub(super) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
