//! One ticket: every request filed under it that the viewer may see, each with its timeline.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};

use super::requests::{EventView, event_view};
use super::view;
use super::{Nav, PageError, SignedIn};
use crate::domain::person::Names;
use crate::web::AppState;
use crate::web::error::AppError;

pub struct TicketRequestRow {
    pub id: String,
    pub state: String,
    pub state_class: &'static str,
    pub target: String,
    pub namespace: String,
    pub requester: String,
    pub created_at: String,
    /// The requester's post-incident review, once written.
    pub review: Option<String>,
    pub events: Vec<EventView>,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit/ticket.html")]
pub struct TicketPage {
    nav: Nav,
    ticket: String,
    requests: Vec<TicketRequestRow>,
    truncated: bool,
}

pub async fn show(
    State(state): State<AppState>,
    viewer: SignedIn,
    Path(ticket): Path<String>,
) -> Result<TicketPage, PageError> {
    if ticket.is_empty() || ticket.len() > 256 {
        return Err(AppError::NotFound.into());
    }
    let found = state
        .lifecycle
        .ticket_history(&viewer.person, &ticket)
        .await
        .map_err(AppError::from)?;
    let names = Names::new(found.requests.iter().flat_map(|r| {
        std::iter::once((
            r.request.requester_name.as_str(),
            r.request.requester_subject.as_str(),
        ))
        .chain(r.events.iter().map(|e| (e.actor.as_str(), e.subject())))
    }));
    let now = state.clock.now();
    let requests = found
        .requests
        .into_iter()
        .map(|r| TicketRequestRow {
            state_class: view::state_class(r.request.state),
            state: r.request.state.to_string(),
            created_at: view::when(r.request.created_at),
            review: r.request.review.clone(),
            id: r.request.id,
            target: r.request.target,
            namespace: r.request.namespace,
            requester: names.show(&r.request.requester_name, &r.request.requester_subject),
            events: r
                .events
                .iter()
                .map(|e| event_view(e, &names, now))
                .collect(),
        })
        .collect();
    Ok(TicketPage {
        nav: viewer.nav(&state),
        ticket: found.ticket,
        requests,
        truncated: found.truncated,
    })
}
