//! One request with what its page or its API read shows, read on one connection (a view takes
//! one connection from the pool, and on PostgreSQL pings it once, instead of once per query)
//! and kept for a moment in the read cache: many people watching one request during an
//! incident cost the database one read per [`super::read_cache::TIME_TO_LIVE`].
//!
//! For views only. What a decision checks (the request's state, its approvals, the session)
//! is read from the database, never from here.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use super::audit_search::{AuditFilter, audit_events};
use super::looks::look;
use super::outbox::messages_of;
use super::requests::{approvals, request};
use super::{Approval, AuditEvent, Message, Request, Result, Store};
use crate::clock::Millis;

/// A request, its decisions, the last look at the cluster, its newest events and its
/// notifications: what the request page shows from the database.
pub struct RequestPage {
    pub request: Request,
    pub approvals: Vec<Approval>,
    /// When the last look was taken and what it found (JSON), if one was.
    pub look: Option<(Millis, String)>,
    /// Newest first, at most the number asked for.
    pub events: Vec<AuditEvent>,
    /// Who was told about the request, in the order the messages were written.
    pub messages: Vec<Message>,
    /// What the page makes of this data alone, so that the views the cache serves do not make
    /// it again.
    pub derived: Derived,
}

/// A request, its decisions and its notifications: what the API's read of one request shows.
pub struct RequestRead {
    pub request: Request,
    pub approvals: Vec<Approval>,
    pub messages: Vec<Message>,
    /// What the API makes of this data alone (its answer, the same for everyone who may see
    /// the request), so that the reads the cache serves do not make it again.
    pub derived: Derived,
}

/// What a view makes of one read's data alone: made at the first view of the data and kept as
/// long as the data. Of the web's type, which the store does not know.
#[derive(Default)]
pub struct Derived(OnceLock<Arc<dyn Any + Send + Sync>>);

impl Derived {
    /// What `make` makes of the data, made at the first call. Two views at the same moment may
    /// both make it: the same data makes the same result, and the first is kept.
    pub fn get_or_make<T, E>(
        &self,
        make: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        if let Some(made) = self
            .0
            .get()
            .and_then(|made| Arc::clone(made).downcast::<T>().ok())
        {
            return Ok(made);
        }
        let made = Arc::new(make()?);
        let _ = self.0.set(made.clone() as Arc<dyn Any + Send + Sync>);
        Ok(made)
    }
}

impl Store {
    /// What the API shows of one request; None if there is no such request. From the read
    /// cache: at most a second old when another replica wrote, and never older than this
    /// replica's last write.
    pub async fn request_read(&self, id: &str) -> Result<Option<Arc<RequestRead>>> {
        self.cache
            .request_read(id, async {
                let mut conn = self.pool().acquire().await?;
                let Some(request) = request(&mut *conn, id).await? else {
                    return Ok(None);
                };
                let approvals = approvals(&mut *conn, id).await?;
                let messages = messages_of(&mut *conn, id).await?;
                Ok(Some(Arc::new(RequestRead {
                    request,
                    approvals,
                    messages,
                    derived: Derived::default(),
                })))
            })
            .await
    }

    /// What the request page shows, with at most `events` of the request's newest events;
    /// None if there is no such request. From the read cache, as [`Store::request_read`].
    pub async fn request_page(&self, id: &str, events: i64) -> Result<Option<Arc<RequestPage>>> {
        self.cache
            .request_page(id, events, async {
                // Its timeline shows every change committed before the view, whichever
                // replica made it: what waits in the journal is chained first.
                self.chain_committed().await;
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
                let messages = messages_of(&mut *conn, id).await?;
                Ok(Some(Arc::new(RequestPage {
                    request,
                    approvals,
                    look,
                    events,
                    messages,
                    derived: Derived::default(),
                })))
            })
            .await
    }
}
