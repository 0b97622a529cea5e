//! The REST routes of the simulated Cloud Run Admin API v2, with Google's error shape.

use std::collections::HashMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::SimRun;
use super::reconcile::{self, ApiError};

type Params = Query<HashMap<String, String>>;

/// Who the caller's bearer token stands for.
#[derive(Clone)]
struct Caller(String);

pub fn router(sim: SimRun) -> Router {
    let base = "/v2/projects/{project}/locations/{location}";
    Router::new()
        .route(
            &format!("{base}/services"),
            get(list_services).post(create_service),
        )
        .route(
            &format!("{base}/services/{{service}}"),
            get(get_service).patch(patch_service).delete(delete_service),
        )
        .route(
            &format!("{base}/services/{{service}}/revisions"),
            get(list_revisions),
        )
        .route(
            &format!("{base}/operations/{{operation}}"),
            get(get_operation).post(wait_operation),
        )
        .fallback(|| async { ApiError(404, "NOT_FOUND", "no such method".into()) })
        .layer(middleware::from_fn_with_state(sim.clone(), authenticate))
        .with_state(sim)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(code, status, message) = self;
        let body = json!({ "error": { "code": code, "message": message, "status": status } });
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(body)).into_response()
    }
}

/// Every call needs a bearer token the configured authorizer accepts.
async fn authenticate(State(sim): State<SimRun>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match (sim.config.authorize)(token) {
        Some(who) => {
            request.extensions_mut().insert(Caller(who));
            next.run(request).await
        }
        None => ApiError(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.".into(),
        )
        .into_response(),
    }
}

/// The project and location must be the simulated ones.
fn check_parent(sim: &SimRun, project: &str, location: &str) -> Result<(), ApiError> {
    if project == sim.config.project && location == sim.config.region {
        Ok(())
    } else {
        Err(ApiError(
            404,
            "NOT_FOUND",
            format!("Location projects/{project}/locations/{location} is not served here"),
        ))
    }
}

async fn list_services(
    State(sim): State<SimRun>,
    Path((project, location)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_parent(&sim, &project, &location)?;
    let services: Vec<Value> = sim.state().services.values().cloned().collect();
    Ok(Json(json!({ "services": services })))
}

async fn get_service(
    State(sim): State<SimRun>,
    Path((project, location, service)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_parent(&sim, &project, &location)?;
    sim.service(&service)
        .map(Json)
        .ok_or_else(|| reconcile::not_found(&service))
}

fn validate_only(params: &HashMap<String, String>) -> bool {
    params.get("validateOnly").is_some_and(|v| v == "true")
}

async fn create_service(
    State(sim): State<SimRun>,
    Extension(Caller(who)): Extension<Caller>,
    Path((project, location)): Path<(String, String)>,
    Query(params): Params,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    check_parent(&sim, &project, &location)?;
    let Some(id) = params.get("serviceId").filter(|id| is_service_id(id)) else {
        return Err(ApiError(
            400,
            "INVALID_ARGUMENT",
            "serviceId must be given: up to 49 lower-case letters, digits and '-', starting with a letter".into(),
        ));
    };
    sim.mutate(validate_only(&params), |config, state| {
        reconcile::create(config, state, id, body, &who)
    })
}

async fn patch_service(
    State(sim): State<SimRun>,
    Extension(Caller(who)): Extension<Caller>,
    Path((project, location, service)): Path<(String, String, String)>,
    Query(params): Params,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    check_parent(&sim, &project, &location)?;
    let mask = params
        .get("updateMask")
        .map(|m| m.split(',').map(|f| f.trim().to_owned()).collect());
    let missing_allowed = params.get("allowMissing").is_some_and(|v| v == "true");
    sim.mutate(validate_only(&params), |config, state| {
        let name = format!("{}/services/{service}", sim.parent());
        if missing_allowed && !state.services.contains_key(&name) {
            return reconcile::create(config, state, &service, body, &who);
        }
        reconcile::patch(config, state, &service, body, mask, &who)
    })
}

async fn delete_service(
    State(sim): State<SimRun>,
    Path((project, location, service)): Path<(String, String, String)>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    check_parent(&sim, &project, &location)?;
    sim.mutate(validate_only(&params), |config, state| {
        reconcile::delete(
            config,
            state,
            &service,
            params.get("etag").map(String::as_str),
        )
    })
}

async fn list_revisions(
    State(sim): State<SimRun>,
    Path((project, location, service)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_parent(&sim, &project, &location)?;
    if sim.service(&service).is_none() {
        return Err(reconcile::not_found(&service));
    }
    let mut revisions = sim.revisions(&service);
    revisions.reverse();
    Ok(Json(json!({ "revisions": revisions })))
}

fn find_operation(sim: &SimRun, operation: &str) -> Result<Value, ApiError> {
    let name = format!("{}/operations/{operation}", sim.parent());
    sim.state()
        .operations
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError(404, "NOT_FOUND", format!("Operation {name} not found")))
}

async fn get_operation(
    State(sim): State<SimRun>,
    Path((project, location, operation)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_parent(&sim, &project, &location)?;
    find_operation(&sim, &operation).map(Json)
}

/// `operations/OP:wait`: every simulated operation is finished by the time anyone asks.
async fn wait_operation(
    State(sim): State<SimRun>,
    Path((project, location, operation)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_parent(&sim, &project, &location)?;
    let Some(operation) = operation.strip_suffix(":wait") else {
        return Err(ApiError(404, "NOT_FOUND", "no such method".into()));
    };
    find_operation(&sim, operation).map(Json)
}

fn is_service_id(id: &str) -> bool {
    id.len() <= 49
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl SimRun {
    /// Runs a write; with `validate_only`, on a copy that is thrown away, answering with the
    /// operation as it would finish.
    fn mutate(
        &self,
        validate_only: bool,
        change: impl FnOnce(&super::SimRunConfig, &mut super::State) -> Result<Value, ApiError>,
    ) -> Result<Json<Value>, ApiError> {
        let mut state = self.state();
        if !validate_only {
            let cued: Vec<String> = state.cued.keys().cloned().collect();
            for id in cued {
                if let Some((fields, who)) = state.cued.remove(&id) {
                    // A cue for a service that is gone has nothing to race.
                    let _ = super::write_over(&self.config, &mut state, &id, fields, &who);
                }
            }
        }
        if validate_only {
            let mut copy = state.clone();
            let pending = change(&self.config, &mut copy)?;
            let name = pending["name"].as_str().unwrap_or_default();
            return Ok(Json(copy.operations.get(name).cloned().unwrap_or(pending)));
        }
        change(&self.config, &mut state).map(Json)
    }
}
