//! The auditor's JSON API: search, export, the view per ticket and the chain's verification.
//!
//! Who sees what: auditors everything. Anyone else sees the events of a request only where
//! they may see the request itself ([`crate::domain::access::may_see`]: its requester, and those who may
//! decide on it), and only by naming it (`?request=`) or its ticket; the free search, the
//! export and the verification are for auditors.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::AppError;
use super::extract::{ApiQuery, Caller};
use super::views::{ApprovalView, RequestView};
use crate::audit::export::{self, Format};
use crate::audit::{Report, verify_store};
use crate::clock::{Millis, rfc3339};
use crate::domain::Person;
use crate::store::{AuditCheck, AuditEvent, AuditFilter, Store};

/// Longest value accepted for a text filter; longer ones match nothing anyway.
const MAX_FILTER_LEN: usize = 256;

pub fn router() -> axum::Router<AppState> {
    Router::new()
        .route("/audit", get(search))
        .route("/audit/export", get(export))
        .route("/audit/verification", get(last_check).post(verify_now))
        .route("/tickets/{ticket}", get(ticket))
}

/// The filters of a search or an export, as the query string gives them. Times are RFC 3339.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The person who acted, by subject: a name alone may belong to several people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Events at or after this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Events before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Events older than this seq: the next page of a search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `csv` or `jsonl`, for the export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl AuditQuery {
    /// The store's filter for these parameters, or a message saying which one is wrong.
    /// `limit` is checked by the caller, which knows whether it applies.
    pub fn filter(&self) -> Result<AuditFilter, AppError> {
        let since = time_param("since", self.since.as_deref())?;
        let until = time_param("until", self.until.as_deref())?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(AppError::BadRequest(
                "since must be earlier than until".into(),
            ));
        }
        let before_seq =
            match present(self.before.as_deref()) {
                None => None,
                Some(text) => Some(text.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(
                    || {
                        AppError::BadRequest(format!(
                            "before must be an event's seq (a whole number from 1), not {text:?}"
                        ))
                    },
                )?),
            };
        Ok(AuditFilter {
            request_id: text_param("request", self.request.as_deref())?,
            ticket: text_param("ticket", self.ticket.as_deref())?,
            actor: text_param("actor", self.actor.as_deref())?,
            actor_subject: text_param("subject", self.subject.as_deref())?,
            target: text_param("target", self.target.as_deref())?,
            namespace: text_param("namespace", self.namespace.as_deref())?,
            action: text_param("action", self.action.as_deref())?,
            since,
            until,
            before_seq,
            ..AuditFilter::default()
        })
    }

    /// The page size asked for: 1 to 1000, 100 when not given.
    pub fn page_size(&self) -> Result<i64, AppError> {
        match present(self.limit.as_deref()) {
            None => Ok(100),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    AppError::BadRequest(format!(
                        "limit must be a whole number from 1 to 1000, not {text:?}"
                    ))
                }),
        }
    }
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn text_param(name: &str, value: Option<&str>) -> Result<Option<String>, AppError> {
    match present(value) {
        Some(text) if text.len() > MAX_FILTER_LEN => Err(AppError::BadRequest(format!(
            "{name} is longer than {MAX_FILTER_LEN} characters"
        ))),
        // Refused here, before an export's headers go out, not by the database midway.
        Some(text) if text.contains('\0') => Err(AppError::BadRequest(format!(
            "{name} holds a NUL character (%00), which no event holds"
        ))),
        other => Ok(other.map(str::to_owned)),
    }
}

/// A time as milliseconds since the epoch: RFC 3339 (`2026-11-23T09:30:00Z`, any offset), or
/// in UTC as the page's date and datetime-local inputs send it (`2026-11-23T09:30`,
/// `2026-11-23`).
pub fn time_param(name: &str, value: Option<&str>) -> Result<Option<Millis>, AppError> {
    let Some(text) = present(value) else {
        return Ok(None);
    };
    let rfc3339 = chrono::DateTime::parse_from_rfc3339(text).map(|at| at.timestamp_millis());
    let minute = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .map(|at| at.and_utc().timestamp_millis());
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc().timestamp_millis());
    match (rfc3339, minute, day) {
        (Ok(at), _, _) | (_, Ok(at), _) | (_, _, Some(at)) => Ok(Some(at)),
        _ => Err(AppError::BadRequest(format!(
            "{name} must be an RFC 3339 time such as 2026-11-23T09:30:00Z (or a UTC date, 2026-11-23), not {text:?}"
        ))),
    }
}

fn require_auditor(state: &AppState, caller: &Person, what: &str) -> Result<(), AppError> {
    if state.config.roles.audits(caller) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "{what} is for auditors (members of: {})",
            state.config.roles.auditors.join(", ")
        )))
    }
}

/// The history, newest first, a page at a time. A full page comes with a `Link` header
/// (`rel="next"`) for the page after it, keyed on seq so that events written meanwhile do not
/// shift it. Auditors may search everything; anyone else only the timeline of a request they
/// can see, named with `request=`.
async fn search(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, AppError> {
    if q.format.is_some() {
        return Err(AppError::BadRequest(
            "format applies to /api/v1/audit/export".into(),
        ));
    }
    let mut filter = q.filter()?;
    filter.limit = q.page_size()?;
    if !state.config.roles.audits(&caller) {
        let Some(id) = filter.request_id.as_deref() else {
            return Err(AppError::Forbidden("the audit history is for auditors; others may ask for one request they can see with ?request=ID".into()));
        };
        state.lifecycle.load_visible(&caller, id).await?;
    }
    let events = state.store.audit_events(&filter).await?;
    let mut headers = HeaderMap::new();
    if events.len() as i64 == filter.limit
        && let Some(last) = events.last()
    {
        let mut next = q.clone();
        next.before = Some(last.seq.to_string());
        let query = serde_urlencoded::to_string(&next).map_err(anyhow::Error::from)?;
        let link = format!("</api/v1/audit?{query}>; rel=\"next\"");
        headers.insert(
            header::LINK,
            HeaderValue::from_str(&link).map_err(anyhow::Error::from)?,
        );
    }
    Ok((headers, Json(events)).into_response())
}

/// Every event matching the filters, oldest first, as CSV or JSON Lines, streamed: the
/// whole history exports in constant memory. Auditors only.
async fn export(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, AppError> {
    require_auditor(&state, &caller, "exporting the audit history")?;
    let format = match present(q.format.as_deref()) {
        Some("csv") => Format::Csv,
        Some("jsonl") => Format::Jsonl,
        other => {
            return Err(AppError::BadRequest(format!(
                "format must be csv or jsonl{}",
                other.map(|f| format!(", not {f:?}")).unwrap_or_default()
            )));
        }
    };
    if q.limit.is_some() {
        return Err(AppError::BadRequest(
            "an export holds every matching event; limit applies to /api/v1/audit".into(),
        ));
    }
    let mut filter = q.filter()?;
    filter.oldest_first = true;
    // Every change committed before the ask is in the file, whichever replica made it.
    state.store.chain_committed().await;
    let name = format!(
        "attachment; filename=\"audit-{}.{}\"",
        rfc3339(state.clock.now()).replace(':', ""),
        format.extension()
    );
    let headers = [
        (header::CONTENT_TYPE, format.content_type().to_owned()),
        (header::CONTENT_DISPOSITION, name),
        (header::CACHE_CONTROL, "no-store".to_owned()),
    ];
    Ok((headers, export_body(state.store.clone(), filter, format)).into_response())
}

/// The body of an export: a task reads the events and encodes them a chunk at a time into a
/// small channel, so memory stays constant and a slow reader slows the database read rather
/// than filling memory. A client that goes away ends the task. A database failure midway
/// aborts the response, so that nobody mistakes a cut-off file for a complete one.
pub fn export_body(store: Store, filter: AuditFilter, format: Format) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::spawn(async move {
        if let Err(why) = export::export(&store, &filter, format, &tx).await {
            tracing::error!(error = %why, "audit export failed midway; the response is aborted");
            let _ = tx
                .send(Err(std::io::Error::other("audit export failed midway")))
                .await;
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Bytes::from), rx))
    }))
}

/// The last verification a replica recorded (every few minutes, see
/// [`crate::audit::checkpoint::run`]): cheap, for the audit page. Auditors only.
async fn last_check(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<LastCheck>, AppError> {
    require_auditor(&state, &caller, "the audit history's verification")?;
    Ok(Json(LastCheck {
        last_check: state.store.last_audit_check().await?,
    }))
}

#[derive(Serialize)]
pub struct LastCheck {
    pub last_check: Option<AuditCheck>,
}

/// Verifies the whole history now and records the outcome: a walk of the whole chain (under
/// two seconds per million events on SQLite, read on two connections; see the audit
/// benchmark), so it is a deliberate act (POST). Auditors only.
async fn verify_now(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Verification>, AppError> {
    require_auditor(&state, &caller, "verifying the audit history")?;
    // Everything committed before the ask is checked, not only what was chained by then.
    state.store.chain_committed().await;
    let report = verify_store(&state.store, &[]).await?;
    state
        .store
        .record_audit_check(&report.as_check(state.clock.now()))
        .await?;
    Ok(Json(Verification::from(report)))
}

/// A verification as the API shows it.
#[derive(Serialize)]
pub struct Verification {
    pub intact: bool,
    pub summary: String,
    pub first_bad_seq: Option<i64>,
    #[serde(flatten)]
    pub report: Report,
}

impl From<Report> for Verification {
    fn from(report: Report) -> Self {
        Verification {
            intact: report.is_intact(),
            summary: report.summary(),
            first_bad_seq: report.problem.as_ref().map(|p| p.first_bad_seq()),
            report,
        }
    }
}

/// Every request filed under a ticket that the caller may see, newest first, each with its
/// decisions and its whole timeline (oldest first).
#[derive(Serialize)]
pub struct TicketView {
    pub ticket: String,
    pub requests: Vec<TicketRequest>,
    /// More requests exist under the ticket than are listed.
    pub truncated: bool,
}

#[derive(Serialize)]
pub struct TicketRequest {
    #[serde(flatten)]
    pub request: RequestView,
    pub events: Vec<AuditEvent>,
}

/// The view of one ticket for this caller; not found when the caller may see none of its
/// requests.
async fn ticket(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(ticket): Path<String>,
) -> Result<Json<TicketView>, AppError> {
    let ticket = text_param("ticket", Some(&ticket))?.ok_or(AppError::NotFound)?;
    let history = state.lifecycle.ticket_history(&caller, &ticket).await?;
    Ok(Json(TicketView {
        ticket: history.ticket,
        truncated: history.truncated,
        requests: history
            .requests
            .into_iter()
            .map(|r| {
                let mut view = RequestView::new(r.request);
                view.approvals = Some(r.approvals.into_iter().map(ApprovalView::from).collect());
                TicketRequest {
                    request: view,
                    events: r.events,
                }
            })
            .collect(),
    }))
}
