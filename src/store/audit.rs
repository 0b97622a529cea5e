//! The audit history: append-only, each event chained to the one before by its hash.

use std::str::FromStr;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AssertSqlSafe, Executor, FromRow, Row};

use super::{Backend, Result, Store, Tx};
use crate::clock::{Millis, rfc3339};
use crate::domain::digest::{canonical_json, sha256_hex};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Every this many events, the event that lands on the multiple is also logged as a
/// checkpoint, so a busy broker leaves checkpoints between the periodic ones.
pub const CHECKPOINT_EVERY_EVENTS: i64 = 1000;

/// The action whose commit is always followed by a checkpoint: a breakglass went live.
pub const APPLIED_ACTION: &str = "request.applied";

/// An event about to be written; the store gives it its place in the chain.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    pub at: Millis,
    pub actor: &'a str,
    pub action: &'a str,
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
    pub actor: String,
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
        let detail =
            serde_json::from_str(&stored.detail).map_err(|e| sqlx::Error::Decode(e.into()))?;
        Ok(AuditEvent {
            seq: stored.seq,
            at: stored.at,
            actor: stored.actor,
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
    /// The hash an event must carry: over the previous hash and the event's canonical content.
    pub fn expected_hash(&self) -> String {
        content_hash(&self.prev_hash, &self.as_new(), self.seq)
    }

    fn as_new(&self) -> NewEvent<'_> {
        NewEvent {
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            request_id: self.request_id.as_deref(),
            ticket: self.ticket.as_deref(),
            target: self.target.as_deref(),
            namespace: self.namespace.as_deref(),
            detail: self.detail.clone(),
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
        let event = NewEvent {
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            request_id: self.request_id.as_deref(),
            ticket: self.ticket.as_deref(),
            target: self.target.as_deref(),
            namespace: self.namespace.as_deref(),
            detail: Value::Null,
        };
        chain_hash(&self.prev_hash, self.seq, &event, &self.detail)
    }
}

/// The hash of an event at `seq` with `prev_hash` before it. Public so that tools (the
/// benchmark's bulk loader, tests that play a careful attacker) compute it exactly as the
/// store does.
pub fn content_hash(prev_hash: &str, event: &NewEvent<'_>, seq: i64) -> String {
    chain_hash(prev_hash, seq, event, &canonical_json(&event.detail))
}

/// SHA-256 over `prev_hash`, a newline, and the canonical JSON (keys sorted, no spaces) of
/// `{seq, at, actor, action, request_id, ticket, target, namespace, detail}`, `detail` given as
/// its canonical text.
///
/// The canonical form is written straight into one buffer, keys in their sorted order, rather
/// than built as a `serde_json::Value` and sorted: verification recomputes a million of these,
/// and splicing in the stored `detail` text as it is also means a `detail` edited in any byte
/// (re-formatted, or no longer JSON) cannot hash as the original did. Strings are escaped by
/// serde_json, exactly as [`canonical_json`] escapes them; a test holds the two forms equal.
fn chain_hash(prev_hash: &str, seq: i64, event: &NewEvent<'_>, detail: &str) -> String {
    fn text(out: &mut Vec<u8>, value: &str) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
    fn optional(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            Some(value) => text(out, value),
            None => out.extend_from_slice(b"null"),
        }
    }
    let mut out = Vec::with_capacity(prev_hash.len() + 256 + detail.len());
    out.extend_from_slice(prev_hash.as_bytes());
    out.extend_from_slice(b"\n{\"action\":");
    text(&mut out, event.action);
    out.extend_from_slice(b",\"actor\":");
    text(&mut out, event.actor);
    out.extend_from_slice(format!(",\"at\":{},\"detail\":", event.at).as_bytes());
    out.extend_from_slice(detail.as_bytes());
    out.extend_from_slice(b",\"namespace\":");
    optional(&mut out, event.namespace);
    out.extend_from_slice(b",\"request_id\":");
    optional(&mut out, event.request_id);
    out.extend_from_slice(format!(",\"seq\":{seq},\"target\":").as_bytes());
    optional(&mut out, event.target);
    out.extend_from_slice(b",\"ticket\":");
    optional(&mut out, event.ticket);
    out.push(b'}');
    sha256_hex(&out)
}

/// One row of the chain as verification reads it: an event, or a row that is not one.
///
/// SQLite keeps whatever type a statement writes into a column, so someone editing the
/// database can leave a row that does not decode; that is an edit to report at its place, not
/// a reason to stop reading.
#[derive(Clone, Debug)]
pub enum ChainRow {
    Event(StoredEvent),
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

impl Store {
    /// Appends an event to the chain inside the caller's transaction, so the event and the
    /// change it records commit together or not at all.
    pub async fn append_audit(tx: &mut Tx, event: NewEvent<'_>) -> Result<AuditEvent> {
        let head =
            sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
                .fetch_one(&mut **tx)
                .await?;
        let seq: i64 = head.try_get("seq")?;
        let prev_hash: String = head.try_get("hash")?;
        let detail = canonical_json(&event.detail);
        let hash = chain_hash(&prev_hash, seq, &event, &detail);
        sqlx::query(
            "INSERT INTO audit_events (seq, at, actor, action, request_id, ticket, target, namespace,
                detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(seq)
        .bind(event.at)
        .bind(event.actor)
        .bind(event.action)
        .bind(event.request_id)
        .bind(event.ticket)
        .bind(event.target)
        .bind(event.namespace)
        .bind(detail)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&hash)
            .execute(&mut **tx)
            .await?;
        let written = AuditEvent {
            seq,
            at: event.at,
            actor: event.actor.to_owned(),
            action: event.action.to_owned(),
            request_id: event.request_id.map(str::to_owned),
            ticket: event.ticket.map(str::to_owned),
            target: event.target.map(str::to_owned),
            namespace: event.namespace.map(str::to_owned),
            detail: event.detail,
            prev_hash,
            hash,
        };
        Ok(written)
    }

    /// Appends many events at once, chained exactly as [`Store::append_audit`] chains them,
    /// in multi-row inserts: for importing history and for loading benchmarks, where a
    /// million single appends would take far longer than the thing being measured. Returns
    /// the new head.
    pub async fn append_audit_many(tx: &mut Tx, events: &[NewEvent<'_>]) -> Result<ChainHead> {
        /// Rows per statement: 11 parameters each stays far below SQLite's 32,766 and
        /// PostgreSQL's 65,535 parameters per statement.
        const ROWS: usize = 500;
        // An update that changes nothing still takes the head's lock, on both databases, so
        // that appends by others wait for this batch as they wait for a single append.
        let head = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut **tx)
            .await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut hash: String = head.try_get("hash")?;
        for chunk in events.chunks(ROWS) {
            let mut sql = String::from(
                "INSERT INTO audit_events (seq, at, actor, action, request_id, ticket, target,
                    namespace, detail, prev_hash, hash) VALUES ",
            );
            let mut rows = Vec::with_capacity(chunk.len());
            for (i, event) in chunk.iter().enumerate() {
                let base = i * 11;
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for column in 1..=11 {
                    if column > 1 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", base + column));
                }
                sql.push(')');
                seq += 1;
                let detail = canonical_json(&event.detail);
                let next = chain_hash(&hash, seq, event, &detail);
                rows.push((
                    seq,
                    detail,
                    std::mem::replace(&mut hash, next.clone()),
                    next,
                ));
            }
            // Placeholders only: the values are all bound below.
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (event, (seq, detail, prev_hash, hash)) in chunk.iter().zip(rows) {
                query = query
                    .bind(seq)
                    .bind(event.at)
                    .bind(event.actor)
                    .bind(event.action)
                    .bind(event.request_id)
                    .bind(event.ticket)
                    .bind(event.target)
                    .bind(event.namespace)
                    .bind(detail)
                    .bind(prev_hash)
                    .bind(hash);
            }
            query.execute(&mut **tx).await?;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&hash)
            .execute(&mut **tx)
            .await?;
        Ok(ChainHead { seq, hash })
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

    /// The stored events with `after < seq <= through`, in sequence order, as the database
    /// holds them: what verification walks.
    pub fn audit_chain(&self, after: i64, through: i64) -> BoxStream<'_, Result<ChainRow>> {
        const SQL: &str = "SELECT seq, at, actor, action, request_id, ticket, target, namespace, \
                           detail, prev_hash, hash FROM audit_events \
                           WHERE seq > $1 AND seq <= $2 ORDER BY seq";
        sqlx::query(SQL)
            .bind(after)
            .bind(through)
            .fetch(self.pool())
            .map(|row| {
                let row = row?;
                Ok(match StoredEvent::from_row(&row) {
                    Ok(event) => ChainRow::Event(event),
                    Err(e) => ChainRow::Unreadable {
                        seq: row.try_get("seq").ok(),
                        why: e.to_string(),
                    },
                })
            })
            .boxed()
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
        .execute(self.pool())
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

    /// Opens an existing database to read its audit history, without running migrations and
    /// with the session set read-only: verification must never change what it verifies, and
    /// must work against a copy or a read replica.
    pub async fn open_for_audit(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            conn.execute("PRAGMA query_only = ON; PRAGMA busy_timeout = 10000;")
                                .await?
                        }
                        Backend::Postgres => {
                            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                                .await?
                        }
                    };
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store { pool, backend })
    }
}

/// Writes the event to the structured log once it has committed, with everything needed to
/// recompute its hash, so that a log store outside the database holds a second copy of the
/// history.
pub fn log_event(event: &AuditEvent) {
    tracing::info!(
        target: "audit",
        seq = event.seq,
        at = %rfc3339(event.at),
        action = %event.action,
        actor = %event.actor,
        request_id = event.request_id.as_deref().unwrap_or(""),
        ticket = event.ticket.as_deref().unwrap_or(""),
        target_name = event.target.as_deref().unwrap_or(""),
        namespace = event.namespace.as_deref().unwrap_or(""),
        detail = %canonical_json(&event.detail),
        prev_hash = %event.prev_hash,
        hash = %event.hash,
        "audit: {} by {}{}",
        event.action,
        event.actor,
        event.ticket.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(),
    );
    if event.action == APPLIED_ACTION || event.seq % CHECKPOINT_EVERY_EVENTS == 0 {
        let reason = if event.action == APPLIED_ACTION {
            "breakglass applied"
        } else {
            "event count"
        };
        log_checkpoint(event.seq, &event.hash, reason);
    }
}

/// Writes a point of the chain (an event's place and hash) to the structured log. Someone
/// who can rewrite the database cannot rewrite the log store these lines go to, so
/// `audit verify --checkpoints` catches even a chain rewritten consistently from some event
/// on. The line is recognised by `"checkpoint": true`.
pub fn log_checkpoint(seq: i64, hash: &str, reason: &str) {
    tracing::info!(
        target: "audit",
        checkpoint = true,
        seq,
        hash,
        reason,
        "audit checkpoint at seq {seq}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(detail: &str) -> StoredEvent {
        StoredEvent {
            seq: 1,
            at: 0,
            actor: "a".into(),
            action: "x".into(),
            request_id: None,
            ticket: None,
            target: None,
            namespace: None,
            detail: detail.into(),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_stored_detail_reformatted_without_changing_its_meaning_no_longer_hashes_the_same() {
        let canonical = stored(r#"{"a":2,"b":1}"#).recomputed_hash();
        assert_ne!(stored(r#"{"b":1,"a":2}"#).recomputed_hash(), canonical);
        assert_ne!(stored(r#"{"a": 2, "b": 1}"#).recomputed_hash(), canonical);
    }

    /// The hash as first defined: the content built as a JSON value and written out by
    /// `canonical_json`. Every chain already written was hashed this way.
    fn reference_hash(prev_hash: &str, event: &NewEvent<'_>, seq: i64) -> String {
        let content = serde_json::json!({
            "seq": seq,
            "at": event.at,
            "actor": event.actor,
            "action": event.action,
            "request_id": event.request_id,
            "ticket": event.ticket,
            "target": event.target,
            "namespace": event.namespace,
            "detail": event.detail,
        });
        sha256_hex(format!("{prev_hash}\n{}", canonical_json(&content)).as_bytes())
    }

    #[test]
    fn the_chain_hash_is_byte_for_byte_the_canonical_json_hash() {
        let details = [
            serde_json::json!({}),
            serde_json::json!({ "z": [3, 1.5, -2, null, true], "a": { "y": "é\u{1}\"\\\n\t", "b": "😀" } }),
            serde_json::json!("just a string"),
            serde_json::json!(12345678901_i64),
        ];
        let texts = [
            "alice",
            "",
            "=cmd|' /C calc'!A0",
            "quote \" back \\ ctl \u{7f}\u{1f}",
            "ünïcode ✓",
        ];
        for (i, detail) in details.iter().enumerate() {
            for (j, text) in texts.iter().enumerate() {
                let event = NewEvent {
                    at: if j % 2 == 0 { 1_700_000_000_123 } else { -5 },
                    actor: text,
                    action: texts[(j + 1) % texts.len()],
                    request_id: (i % 2 == 0).then_some(*text),
                    ticket: Some("INC-1"),
                    target: (j % 2 == 1).then_some("prod"),
                    namespace: None,
                    detail: detail.clone(),
                };
                let seq = (i * 10 + j) as i64 + 1;
                assert_eq!(
                    content_hash(GENESIS_HASH, &event, seq),
                    reference_hash(GENESIS_HASH, &event, seq),
                    "{event:?}"
                );
            }
        }
    }
}
