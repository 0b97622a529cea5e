//! Reading requests as a person may see them: one request, or every request under a ticket
//! with its decisions and timeline.

use std::sync::Arc;

use super::{Lifecycle, LifecycleError};
use crate::domain::Person;
use crate::store::{
    Approval, AuditEvent, AuditFilter, Request, RequestFilter, RequestPage, RequestRead,
};

/// Most requests the history of one ticket lists.
const MAX_TICKET_REQUESTS: i64 = 200;
/// Most events listed per request in the history of a ticket.
const MAX_REQUEST_EVENTS: i64 = 1000;

/// Every request filed under a ticket that a person may see, newest first.
pub struct TicketHistory {
    pub ticket: String,
    pub requests: Vec<RequestHistory>,
    /// More requests exist under the ticket than are listed.
    pub truncated: bool,
}

/// One request with its decisions and its whole timeline, oldest first.
pub struct RequestHistory {
    pub request: Request,
    pub approvals: Vec<Approval>,
    pub events: Vec<AuditEvent>,
}

impl Lifecycle {
    /// The request, if this person may see it: its requester, anyone who may decide on it,
    /// auditors. Others get the same answer as for a request that does not exist.
    pub async fn load_visible(&self, person: &Person, id: &str) -> Result<Request, LifecycleError> {
        let request = self
            .store
            .request(id)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        if self.may_see(person, &request) {
            Ok(request)
        } else {
            Err(LifecycleError::NotFound)
        }
    }

    /// What the API shows of one request (its decisions, their tally and its notifications),
    /// if this person may see it. From the store's read cache: for showing, never for deciding.
    pub async fn load_visible_read(
        &self,
        person: &Person,
        id: &str,
    ) -> Result<Arc<RequestRead>, LifecycleError> {
        self.store
            .request_read(id)
            .await?
            .filter(|read| self.may_see(person, &read.request))
            .ok_or(LifecycleError::NotFound)
    }

    /// What the request page shows (with at most `events` of its newest events), if this
    /// person may see the request. From the store's read cache: for showing, never for
    /// deciding.
    pub async fn load_visible_page(
        &self,
        person: &Person,
        id: &str,
        events: i64,
    ) -> Result<Arc<RequestPage>, LifecycleError> {
        self.store
            .request_page(id, events)
            .await?
            .filter(|page| self.may_see(person, &page.request))
            .ok_or(LifecycleError::NotFound)
    }

    /// The history of one ticket for this person; not found when they may see none of its
    /// requests, so that nobody learns which tickets exist from it.
    pub async fn ticket_history(
        &self,
        person: &Person,
        ticket: &str,
    ) -> Result<TicketHistory, LifecycleError> {
        let requests = self
            .store
            .requests(&RequestFilter {
                ticket: Some(ticket.to_owned()),
                visible_to: self.visibility(person),
                limit: MAX_TICKET_REQUESTS + 1,
                ..RequestFilter::default()
            })
            .await?;
        let truncated = requests.len() as i64 > MAX_TICKET_REQUESTS;
        let mut listed = Vec::new();
        for request in requests
            .into_iter()
            .take(MAX_TICKET_REQUESTS as usize)
            .filter(|r| self.may_see(person, r))
        {
            let approvals = self.store.approvals(&request.id).await?;
            let events = self
                .store
                .audit_events(&AuditFilter {
                    request_id: Some(request.id.clone()),
                    oldest_first: true,
                    limit: MAX_REQUEST_EVENTS,
                    ..AuditFilter::default()
                })
                .await?;
            listed.push(RequestHistory {
                request,
                approvals,
                events,
            });
        }
        if listed.is_empty() {
            return Err(LifecycleError::NotFound);
        }
        Ok(TicketHistory {
            ticket: ticket.to_owned(),
            requests: listed,
            truncated,
        })
    }
}
