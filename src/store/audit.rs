//! The audit history: append-only, each event chained to the one before by its hash.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, FromRow, Row};

use super::{ExecuteWrite, Result, Store, Tx};
use crate::clock::{Millis, rfc3339};
use crate::domain::AuditAction;
use crate::domain::chain::{self, Fields};
use crate::domain::digest::canonical_json;

/// The columns of an audit event, in the order the chain's readers and exports give them.
pub const AUDIT_COLUMNS: [&str; 13] = [
    "seq",
    "at",
    "actor",
    "actor_issuer",
    "actor_subject",
    "action",
    "request_id",
    "ticket",
    "target",
    "namespace",
    "detail",
    "prev_hash",
    "hash",
];

/// An event about to be written; the store gives it its place in the chain.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    pub at: Millis,
    pub actor: &'a str,
    /// The person who acted, as (issuer, subject); None when the broker did.
    pub person: Option<(&'a str, &'a str)>,
    pub action: AuditAction,
    pub request_id: Option<&'a str>,
    pub ticket: Option<&'a str>,
    pub target: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub detail: Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent {
    pub seq: i64,
    #[serde(serialize_with = "as_rfc3339")]
    pub at: Millis,
    /// The name the person showed when they acted; only for reading.
    pub actor: String,
    /// Who acted: the issuer and subject of their sign-in (None when the broker did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_subject: Option<String>,
    pub action: String,
    pub request_id: Option<String>,
    pub ticket: Option<String>,
    pub target: Option<String>,
    pub namespace: Option<String>,
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

fn as_rfc3339<S: serde::Serializer>(at: &Millis, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*at))
}

impl FromRow<'_, AnyRow> for AuditEvent {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let stored = StoredEvent::from_row(row)?;
        // The broker writes every detail as a JSON object. One that is not JSON was edited in
        // the database: it is shown as the text it is (a JSON string, which the broker never
        // writes), rather than failing the search or page that meets it; verification names
        // the edit.
        let detail = serde_json::from_str(&stored.detail)
            .unwrap_or_else(|_| Value::String(stored.detail.clone()));
        Ok(AuditEvent {
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
        })
    }
}

impl AuditEvent {
    /// The subject of who acted; empty for the broker (and for events from before people were
    /// recorded by subject).
    pub fn subject(&self) -> &str {
        self.actor_subject.as_deref().unwrap_or_default()
    }

    /// The hash an event must carry: over the previous hash and the event's canonical content.
    pub fn expected_hash(&self) -> String {
        chain::hash(&self.prev_hash, self.seq, &self.fields(), &self.detail)
    }

    fn fields(&self) -> Fields<'_> {
        Fields {
            at: self.at,
            actor: &self.actor,
            person: person(&self.actor_issuer, &self.actor_subject),
            action: &self.action,
            request_id: self.request_id.as_deref(),
            ticket: self.ticket.as_deref(),
            target: self.target.as_deref(),
            namespace: self.namespace.as_deref(),
        }
    }
}

impl NewEvent<'_> {
    fn fields(&self) -> Fields<'_> {
        Fields {
            at: self.at,
            actor: self.actor,
            person: self.person,
            action: self.action.as_str(),
            request_id: self.request_id,
            ticket: self.ticket,
            target: self.target,
            namespace: self.namespace,
        }
    }
}

/// An event exactly as the database holds it, `detail` still text.
///
/// Verification reads these rather than [`AuditEvent`]s: a `detail` that someone replaced
/// with something that is not JSON must be reported as an edit of that event, not end the
/// read with a decoding error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub at: Millis,
    pub actor: String,
    pub actor_issuer: Option<String>,
    pub actor_subject: Option<String>,
    pub action: String,
    pub request_id: Option<String>,
    pub ticket: Option<String>,
    pub target: Option<String>,
    pub namespace: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl FromRow<'_, AnyRow> for StoredEvent {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(StoredEvent {
            seq: row.try_get("seq")?,
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
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }
}

impl StoredEvent {
    /// The hash this event's content, chained to its stored `prev_hash`, must have. The
    /// stored `detail` text goes in as it is: the broker stores it in canonical form, so any
    /// other text (re-formatted, or not JSON at all) does not reproduce the hash.
    pub fn recomputed_hash(&self) -> String {
        let fields = Fields {
            at: self.at,
            actor: &self.actor,
            person: person(&self.actor_issuer, &self.actor_subject),
            action: &self.action,
            request_id: self.request_id.as_deref(),
            ticket: self.ticket.as_deref(),
            target: self.target.as_deref(),
            namespace: self.namespace.as_deref(),
        };
        chain::hash_text(&self.prev_hash, self.seq, &fields, &self.detail)
    }
}

/// The person of a stored event: both halves, or none. (One half alone is not something the
/// broker writes; hashing it as none makes such an edit show as a broken hash.)
pub(super) fn person<'a>(
    issuer: &'a Option<String>,
    subject: &'a Option<String>,
) -> Option<(&'a str, &'a str)> {
    issuer.as_deref().zip(subject.as_deref())
}

/// The hash of a new event at `seq` with `prev_hash` before it, exactly as the store computes
/// it: for tools (the benchmark's bulk loader, tests that play a careful attacker).
pub fn content_hash(prev_hash: &str, event: &NewEvent<'_>, seq: i64) -> String {
    chain::hash(prev_hash, seq, &event.fields(), &event.detail)
}

/// One row of the chain as verification reads it: an event, or a row that is not one.
///
/// SQLite keeps whatever type a statement writes into a column, so someone editing the
/// database can leave a row that does not decode; that is an edit to report at its place, not
/// a reason to stop reading.
#[derive(Clone, Debug)]
pub enum ChainRow {
    Event(Box<StoredEvent>),
    Unreadable { seq: Option<i64>, why: String },
}

/// The chain's head: the last event's place and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

/// The last verification of the chain a replica recorded (see [`Store::record_audit_check`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditCheck {
    #[serde(serialize_with = "as_rfc3339")]
    pub checked_at: Millis,
    /// Every event up to this one was as the broker wrote it.
    pub verified_through: i64,
    pub head_seq: i64,
    pub head_hash: String,
    /// Where the chain broke, if it did, and what was found there.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
}

/// Rows per multi-row insert of chained events: 13 parameters each stays far below SQLite's
/// 32,766 and PostgreSQL's 65,535 parameters per statement.
pub(super) const INSERT_ROWS: usize = 500;

/// The columns of a chained event, in the order [`bind_event`] binds them.
pub(super) const INSERT_COLUMN_NAMES: &str = "seq, at, actor, actor_issuer, actor_subject, action, \
    request_id, ticket, target, namespace, detail, prev_hash, hash";
pub(super) const INSERT_COLUMNS: usize = 13;

/// `rows` groups of `columns` placeholders, `($n,...),(...)`, numbered after `after`; or, for
/// one column, a plain list `$n,$m,...`.
pub(super) fn placeholders(after: usize, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        if columns > 1 {
            sql.push('(');
        }
        for column in 0..columns {
            if column > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", after + row * columns + column + 1));
        }
        if columns > 1 {
            sql.push(')');
        }
    }
    sql
}

/// Binds a chained event's [`INSERT_COLUMN_NAMES`].
pub(super) fn bind_event<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    event: &'q StoredEvent,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(event.seq)
        .bind(event.at)
        .bind(&event.actor)
        .bind(&event.actor_issuer)
        .bind(&event.actor_subject)
        .bind(&event.action)
        .bind(&event.request_id)
        .bind(&event.ticket)
        .bind(&event.target)
        .bind(&event.namespace)
        .bind(&event.detail)
        .bind(&event.prev_hash)
        .bind(&event.hash)
}

impl Store {
    /// Appends many events straight to the chain, chained exactly as the journal's events
    /// are, in multi-row inserts: for importing history and for loading benchmarks, where a
    /// million single appends would take far longer than the thing being measured. Returns
    /// the new head.
    pub async fn append_audit_many(tx: &mut Tx, events: &[NewEvent<'_>]) -> Result<ChainHead> {
        // An update that changes nothing still takes the head's lock, on both databases, so
        // that chaining by others waits for this batch as it waits for any other.
        let head = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut **tx)
            .await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut hash: String = head.try_get("hash")?;
        let mut chained = Vec::with_capacity(events.len().min(INSERT_ROWS));
        for chunk in events.chunks(INSERT_ROWS) {
            chained.clear();
            for event in chunk {
                seq += 1;
                let detail = canonical_json(&event.detail);
                let next = chain::hash_text(&hash, seq, &event.fields(), &detail);
                chained.push(StoredEvent {
                    seq,
                    at: event.at,
                    actor: event.actor.to_owned(),
                    actor_issuer: event.person.map(|(issuer, _)| issuer.to_owned()),
                    actor_subject: event.person.map(|(_, subject)| subject.to_owned()),
                    action: event.action.as_str().to_owned(),
                    request_id: event.request_id.map(str::to_owned),
                    ticket: event.ticket.map(str::to_owned),
                    target: event.target.map(str::to_owned),
                    namespace: event.namespace.map(str::to_owned),
                    detail,
                    prev_hash: std::mem::replace(&mut hash, next.clone()),
                    hash: next,
                });
            }
            Store::insert_chained(tx, &chained).await?;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&hash)
            .execute(&mut **tx)
            .await?;
        Ok(ChainHead { seq, hash })
    }

    /// Writes chained events (at most [`INSERT_ROWS`]) in one multi-row insert; the caller
    /// holds the head and moves it past them.
    pub(super) async fn insert_chained(
        tx: &mut sqlx::AnyConnection,
        events: &[StoredEvent],
    ) -> Result<()> {
        // Placeholders only: the values are all bound below.
        let sql = format!(
            "INSERT INTO audit_events ({INSERT_COLUMN_NAMES}) VALUES {}",
            placeholders(0, events.len(), INSERT_COLUMNS)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for event in events {
            query = bind_event(query, event);
        }
        query.execute(tx).await?;
        Ok(())
    }

    /// The chain's head as the database records it.
    pub async fn audit_head(&self) -> Result<ChainHead> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(ChainHead {
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
        })
    }

    /// The first event stored past `seq`, the head a verification read, and past the head as
    /// it is now: none, unless someone put one there. (A pass that chained meanwhile moved the
    /// head past its own events in the same transaction; they are not past it.)
    pub async fn first_event_past(&self, seq: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(seq) AS seq FROM audit_events
             WHERE seq > $1 AND seq > (SELECT seq FROM audit_head WHERE id = 1)",
        )
        .bind(seq)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("seq")?)
    }

    /// Records the outcome of a verification, replacing the one before: what the audit page
    /// shows without walking the whole history each time.
    pub async fn record_audit_check(&self, check: &AuditCheck) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_checks (id, checked_at, verified_through, head_seq, head_hash,
                first_bad_seq, problem)
             VALUES (1, $1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at,
                verified_through = excluded.verified_through, head_seq = excluded.head_seq,
                head_hash = excluded.head_hash, first_bad_seq = excluded.first_bad_seq,
                problem = excluded.problem",
        )
        .bind(check.checked_at)
        .bind(check.verified_through)
        .bind(check.head_seq)
        .bind(&check.head_hash)
        .bind(check.first_bad_seq)
        .bind(check.problem.as_deref())
        .execute_write(self)
        .await?;
        Ok(())
    }

    /// The last verification any replica recorded, if one has.
    pub async fn last_audit_check(&self) -> Result<Option<AuditCheck>> {
        let row = sqlx::query(
            "SELECT checked_at, verified_through, head_seq, head_hash, first_bad_seq, problem
             FROM audit_checks WHERE id = 1",
        )
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(AuditCheck {
                checked_at: row.try_get("checked_at")?,
                verified_through: row.try_get("verified_through")?,
                head_seq: row.try_get("head_seq")?,
                head_hash: row.try_get("head_hash")?,
                first_bad_seq: row.try_get("first_bad_seq")?,
                problem: row.try_get("problem")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }
}
