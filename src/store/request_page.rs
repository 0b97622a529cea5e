//! One request with what its page or its API read shows, read on one connection: a view
//! takes one connection from the pool (and on PostgreSQL pings it once) instead of once per
//! query, and on SQLite each hand-over to a connection's thread costs more than the query.

use super::audit_search::{AuditFilter, audit_events};
use super::looks::look;
use super::requests::{approvals, request};
use super::{Approval, AuditEvent, Request, Result, Store};
use crate::clock::Millis;

/// A request, its decisions, the last look at the cluster and its newest events.
pub struct RequestPage {
    pub request: Request,
    pub approvals: Vec<Approval>,
    /// When the last look was taken and what it found (JSON), if one was.
    pub look: Option<(Millis, String)>,
    /// Newest first, at most the number asked for.
    pub events: Vec<AuditEvent>,
}

impl Store {
    /// A request and its decisions, or None if there is no such request.
    pub async fn request_with_approvals(
        &self,
        id: &str,
    ) -> Result<Option<(Request, Vec<Approval>)>> {
        let mut conn = self.pool().acquire().await?;
        let Some(request) = request(&mut *conn, id).await? else {
            return Ok(None);
        };
        let approvals = approvals(&mut *conn, id).await?;
        Ok(Some((request, approvals)))
    }

    /// What the request page shows, with at most `events` of the request's newest events;
    /// None if there is no such request.
    pub async fn request_page(&self, id: &str, events: i64) -> Result<Option<RequestPage>> {
        let mut conn = self.pool().acquire().await?;
        let Some(request) = request(&mut *conn, id).await? else {
            return Ok(None);
        };
        let approvals = approvals(&mut *conn, id).await?;
        let look = look(&mut *conn, id).await?;
        let filter = AuditFilter {
            request_id: Some(id.to_owned()),
            limit: events,
            ..AuditFilter::default()
        };
        let events = audit_events(&mut *conn, &filter).await?;
        Ok(Some(RequestPage {
            request,
            approvals,
            look,
            events,
        }))
    }
}
