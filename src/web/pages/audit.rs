//! The audit page: every event, newest first, filtered by ticket, person, target and time.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::view;
use super::{Nav, PageError, SignedIn, urlencode};
use crate::domain::person::Names;
use crate::domain::timeline;
use crate::store::AuditFilter;
use crate::web::AppState;
use crate::web::audit_api::AuditQuery;
use crate::web::error::AppError;

const PAGE: i64 = 50;

#[derive(Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    person: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    before: Option<i64>,
}

pub struct EventRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    /// The event in words, as the request page's timeline says it.
    pub sentence: String,
    pub request_id: String,
    pub ticket: String,
    pub target: String,
    pub detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit/index.html")]
pub struct AuditPage {
    nav: Nav,
    filters: Filters,
    events: Vec<EventRow>,
    targets: Vec<String>,
    next_page: Option<String>,
    verification: Verification,
}

/// How far the hash chain was last found intact, in words.
pub struct Verification {
    pub ok: bool,
    pub text: String,
}

fn verification(check: Option<crate::store::AuditCheck>) -> Verification {
    match check {
        None => Verification {
            ok: true,
            text: "The history has not been verified yet; the broker checks the hash chain every 5 minutes.".into(),
        },
        Some(c) => match (c.first_bad_seq, c.problem) {
            (Some(seq), problem) => Verification {
                ok: false,
                text: format!(
                    "The history failed verification at event #{seq}: {} (checked {}). Verified intact through event #{}.",
                    problem.unwrap_or_else(|| "the chain does not match".into()),
                    view::when(c.checked_at),
                    c.verified_through
                ),
            },
            (None, _) => Verification {
                ok: true,
                text: format!(
                    "History verified intact through event #{} (checked {}).",
                    c.verified_through,
                    view::when(c.checked_at)
                ),
            },
        },
    }
}

pub async fn index(
    State(state): State<AppState>,
    viewer: SignedIn,
    Query(filters): Query<Filters>,
) -> Result<AuditPage, PageError> {
    if !state.config.roles.audits(&viewer.person) {
        return Err(AppError::Forbidden("The audit history is for auditors.".into()).into());
    }
    let query = AuditQuery {
        ticket: Some(filters.ticket.clone()),
        actor: Some(filters.person.clone()),
        target: Some(filters.target.clone()),
        since: Some(filters.since.clone()),
        until: Some(filters.until.clone()),
        before: filters.before.map(|seq| seq.to_string()),
        ..AuditQuery::default()
    };
    let filter = AuditFilter {
        limit: PAGE,
        ..query.filter()?
    };
    let events = state.store.audit_events(&filter).await?;
    let verification = verification(state.store.last_audit_check().await?);
    let next_page = (events.len() as i64 == PAGE).then(|| {
        let last = events.last().map(|e| e.seq).unwrap_or_default();
        format!(
            "/audit?ticket={}&person={}&target={}&since={}&until={}&before={last}",
            urlencode(&filters.ticket),
            urlencode(&filters.person),
            urlencode(&filters.target),
            urlencode(&filters.since),
            urlencode(&filters.until)
        )
    });
    let names = Names::new(events.iter().map(|e| (e.actor.as_str(), e.subject())));
    let events = events
        .into_iter()
        .map(|e| EventRow {
            seq: e.seq,
            at: view::when(e.at),
            detail: summary(&e.detail),
            sentence: timeline::sentence(&e.action, &names.show(&e.actor, e.subject()), &e.detail),
            actor: names.show(&e.actor, e.subject()),
            action: e.action,
            request_id: e.request_id.unwrap_or_default(),
            ticket: e.ticket.unwrap_or_default(),
            target: e.target.unwrap_or_default(),
        })
        .collect();
    Ok(AuditPage {
        nav: viewer.nav(&state),
        targets: state.lifecycle.targets.names().map(str::to_owned).collect(),
        filters,
        events,
        next_page,
        verification,
    })
}

/// The detail worth a glance in a table row; the full event is in the API and the export.
fn summary(detail: &serde_json::Value) -> String {
    // The broker writes every detail as a JSON object: text was put in the database by hand.
    if let serde_json::Value::String(text) = detail {
        return format!("not as the broker wrote it: {text}");
    }
    ["comment", "objects", "error", "conflicts"]
        .iter()
        .filter_map(|key| detail.get(*key).map(|v| (key, v)))
        .filter(|(_, v)| {
            !v.is_null() && v.as_str() != Some("") && v.as_array().is_none_or(|a| !a.is_empty())
        })
        .map(|(key, v)| match v {
            serde_json::Value::String(s) => format!("{key}: {s}"),
            other => format!("{key}: {other}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::summary;
    use serde_json::json;

    #[test]
    fn a_detail_edited_into_text_is_shown_and_marked() {
        assert_eq!(
            summary(&json!("redacted")),
            "not as the broker wrote it: redacted"
        );
        assert_eq!(
            summary(&json!({ "comment": "looks right", "digest": "sha256:1" })),
            "comment: looks right"
        );
    }
}
