//! One ticket: every request filed under it that the viewer may see, each with its timeline.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};

use super::view;
use super::{Nav, PageError, SignedIn};
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
    pub events: Vec<(String, String, String)>,
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
    let requests = found
        .requests
        .into_iter()
        .map(|r| TicketRequestRow {
            state_class: view::state_class(r.request.state),
            state: r.request.state.to_string(),
            created_at: view::when(r.request.created_at),
            id: r.request.id,
            target: r.request.target,
            namespace: r.request.namespace,
            requester: r.request.requester_name,
            events: r
                .events
                .iter()
                .map(|e| (view::when(e.at), e.actor.clone(), e.action.clone()))
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
