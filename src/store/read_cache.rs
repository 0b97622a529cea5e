//! What views read, kept for a moment: the request page's data, the API's read of a request,
//! and sessions by the hash of their id. A busy request page (an incident, everyone watching)
//! then costs the database one read per [`TIME_TO_LIVE`] instead of one per view; on SQLite
//! each read is also several hand-overs to a connection's thread, which cost more than the
//! queries themselves.
//!
//! Two rules keep it correct:
//! - Nothing this replica wrote is hidden from a view that starts after the write: every
//!   committed transaction ([`super::Tx::commit`]) and every write on the pool
//!   (`execute_write`) moves one generation counter, and an entry serves only a view that
//!   started no later than the read that filled it. One counter for every write is blunter
//!   than forgetting key by key, but no write path can be missed by it, however the write is
//!   spread over tables (an approval changes the request, its decisions, its events and its
//!   notifications at once).
//! - What another replica wrote shows within [`TIME_TO_LIVE`]: entries expire then.
//!
//! It is for showing only. Decisions, filings and everything else that changes something read
//! the database, so a stale entry can never let through what the database would refuse.
//!
//! moka rather than a map by hand: it bounds the entries by weight with a sound eviction
//! policy, expires them by time, and runs one load per key at a time, so a page that many
//! people open at the moment its entry expires is read from the database once, not once per
//! person.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};

use super::{Message, RequestPage, RequestRead, Result, Session, StoreError};

/// How long an entry serves: how stale a view may be after another replica wrote.
pub const TIME_TO_LIVE: Duration = Duration::from_secs(1);
/// Bytes (roughly) the request pages and API reads may hold together, each.
const REQUEST_BYTES: u64 = 32 * 1024 * 1024;
/// Sessions remembered at once.
const SESSIONS: u64 = 10_000;

/// A value and the generation it was read at.
#[derive(Clone)]
struct Stamped<V> {
    generation: u64,
    value: V,
}

pub struct ReadCache {
    /// Moves after every write of this replica: entries of an older generation than a view's
    /// start do not serve it.
    generation: AtomicU64,
    pages: Cache<(String, i64), Stamped<Option<Arc<RequestPage>>>>,
    reads: Cache<String, Stamped<Option<Arc<RequestRead>>>>,
    sessions: Cache<String, Stamped<Option<Arc<Session>>>>,
}

impl ReadCache {
    pub fn new() -> ReadCache {
        ReadCache {
            generation: AtomicU64::new(0),
            pages: Cache::builder()
                .time_to_live(TIME_TO_LIVE)
                .weigher(
                    |(id, _): &(String, i64), page: &Stamped<Option<Arc<RequestPage>>>| {
                        weight(id.len() + page.value.as_deref().map_or(0, RequestPage::bytes))
                    },
                )
                .max_capacity(REQUEST_BYTES)
                .build(),
            reads: Cache::builder()
                .time_to_live(TIME_TO_LIVE)
                .weigher(|id: &String, read: &Stamped<Option<Arc<RequestRead>>>| {
                    weight(id.len() + read.value.as_deref().map_or(0, RequestRead::bytes))
                })
                .max_capacity(REQUEST_BYTES)
                .build(),
            sessions: Cache::builder()
                .time_to_live(TIME_TO_LIVE)
                .max_capacity(SESSIONS)
                .build(),
        }
    }

    /// This replica wrote: no entry read before now serves a view from now on.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub async fn request_page(
        &self,
        id: &str,
        events: i64,
        load: impl Future<Output = Result<Option<Arc<RequestPage>>>>,
    ) -> Result<Option<Arc<RequestPage>>> {
        self.through(&self.pages, (id.to_owned(), events), load)
            .await
    }

    pub async fn request_read(
        &self,
        id: &str,
        load: impl Future<Output = Result<Option<Arc<RequestRead>>>>,
    ) -> Result<Option<Arc<RequestRead>>> {
        self.through(&self.reads, id.to_owned(), load).await
    }

    pub async fn session(
        &self,
        id_hash: &str,
        load: impl Future<Output = Result<Option<Arc<Session>>>>,
    ) -> Result<Option<Arc<Session>>> {
        self.through(&self.sessions, id_hash.to_owned(), load).await
    }

    /// The entry for `key` if it was read no earlier than this call began; else `load`ed now,
    /// one load per key at a time (those that waited for it take what it read).
    async fn through<K, V>(
        &self,
        cache: &Cache<K, Stamped<V>>,
        key: K,
        load: impl Future<Output = Result<V>>,
    ) -> Result<V>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let seen = self.generation.load(Ordering::SeqCst);
        if let Some(hit) = cache.get(&key).await
            && hit.generation >= seen
        {
            return Ok(hit.value);
        }
        let generation = &self.generation;
        let computed = cache
            .entry(key)
            .and_try_compute_with(|found| async move {
                if found.is_some_and(|found| found.value().generation >= seen) {
                    // Another view read it while this one waited for its turn.
                    return Ok(Op::Nop);
                }
                // Taken before the read: a write that commits during the read moves the
                // generation past it, and the entry serves no view that starts after.
                let generation = generation.load(Ordering::SeqCst);
                let value = load.await?;
                Ok::<_, StoreError>(Op::Put(Stamped { generation, value }))
            })
            .await?;
        match computed {
            CompResult::Inserted(entry)
            | CompResult::ReplacedWith(entry)
            | CompResult::Unchanged(entry) => Ok(entry.into_value().value),
            // Neither is asked for above.
            CompResult::StillNone(_) | CompResult::Removed(_) => Err(StoreError::Other(
                sqlx::Error::Protocol("the read cache lost an entry it was filling".into()),
            )),
        }
    }
}

/// A weight moka can take: bytes, saturated.
fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl RequestPage {
    /// Roughly the bytes it holds: what bounds the cache.
    fn bytes(&self) -> usize {
        request_bytes(&self.request)
            + self.approvals.len() * 256
            + self.look.as_ref().map_or(0, |(_, found)| found.len())
            // An event's detail is JSON of a few fields; a kilobyte each is ample.
            + self.events.len() * 1024
            + self.messages.iter().map(message_bytes).sum::<usize>()
    }
}

impl RequestRead {
    /// Roughly the bytes it holds: what bounds the cache.
    fn bytes(&self) -> usize {
        request_bytes(&self.request)
            + self.approvals.len() * 256
            + self.messages.iter().map(message_bytes).sum::<usize>()
    }
}

fn request_bytes(request: &super::Request) -> usize {
    512 + request.manifest.len()
        + request.objects.len()
        + request.justification.len()
        + request.last_error.as_ref().map_or(0, String::len)
        + request.review.as_ref().map_or(0, String::len)
}

fn message_bytes(message: &Message) -> usize {
    256 + message.body.len() + message.last_error.as_ref().map_or(0, String::len)
}
