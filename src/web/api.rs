//! The JSON API for requests, under `/api/v1`: thin handlers over [`crate::lifecycle`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::AppError;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::views::{ApprovalView, RequestView};
use super::{AppState, created};
use crate::domain::State as RequestState;
use crate::lifecycle::{Decision, ExtendForm, RequestForm};
use crate::store::{RequestFilter, RequestRead};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/requests", post(create).get(list))
        .route("/requests/preview", post(preview))
        .route("/requests/{id}", get(show))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/reject", post(reject))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/close", post(close))
        .route("/requests/{id}/extend", post(extend))
        .route("/requests/{id}/review", post(review))
}

async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(form): ApiJson<RequestForm>,
) -> Result<(axum::http::StatusCode, Json<RequestView>), AppError> {
    let request = state.lifecycle.file(&caller, form).await?;
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
    Caller(caller): Caller,
    ApiJson(form): ApiJson<RequestForm>,
) -> Result<Json<Preview>, AppError> {
    let checked = state.lifecycle.preview(&caller, &form).await?;
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
) -> Result<Response, AppError> {
    let read = state.lifecycle.load_visible_read(&caller, &id).await?;
    let body = answer_of(&state, &read)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Bytes::clone(&body),
    )
        .into_response())
}

/// The answer to a read of the request: made at the first read of the data and kept with it
/// ([`RequestRead::derived`]), since it depends on nothing else; the reads the cache serves
/// only check who may see it.
fn answer_of(state: &AppState, read: &RequestRead) -> Result<Arc<Bytes>, AppError> {
    read.derived.get_or_make(|| {
        let mut view = RequestView::new(read.request.clone());
        view.approvals = Some(
            read.approvals
                .iter()
                .cloned()
                .map(ApprovalView::from)
                .collect(),
        );
        view.approval = Some(state.lifecycle.tally_of(&read.request, &read.approvals));
        view.notifications = Some(super::notices::views(&read.messages));
        let body = serde_json::to_vec(&view).map_err(anyhow::Error::from)?;
        Ok(Bytes::from(body))
    })
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
    if !state.lifecycle.has_a_role(&caller) {
        return Err(AppError::Forbidden(
            "you hold no role on this broker (requester, approver or auditor); ask its operators"
                .into(),
        ));
    }
    let filter = RequestFilter {
        state: wanted,
        ticket: q.ticket,
        requester_subject: None,
        visible_to: state.lifecycle.visibility(&caller),
        limit,
    };
    let requests = state.store.requests(&filter).await?;
    Ok(Json(
        requests
            .into_iter()
            .filter(|r| state.lifecycle.may_see(&caller, r))
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
    let request = state
        .lifecycle
        .decide(
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
    let request = state
        .lifecycle
        .decide(&caller, &id, Decision::Reject, None, &body.comment)
        .await?;
    Ok(Json(RequestView::new(request)))
}

async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, AppError> {
    Ok(Json(RequestView::new(
        state.lifecycle.cancel(&caller, &id).await?,
    )))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    comment: String,
}

/// Ends a breakglass now. The body `{"comment": "..."}` may be left out by the requester; an
/// approver ending someone else's breakglass must say why.
async fn close(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RequestView>, AppError> {
    let body: CloseBody = if body.iter().all(u8::is_ascii_whitespace) {
        CloseBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AppError::BadRequest(format!("the body could not be read: {e}")))?
    };
    Ok(Json(RequestView::new(
        state.lifecycle.close(&caller, &id, &body.comment).await?,
    )))
}

/// Files an extension of the caller's active breakglass `id`: 201 with the extension, which
/// names `id` in `extends` and waits for the target's approvals.
async fn extend(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(form): ApiJson<ExtendForm>,
) -> Result<(axum::http::StatusCode, Json<RequestView>), AppError> {
    let extension = state.lifecycle.extend(&caller, &id, form).await?;
    Ok(created(Json(RequestView::new(extension))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    review: String,
}

/// The requester's post-incident review of a breakglass that ended.
async fn review(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> Result<Json<RequestView>, AppError> {
    Ok(Json(RequestView::new(
        state.lifecycle.review(&caller, &id, &body.review).await?,
    )))
}
