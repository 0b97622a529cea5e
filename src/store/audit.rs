//! The audit history: append-only, each event chained to the one before by its hash.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Result, Store, Tx};
use crate::clock::{Millis, rfc3339};
use crate::domain::digest::{canonical_json, sha256_hex};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event about to be written; the store gives it its place in the chain.
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
        let detail: String = row.try_get("detail")?;
        Ok(AuditEvent {
            seq: row.try_get("seq")?,
            at: row.try_get("at")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            request_id: row.try_get("request_id")?,
            ticket: row.try_get("ticket")?,
            target: row.try_get("target")?,
            namespace: row.try_get("namespace")?,
            detail: serde_json::from_str(&detail).map_err(|e| sqlx::Error::Decode(e.into()))?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }
}

impl AuditEvent {
    /// The hash an event must carry: over the previous hash and the event's canonical content.
    pub fn expected_hash(&self) -> String {
        content_hash(
            &self.prev_hash,
            &NewEvent {
                at: self.at,
                actor: &self.actor,
                action: &self.action,
                request_id: self.request_id.as_deref(),
                ticket: self.ticket.as_deref(),
                target: self.target.as_deref(),
                namespace: self.namespace.as_deref(),
                detail: self.detail.clone(),
            },
            self.seq,
        )
    }
}

fn content_hash(prev_hash: &str, event: &NewEvent<'_>, seq: i64) -> String {
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

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub request_id: Option<String>,
    pub ticket: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// Only events older than this sequence number (for paging newest first).
    pub before_seq: Option<i64>,
    pub limit: i64,
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
        let hash = content_hash(&prev_hash, &event, seq);
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
        .bind(canonical_json(&event.detail))
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

    /// Events matching the filter, newest first.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        Ok(sqlx::query_as(
            "SELECT seq, at, actor, action, request_id, ticket, target, namespace, detail, prev_hash, hash
             FROM audit_events
             WHERE ($1 IS NULL OR request_id = $1) AND ($2 IS NULL OR ticket = $2)
               AND ($3 IS NULL OR actor = $3) AND ($4 IS NULL OR target = $4)
               AND ($5 IS NULL OR action = $5) AND ($6 IS NULL OR at >= $6)
               AND ($7 IS NULL OR at < $7) AND ($8 IS NULL OR seq < $8)
             ORDER BY seq DESC LIMIT $9",
        )
        .bind(filter.request_id.as_deref())
        .bind(filter.ticket.as_deref())
        .bind(filter.actor.as_deref())
        .bind(filter.target.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.before_seq)
        .bind(if filter.limit > 0 { filter.limit.min(1000) } else { 100 })
        .fetch_all(self.pool())
        .await?)
    }
}

/// Writes the event to the structured log once it has committed.
pub fn log_event(event: &AuditEvent) {
    tracing::info!(
        target: "audit",
        seq = event.seq,
        action = %event.action,
        actor = %event.actor,
        request_id = event.request_id.as_deref().unwrap_or(""),
        ticket = event.ticket.as_deref().unwrap_or(""),
        target_name = event.target.as_deref().unwrap_or(""),
        namespace = event.namespace.as_deref().unwrap_or(""),
        hash = %event.hash,
        "audit {}", event.action
    );
}
