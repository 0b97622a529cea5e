//! The detector's findings for people: `GET /api/v1/alerts`, `POST
//! /api/v1/alerts/{id}/acknowledge`, the `/alerts` page and its acknowledge form. Auditors
//! see every finding; a target's approvers see that target's; nobody else sees any.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::AppState;
use super::error::AppError;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::pages::{CsrfForm, Nav, PageError, SignedIn};
use crate::domain::Person;
use crate::store::{Finding, FindingState};

/// The longest acknowledgement comment.
const MAX_COMMENT: usize = 2000;
/// How many findings a list shows.
const LIST_LIMIT: i64 = 500;

pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/alerts", get(list))
        .route("/alerts/{id}/acknowledge", post(acknowledge))
}

pub fn page_router() -> Router<AppState> {
    Router::new()
        .route("/alerts", get(page))
        .route("/alerts/{id}/acknowledge", post(acknowledge_form))
}

/// Which findings a person may see and acknowledge.
enum Scope {
    All,
    Targets(Vec<String>),
}

impl Scope {
    /// Auditors see all; approvers of a target see its findings; None for everyone else.
    fn of(state: &AppState, person: &Person) -> Option<Scope> {
        if state.config.roles.audits(person) {
            return Some(Scope::All);
        }
        let targets: Vec<String> = state
            .lifecycle
            .targets
            .iter()
            .filter(|entry| {
                entry
                    .rules()
                    .iter()
                    .any(|rule| person.groups.contains(&rule.group))
            })
            .map(|entry| entry.name().to_owned())
            .collect();
        (!targets.is_empty()).then_some(Scope::Targets(targets))
    }

    fn covers(&self, finding: &Finding) -> bool {
        match self {
            Scope::All => true,
            Scope::Targets(targets) => targets.contains(&finding.target),
        }
    }
}

fn scope(state: &AppState, person: &Person) -> Result<Scope, AppError> {
    Scope::of(state, person).ok_or_else(|| {
        AppError::Forbidden("alerts are for auditors and the targets' approvers".into())
    })
}

/// How many open findings this person should be alarmed by (0 for those who see none).
pub async fn open_for(state: &AppState, person: &Person) -> Result<usize, AppError> {
    let Some(scope) = Scope::of(state, person) else {
        return Ok(0);
    };
    let open = state
        .store
        .findings(Some(FindingState::Open), LIST_LIMIT)
        .await?;
    Ok(open.iter().filter(|f| scope.covers(f)).count())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<Finding>>, AppError> {
    let scope = scope(&state, &caller)?;
    let wanted = match q.state.as_deref() {
        None | Some("") => None,
        Some(name) => Some(FindingState::parse(name).ok_or_else(|| {
            AppError::BadRequest(format!(
                "state {:?} is not one of: open, acknowledged",
                name.chars().take(40).collect::<String>()
            ))
        })?),
    };
    let findings = state.store.findings(wanted, LIST_LIMIT).await?;
    Ok(Json(
        findings.into_iter().filter(|f| scope.covers(f)).collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcknowledgeBody {
    #[serde(default)]
    comment: String,
}

async fn acknowledge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AcknowledgeBody>,
) -> Result<Json<Finding>, AppError> {
    Ok(Json(
        acknowledge_as(&state, &caller, &id, &body.comment).await?,
    ))
}

async fn acknowledge_as(
    state: &AppState,
    person: &Person,
    id: &str,
    comment: &str,
) -> Result<Finding, AppError> {
    let scope = scope(state, person)?;
    let comment = comment.trim();
    if comment.is_empty() {
        return Err(AppError::BadRequest(
            "comment is required: say what was found and what was done".into(),
        ));
    }
    if comment.chars().count() > MAX_COMMENT {
        return Err(AppError::BadRequest(format!(
            "comment must be at most {MAX_COMMENT} characters"
        )));
    }
    let finding = state
        .store
        .finding(id)
        .await?
        .filter(|f| scope.covers(f))
        .ok_or(AppError::NotFound)?;
    if finding.state != FindingState::Open.as_str() {
        return Err(AppError::Conflict(
            "this alert was already acknowledged".into(),
        ));
    }
    let done = state
        .store
        .acknowledge_finding(
            id,
            &person.name,
            (&person.issuer, &person.subject),
            comment,
            state.clock.now(),
        )
        .await?;
    match done {
        Some((finding, _)) => Ok(finding),
        None => Err(AppError::Conflict(
            "this alert was already acknowledged".into(),
        )),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "alerts/index.html")]
pub struct AlertsPage {
    nav: Nav,
    open: Vec<Finding>,
    acknowledged: Vec<Finding>,
}

impl AlertsPage {
    fn list(value: &serde_json::Value) -> String {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => s.clone(),
                        other => match (other["kind"].as_str(), other["name"].as_str()) {
                            (Some(kind), Some(name)) => format!("{kind}/{name}"),
                            _ => other["reason"]
                                .as_str()
                                .map(|r| r.replace('_', " "))
                                .unwrap_or_else(|| other.to_string()),
                        },
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }

    fn when(at: &i64) -> String {
        crate::clock::rfc3339(*at)
    }
}

async fn page(State(state): State<AppState>, viewer: SignedIn) -> Result<AlertsPage, PageError> {
    let scope = scope(&state, &viewer.person)?;
    let all = state.store.findings(None, LIST_LIMIT).await?;
    let (open, acknowledged) = all
        .into_iter()
        .filter(|f| scope.covers(f))
        .partition(|f| f.state == FindingState::Open.as_str());
    Ok(AlertsPage {
        nav: viewer.nav(&state),
        open,
        acknowledged,
    })
}

#[derive(Deserialize)]
struct AcknowledgeForm {
    #[serde(default)]
    comment: String,
}

async fn acknowledge_form(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm<AcknowledgeForm>,
) -> Result<Redirect, PageError> {
    acknowledge_as(&state, &form.viewer.person, &id, &form.form.comment).await?;
    Ok(Redirect::to("/alerts"))
}
