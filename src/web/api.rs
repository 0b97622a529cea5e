//! The JSON API, `/api/v1`: thin handlers over [`super::actions`].

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::actions::{self, Decision, RequestForm};
use super::error::AppError;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::{AppState, created};
use crate::clock::rfc3339;
use crate::domain::{ApprovalTally, State as RequestState};
use crate::store::{Approval, Request, RequestFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/requests", post(create).get(list))
        .route("/requests/preview", post(preview))
        .route("/requests/{id}", get(show))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/reject", post(reject))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/close", post(close))
        .merge(super::audit_api::router())
}

/// A request as the API shows it.
#[derive(Serialize)]
pub struct RequestView {
    pub id: String,
    pub state: RequestState,
    pub digest: String,
    pub target: String,
    pub namespace: String,
    pub ticket: String,
    pub justification: String,
    pub requester: String,
    pub duration_minutes: i64,
    pub created_at: String,
    pub decide_by: String,
    pub applied_at: Option<String>,
    pub expires_at: Option<String>,
    pub ended_at: Option<String>,
    pub last_error: Option<String>,
    pub objects: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Vec<ApprovalView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalTally>,
}

#[derive(Serialize)]
pub struct ApprovalView {
    pub approver: String,
    pub decision: String,
    pub comment: String,
    pub digest: String,
    pub at: String,
}

impl From<Approval> for ApprovalView {
    fn from(a: Approval) -> Self {
        ApprovalView {
            approver: a.approver_name,
            decision: a.decision,
            comment: a.comment,
            digest: a.digest,
            at: rfc3339(a.at),
        }
    }
}

impl RequestView {
    pub fn new(r: Request) -> Self {
        let objects = serde_json::from_str(&r.objects).unwrap_or(Value::Null);
        RequestView {
            id: r.id,
            state: r.state,
            digest: r.digest,
            target: r.target,
            namespace: r.namespace,
            ticket: r.ticket,
            justification: r.justification,
            requester: r.requester_name,
            duration_minutes: r.duration_seconds / 60,
            created_at: rfc3339(r.created_at),
            decide_by: rfc3339(r.decide_by),
            applied_at: r.applied_at.map(rfc3339),
            // Planned expiry is only a fact once the request is live.
            expires_at: r.expires_at.filter(|_| r.applied_at.is_some()).map(rfc3339),
            ended_at: r.ended_at.map(rfc3339),
            last_error: r.last_error,
            objects,
            approvals: None,
            approval: None,
        }
    }
}

async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(form): ApiJson<RequestForm>,
) -> Result<(axum::http::StatusCode, Json<RequestView>), AppError> {
    let request = actions::create(&state, &caller, form).await?;
    Ok(created(Json(RequestView::new(request))))
}

#[derive(Serialize)]
struct Preview {
    digest: String,
    approval_rule: String,
    objects: Vec<Value>,
}

/// What a request would be, or every finding that would refuse it; nothing is stored.
async fn preview(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    ApiJson(form): ApiJson<RequestForm>,
) -> Result<Json<Preview>, AppError> {
    let checked = actions::check(&state, &form)?;
    Ok(Json(Preview {
        digest: checked.digest,
        approval_rule: checked.rule,
        objects: checked.objects.into_iter().map(|o| o.body).collect(),
    }))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, AppError> {
    let request = actions::load_visible(&state, &caller, &id).await?;
    let (tally, approvals) = actions::tally_for(&state, &request).await?;
    let mut view = RequestView::new(request);
    view.approvals = Some(approvals.into_iter().map(ApprovalView::from).collect());
    view.approval = Some(tally);
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    ticket: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<RequestView>>, AppError> {
    let wanted = match q.state.as_deref() {
        None | Some("") => None,
        Some(name) => Some(RequestState::parse(name).ok_or_else(|| {
            let names: Vec<&str> = RequestState::ALL.iter().map(|s| s.as_str()).collect();
            AppError::BadRequest(format!(
                "state {name:?} is not one of: {}",
                names.join(", ")
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let filter = RequestFilter {
        state: wanted,
        ticket: q.ticket,
        requester_subject: None,
        limit,
    };
    let requests = state.store.requests(&filter).await?;
    Ok(Json(
        requests
            .into_iter()
            .filter(|r| actions::can_see(&state, &caller, r))
            .map(RequestView::new)
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    digest: String,
    #[serde(default)]
    comment: String,
}

async fn approve(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> Result<Json<RequestView>, AppError> {
    let request = actions::decide(
        &state,
        &caller,
        &id,
        Decision::Approve,
        Some(&body.digest),
        &body.comment,
    )
    .await?;
    Ok(Json(RequestView::new(request)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    #[serde(default)]
    comment: String,
}

async fn reject(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Json<RequestView>, AppError> {
    let request =
        actions::decide(&state, &caller, &id, Decision::Reject, None, &body.comment).await?;
    Ok(Json(RequestView::new(request)))
}

async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, AppError> {
    Ok(Json(RequestView::new(
        actions::cancel(&state, &caller, &id).await?,
    )))
}

async fn close(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, AppError> {
    Ok(Json(RequestView::new(
        actions::close(&state, &caller, &id).await?,
    )))
}
