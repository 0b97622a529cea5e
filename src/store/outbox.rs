//! The outbox of notifications: rows written in a state change's transaction, delivered by
//! the notifier under a lease so that one replica at a time tries a message.

use sqlx::FromRow;

use super::{ExecuteWrite, Result, Store, Tx};
use crate::clock::Millis;

/// A message about to be written.
#[derive(Clone, Debug)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub endpoint: &'a str,
    pub event_type: &'a str,
    pub seq: i64,
    pub request_id: Option<&'a str>,
    pub body: &'a str,
    pub created_at: Millis,
    pub due_at: Millis,
}

#[derive(Clone, Debug, FromRow)]
pub struct Message {
    pub id: String,
    pub endpoint: String,
    pub event_type: String,
    pub seq: i64,
    pub request_id: Option<String>,
    pub body: String,
    pub created_at: Millis,
    pub due_at: Millis,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub done_at: Option<Millis>,
    pub outcome: Option<String>,
}

/// How a message ended.
pub const DELIVERED: &str = "delivered";

const COLUMNS: &str = "id, endpoint, event_type, seq, request_id, body, created_at, due_at, attempts, last_error, done_at, outcome";

impl Store {
    pub async fn insert_message(tx: &mut Tx, message: &NewMessage<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (id, endpoint, event_type, seq, request_id, body, created_at, due_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(message.id)
        .bind(message.endpoint)
        .bind(message.event_type)
        .bind(message.seq)
        .bind(message.request_id)
        .bind(message.body)
        .bind(message.created_at)
        .bind(message.due_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Settles the reminders of a request that ended before they were sent, in the
    /// transaction of its end.
    pub async fn drop_reminders(tx: &mut Tx, request_id: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET done_at = $1, outcome = 'not sent: the request ended first',
                lease_owner = NULL, lease_until = NULL
             WHERE request_id = $2 AND event_type = 'request.expiring' AND done_at IS NULL",
        )
        .bind(now)
        .bind(request_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Endpoints with a message due now that no worker holds.
    pub async fn endpoints_due(&self, now: Millis) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT endpoint FROM outbox
             WHERE done_at IS NULL AND due_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(e,)| e).collect())
    }

    /// For each endpoint with messages waiting: when the next falls due (or its lease runs out).
    pub async fn next_message_due(&self) -> Result<Vec<(String, Millis)>> {
        Ok(sqlx::query_as(
            "SELECT endpoint, MIN(CASE WHEN COALESCE(lease_until, 0) > due_at THEN lease_until ELSE due_at END)
             FROM outbox WHERE done_at IS NULL GROUP BY endpoint",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Takes the lease on the endpoint's oldest due message that no worker holds.
    pub async fn claim_message(
        &self,
        endpoint: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Option<Message>> {
        // Another replica may take the one found first; then look again.
        for _ in 0..8 {
            let found: Option<(String,)> = sqlx::query_as(
                "SELECT id FROM outbox
                 WHERE endpoint = $1 AND done_at IS NULL AND due_at <= $2
                   AND (lease_until IS NULL OR lease_until <= $2)
                 ORDER BY seq, created_at, id LIMIT 1",
            )
            .bind(endpoint)
            .bind(now)
            .fetch_optional(self.pool())
            .await?;
            let Some((id,)) = found else {
                return Ok(None);
            };
            let claimed = sqlx::query(
                "UPDATE outbox SET lease_owner = $1, lease_until = $2
                 WHERE id = $3 AND done_at IS NULL AND due_at <= $4
                   AND (lease_until IS NULL OR lease_until <= $4)",
            )
            .bind(owner)
            .bind(until)
            .bind(&id)
            .bind(now)
            .execute_write(self)
            .await?;
            if claimed.rows_affected() == 1 {
                let sql = format!("SELECT {COLUMNS} FROM outbox WHERE id = $1");
                return Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(&id)
                    .fetch_optional(self.pool())
                    .await?);
            }
        }
        Ok(None)
    }

    /// Records that a message needs nothing more (delivered, given up, not to be sent), if this
    /// owner still holds it; false when it does not.
    pub async fn finish_message(
        &self,
        id: &str,
        owner: &str,
        now: Millis,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET done_at = $1, outcome = $2, last_error = COALESCE($3, last_error),
                attempts = attempts + $4, lease_owner = NULL, lease_until = NULL
             WHERE id = $5 AND lease_owner = $6 AND done_at IS NULL",
        )
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(i64::from(error.is_some() || outcome == DELIVERED))
        .bind(id)
        .bind(owner)
        .execute_write(self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The same, in the transaction of the audit event that records it.
    pub async fn finish_message_in(
        tx: &mut Tx,
        id: &str,
        owner: &str,
        now: Millis,
        outcome: &str,
        error: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET done_at = $1, outcome = $2, last_error = $3,
                attempts = attempts + 1, lease_owner = NULL, lease_until = NULL
             WHERE id = $4 AND lease_owner = $5 AND done_at IS NULL",
        )
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Remembers a failed try and when to try again; the lease is given up.
    pub async fn retry_message(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        due_at: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET last_error = $1, attempts = attempts + 1, due_at = $2,
                lease_owner = NULL, lease_until = NULL
             WHERE id = $3 AND lease_owner = $4 AND done_at IS NULL",
        )
        .bind(error)
        .bind(due_at)
        .bind(id)
        .bind(owner)
        .execute_write(self)
        .await?;
        Ok(())
    }

    /// Every message about a request, in the order they were written.
    pub async fn messages_of(&self, request_id: &str) -> Result<Vec<Message>> {
        messages_of(self.pool(), request_id).await
    }

    /// Messages given up or refused since `since`, newest first: an alarm for auditors.
    pub async fn undelivered_since(&self, since: Millis, limit: i64) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM outbox
             WHERE done_at >= $1 AND (outcome LIKE 'gave up%' OR outcome LIKE 'refused%')
             ORDER BY done_at DESC LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// Disables an endpoint until its configuration hash changes.
    pub async fn disable_endpoint(&self, name: &str, config_hash: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO disabled_endpoints (name, config_hash, disabled_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET config_hash = excluded.config_hash,
                disabled_at = excluded.disabled_at",
        )
        .bind(name)
        .bind(config_hash)
        .bind(now)
        .execute_write(self)
        .await?;
        Ok(())
    }

    /// The configuration hash an endpoint was disabled under, if it was.
    pub async fn disabled_hash(&self, name: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT config_hash FROM disabled_endpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(h,)| h))
    }
}

pub(super) async fn messages_of<'e, E>(executor: E, request_id: &str) -> Result<Vec<Message>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox WHERE request_id = $1 ORDER BY seq, created_at, endpoint"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(request_id)
        .fetch_all(executor)
        .await?)
}
