//! How audit events reach the chain. A change writes its events to the journal
//! (`audit_journal`) in its own transaction, so the change and its events commit together or
//! not at all; just after it commits, the events take their place in the chain, a batch at a
//! time, by whoever holds the chain's head for that one short transaction.
//!
//! Before, each change locked the head itself and held it through its commit, so every
//! writer of every replica queued behind every other one for the length of a commit. Now the
//! commits run side by side, and one chaining transaction places the events of all the
//! changes that committed meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};

use super::audit::{
    AuditEvent, ChainHead, INSERT_COLUMN_NAMES, INSERT_COLUMNS, NewEvent, StoredEvent, bind_event,
    placeholders,
};
use super::{Backend, Result, Store, StoreError, Tx};
use crate::audit::log_event;
use crate::clock::Millis;
use crate::domain::digest::canonical_json;

/// Journal entries chained per transaction, so that one holding of the head stays short.
const BATCH: usize = super::audit::INSERT_ROWS;

/// The columns a journal entry is written with.
const JOURNAL_COLUMNS: usize = 10;

/// The longest a chaining pass may take. One that takes longer (something holds the chain's
/// head or its next place in an open transaction, or a connection went silent) counts as
/// blocked: people's filings and decisions are refused and no apply reaches a cluster until a
/// pass chains again.
pub const PASS_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// An audit event written in a change's transaction; it takes its place in the chain just
/// after the change commits (see [`Tx::commit`]).
#[derive(Clone, Debug)]
pub struct Journaled {
    /// The event's entry in the journal: increasing in the order events of one request are
    /// written, and above every place in the chain taken before the journal existed. The
    /// notifications that announce the event are delivered in this order.
    pub entry: i64,
    pub at: Millis,
    pub actor: String,
    /// Who acted: the issuer and subject of their sign-in (None when the broker did).
    pub actor_issuer: Option<String>,
    pub actor_subject: Option<String>,
    pub action: String,
    pub request_id: Option<String>,
    pub ticket: Option<String>,
    pub target: Option<String>,
    pub namespace: Option<String>,
    pub detail: Value,
}

impl Journaled {
    /// The subject of who acted; empty for the broker.
    pub fn subject(&self) -> &str {
        self.actor_subject.as_deref().unwrap_or_default()
    }
}

/// This replica's turns at chaining. A commit that wrote events has a pass run for them soon
/// after, without waiting for it; whoever reads the chain waits for a pass that began after
/// its read was asked for: a pass under way may have looked at the journal before then. Those
/// who arrive during a pass queue here, not on the database's head row, and the first of them
/// runs the next pass for all of them.
#[derive(Default)]
pub(super) struct Chainer {
    turn: tokio::sync::Mutex<()>,
    /// A pass is on its way for events committed since the last one began.
    scheduled: AtomicBool,
    /// Passes begun and finished, counted from the start of this process.
    begun: AtomicU64,
    finished: AtomicU64,
    /// How the last pass ended: [`CHAINED`], or why the chain is not being written.
    last: AtomicU8,
}

const CHAINED: u8 = 0;
const UNAVAILABLE: u8 = 1;
const BLOCKED: u8 = 2;

/// Why this replica's last chaining pass failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainingFailure {
    /// The database could not be reached.
    Unavailable,
    /// The database refused the chained events (a row in the chain's next place, say).
    Blocked,
}

impl Store {
    /// Writes an event to the journal inside the caller's transaction, so the event and the
    /// change it records commit together or not at all. A pass chains it just after the
    /// commit; a read of the chain waits for that pass ([`Store::chain_committed`]).
    pub async fn append_audit(tx: &mut Tx, event: NewEvent<'_>) -> Result<Journaled> {
        let mut written = Store::append_audits(tx, std::slice::from_ref(&event)).await?;
        Ok(written.pop().ok_or(sqlx::Error::RowNotFound)?)
    }

    /// Writes `events`, in order, to the journal inside the caller's transaction, in one
    /// statement.
    pub async fn append_audits(tx: &mut Tx, events: &[NewEvent<'_>]) -> Result<Vec<Journaled>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let details: Vec<String> = events.iter().map(|e| canonical_json(&e.detail)).collect();
        // Placeholders only: the values are all bound below.
        let sql = format!(
            "INSERT INTO audit_journal (at, actor, actor_issuer, actor_subject, action,
                request_id, ticket, target, namespace, detail)
             VALUES {} RETURNING id",
            placeholders(0, events.len(), JOURNAL_COLUMNS)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (event, detail) in events.iter().zip(&details) {
            query = query
                .bind(event.at)
                .bind(event.actor)
                .bind(event.person.map(|(issuer, _)| issuer))
                .bind(event.person.map(|(_, subject)| subject))
                .bind(event.action.as_str())
                .bind(event.request_id)
                .bind(event.ticket)
                .bind(event.target)
                .bind(event.namespace)
                .bind(detail);
        }
        let rows = query.fetch_all(&mut **tx).await?;
        // Entries are numbered in the order the rows are written; the order RETURNING gives
        // them back in is not promised.
        let mut entries = rows
            .iter()
            .map(|row| row.try_get::<i64, _>("id"))
            .collect::<sqlx::Result<Vec<i64>>>()?;
        entries.sort_unstable();
        if entries.len() != events.len() {
            return Err(StoreError::Other(sqlx::Error::RowNotFound));
        }
        tx.journaled = true;
        Ok(entries
            .into_iter()
            .zip(events)
            .map(|(entry, event)| Journaled {
                entry,
                at: event.at,
                actor: event.actor.to_owned(),
                actor_issuer: event.person.map(|(issuer, _)| issuer.to_owned()),
                actor_subject: event.person.map(|(_, subject)| subject.to_owned()),
                action: event.action.as_str().to_owned(),
                request_id: event.request_id.map(str::to_owned),
                ticket: event.ticket.map(str::to_owned),
                target: event.target.map(str::to_owned),
                namespace: event.namespace.map(str::to_owned),
                detail: event.detail.clone(),
            })
            .collect())
    }

    /// Returns once a chaining pass that began after now has finished: every event committed
    /// before this call is then in the chain. A pass that fails leaves its events in the
    /// journal for the next one ([`Store::chain_journal`] runs every second as well); the
    /// failure is logged, not returned, for the change that wrote them has committed.
    pub async fn chain_committed(&self) {
        let chainer = &self.chainer;
        let wanted = chainer.begun.load(Ordering::SeqCst) + 1;
        let _turn = chainer.turn.lock().await;
        if chainer.finished.load(Ordering::SeqCst) >= wanted {
            return;
        }
        self.chain_pass().await;
    }

    /// Has a pass chain what was just committed, soon, without waiting for it. While one is
    /// on its way, further commits need none of their own: it begins after them. So a burst
    /// of changes costs a few passes, each chaining many events, and nobody's answer waits on
    /// the chain.
    pub(super) fn chain_soon(&self) {
        if self.chainer.scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let _turn = store.chainer.turn.lock().await;
            // Commits from here on schedule a pass of their own.
            store.chainer.scheduled.store(false, Ordering::SeqCst);
            store.chain_pass().await;
        });
    }

    /// One pass, run while holding the turn.
    async fn chain_pass(&self) {
        let chainer = &self.chainer;
        let pass = chainer.begun.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(e) = self.chain_journal().await {
            tracing::error!(error = %e, "audit events are waiting in the journal for their place in the chain; the next pass retries");
        }
        chainer.finished.store(pass, Ordering::SeqCst);
    }

    /// Moves every journal entry committed so far into the chain, a batch per transaction, and
    /// writes each chained event to the structured log. Returns how many it chained.
    pub async fn chain_journal(&self) -> Result<usize> {
        let chained = match tokio::time::timeout(PASS_LIMIT, self.chain_all()).await {
            Ok(chained) => chained,
            Err(_) => Err(StoreError::Other(sqlx::Error::Protocol(format!(
                "a chaining pass took longer than {PASS_LIMIT:?}: something holds the chain's head or its next place"
            )))),
        };
        let before = self.chainer.last.load(Ordering::SeqCst);
        let last = match &chained {
            Ok(_) => CHAINED,
            // A database that went away says nothing of the block: it stays until a pass
            // chains again.
            Err(StoreError::Unavailable(_)) if before == BLOCKED => BLOCKED,
            Err(StoreError::Unavailable(_)) => UNAVAILABLE,
            Err(_) => BLOCKED,
        };
        self.chainer.last.store(last, Ordering::SeqCst);
        chained
    }

    /// Waits for a pass that began after now, as [`Store::chain_committed`]; true when it left
    /// every event committed before the call in the chain.
    pub async fn chained_all_committed(&self) -> bool {
        self.chain_committed().await;
        self.chaining_failure().is_none()
    }

    /// Why this replica's last chaining pass failed, if it did: events committed now would
    /// wait in the journal, so people's new filings and decisions are refused meanwhile (the
    /// worker's own changes, an undo above all, go on).
    pub fn chaining_failure(&self) -> Option<ChainingFailure> {
        match self.chainer.last.load(Ordering::SeqCst) {
            CHAINED => None,
            UNAVAILABLE => Some(ChainingFailure::Unavailable),
            _ => Some(ChainingFailure::Blocked),
        }
    }

    async fn chain_all(&self) -> Result<usize> {
        let mut chained = 0;
        loop {
            let events = self.chain_batch().await?;
            chained += events.len();
            for event in &events {
                log_event(event);
            }
            if events.len() < BATCH {
                return Ok(chained);
            }
        }
    }

    /// Chains up to [`BATCH`] entries after the head, in the order they were written, and
    /// moves the head past them.
    async fn chain_batch(&self) -> Result<Vec<AuditEvent>> {
        let events = match self.backend {
            // One connection for the whole pass: taking one from the pool costs a round trip
            // of its own (the pool checks it is alive). Its first read finds out whether there
            // is anything to chain.
            Backend::Postgres => {
                let mut conn = self.pool.acquire().await?;
                loop {
                    if let Some(events) = Self::chain_at_once(&mut conn).await? {
                        break events;
                    }
                }
            }
            Backend::Sqlite => {
                // Most passes find the work done by an earlier one: that costs one read, not
                // a turn at the database's one writer.
                let waiting = sqlx::query("SELECT id FROM audit_journal LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?;
                if waiting.is_none() {
                    return Ok(Vec::new());
                }
                Self::chain_in_turn(&mut *self.writer.acquire().await?).await?
            }
        };
        if !events.is_empty() {
            self.cache.changed();
        }
        Ok(events.into_iter().map(AuditEvent::from).collect())
    }

    /// PostgreSQL, where replicas chain side by side: the head and the entries are read
    /// without a lock, the events chained here, and one statement moves the head only if it
    /// is still where it was read, writing the events and taking their entries from the
    /// journal with it. The head is locked for that statement alone, never across a round
    /// trip to a replica that may be busy. None when another pass moved the head first: read
    /// again.
    async fn chain_at_once(conn: &mut AnyConnection) -> Result<Option<Vec<StoredEvent>>> {
        let rows = sqlx::query(
            "SELECT h.seq AS head_seq, h.hash AS head_hash, j.id, j.at, j.actor, j.actor_issuer,
                j.actor_subject, j.action, j.request_id, j.ticket, j.target, j.namespace, j.detail
             FROM audit_head h
             LEFT JOIN (SELECT * FROM audit_journal ORDER BY id LIMIT $1) j ON TRUE
             WHERE h.id = 1
             ORDER BY j.id",
        )
        .bind(BATCH as i64)
        .fetch_all(&mut *conn)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(Some(Vec::new()));
        };
        let head = ChainHead {
            seq: first.try_get("head_seq")?,
            hash: first.try_get("head_hash")?,
        };
        if first.try_get::<Option<i64>, _>("id")?.is_none() {
            return Ok(Some(Vec::new()));
        }
        let (entries, events) = chained(&head, &rows)?;
        let Some(last) = events.last() else {
            return Ok(Some(Vec::new()));
        };
        let values = placeholders(4, events.len(), INSERT_COLUMNS);
        let taken = placeholders(4 + events.len() * INSERT_COLUMNS, entries.len(), 1);
        // Placeholders only: the values are all bound below.
        let sql = format!(
            "WITH head AS (
                UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3 AND hash = $4
                RETURNING seq
             ), placed AS (
                INSERT INTO audit_events ({INSERT_COLUMN_NAMES})
                SELECT * FROM (VALUES {values}) AS v ({INSERT_COLUMN_NAMES})
                WHERE EXISTS (SELECT 1 FROM head)
             ), taken AS (
                DELETE FROM audit_journal
                WHERE id IN ({taken}) AND EXISTS (SELECT 1 FROM head)
             )
             SELECT COUNT(*) AS moved FROM head"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(last.seq)
            .bind(&last.hash)
            .bind(head.seq)
            .bind(&head.hash);
        for event in &events {
            query = bind_event(query, event);
        }
        for entry in &entries {
            query = query.bind(entry);
        }
        let moved: i64 = query.fetch_one(&mut *conn).await?.try_get("moved")?;
        Ok((moved == 1).then_some(events))
    }

    /// SQLite, one writer at a time anyway: a transaction that takes the head, chains the
    /// entries, and moves the head past them.
    async fn chain_in_turn(conn: &mut AnyConnection) -> Result<Vec<StoredEvent>> {
        let mut tx = conn.begin().await?;
        let row = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *tx)
            .await?;
        let head = ChainHead {
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
        };
        let rows = sqlx::query(
            "SELECT id, at, actor, actor_issuer, actor_subject, action, request_id, ticket,
                target, namespace, detail
             FROM audit_journal ORDER BY id LIMIT $1",
        )
        .bind(BATCH as i64)
        .fetch_all(&mut *tx)
        .await?;
        let (entries, events) = chained(&head, &rows)?;
        let Some(last) = events.last() else {
            return Ok(events);
        };
        Store::insert_chained(&mut tx, &events).await?;
        // Placeholders only: the entries are all bound below.
        let sql = format!(
            "DELETE FROM audit_journal WHERE id IN ({})",
            placeholders(0, entries.len(), 1)
        );
        let mut delete = sqlx::query(AssertSqlSafe(sql));
        for entry in &entries {
            delete = delete.bind(entry);
        }
        delete.execute(&mut *tx).await?;
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(last.seq)
            .bind(&last.hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(events)
    }
}

/// The journal's `rows` chained after `head`, with their entries.
fn chained(head: &ChainHead, rows: &[AnyRow]) -> Result<(Vec<i64>, Vec<StoredEvent>)> {
    let mut entries = Vec::with_capacity(rows.len());
    let mut events: Vec<StoredEvent> = Vec::with_capacity(rows.len());
    for (seq, row) in (head.seq + 1..).zip(rows) {
        entries.push(row.try_get::<i64, _>("id")?);
        let mut event = StoredEvent {
            seq,
            at: row.try_get("at")?,
            actor: row.try_get("actor")?,
            actor_issuer: row.try_get("actor_issuer")?,
            actor_subject: row.try_get("actor_subject")?,
            action: row.try_get("action")?,
            request_id: row.try_get("request_id")?,
            ticket: row.try_get("ticket")?,
            target: row.try_get("target")?,
            namespace: row.try_get("namespace")?,
            detail: row.try_get("detail")?,
            prev_hash: events
                .last()
                .map_or_else(|| head.hash.clone(), |e| e.hash.clone()),
            hash: String::new(),
        };
        event.hash = event.recomputed_hash();
        events.push(event);
    }
    Ok((entries, events))
}

impl From<StoredEvent> for AuditEvent {
    /// The broker wrote `detail` as canonical JSON; text that is not JSON (which only an edit
    /// of the database leaves) reads as a string.
    fn from(stored: StoredEvent) -> AuditEvent {
        let detail = serde_json::from_str(&stored.detail)
            .unwrap_or_else(|_| Value::String(stored.detail.clone()));
        AuditEvent {
            seq: stored.seq,
            at: stored.at,
            actor: stored.actor,
            actor_issuer: stored.actor_issuer,
            actor_subject: stored.actor_subject,
            action: stored.action,
            request_id: stored.request_id,
            ticket: stored.ticket,
            target: stored.target,
            namespace: stored.namespace,
            detail,
            prev_hash: stored.prev_hash,
            hash: stored.hash,
        }
    }
}

/// Chains what is left in the journal every second: events whose writer's own pass failed,
/// or whose replica stopped between its commit and its pass.
pub fn spawn_chaining(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            store.chain_committed().await;
        }
    })
}

/// One per store: see [`Chainer`].
pub(super) fn chainer() -> Arc<Chainer> {
    Arc::new(Chainer::default())
}
