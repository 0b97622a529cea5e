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
    /// The endpoint's destination when written ([`NotificationConfig::destination`]).
    ///
    /// [`NotificationConfig::destination`]: crate::config::NotificationConfig::destination
    pub destination: &'a str,
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
    pub destination: Option<String>,
}

/// How a message ended.
pub const DELIVERED: &str = "delivered";
/// A message to an endpoint a 410 disabled: not sent, and shown as not delivered.
pub const ENDPOINT_DISABLED: &str =
    "not sent: the endpoint is disabled (it answered 410 Gone) until its configuration changes";
/// A message whose endpoint is no longer configured.
pub const ENDPOINT_REMOVED: &str = "not sent: endpoint removed from the configuration";
/// A message whose endpoint now has another URL: it is not sent to the new one.
pub const ENDPOINT_MOVED: &str =
    "not sent: the endpoint's URL changed in the configuration since it was written";
/// A reminder of a request that ended before it was due.
pub const REQUEST_ENDED_FIRST: &str = "not sent: the request ended first";
/// A reminder of an end that moved (an extension was granted); a new one is planned.
pub const END_MOVED: &str = "not sent: the end of the request moved";

const COLUMNS: &str = "id, endpoint, event_type, seq, request_id, body, created_at, due_at, attempts, last_error, done_at, outcome, destination";

/// The condition that a message `o` is not held back by an older open message of the same
/// request to the same endpoint (older: by `seq`, then `created_at`, then `id`, the order of
/// delivery), so that one request's events reach an endpoint in their order. A reminder
/// planned for later and never tried holds nothing back; messages of other requests, and
/// messages of no request, are never held back. `$2` is now.
const IN_ORDER: &str = "NOT EXISTS (
    SELECT 1 FROM outbox e
    WHERE e.request_id = o.request_id AND e.endpoint = o.endpoint AND e.done_at IS NULL
      AND (e.attempts > 0 OR e.due_at <= $2)
      AND (e.seq < o.seq OR (e.seq = o.seq AND (e.created_at < o.created_at
           OR (e.created_at = o.created_at AND e.id < o.id)))))";

impl Store {
    pub async fn insert_message(tx: &mut Tx, message: &NewMessage<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (id, endpoint, event_type, seq, request_id, body, created_at, due_at,
                destination)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(message.id)
        .bind(message.endpoint)
        .bind(message.event_type)
        .bind(message.seq)
        .bind(message.request_id)
        .bind(message.body)
        .bind(message.created_at)
        .bind(message.due_at)
        .bind(message.destination)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Settles the reminders of a request not yet sent, in the transaction of what made them
    /// moot: its end ([`REQUEST_ENDED_FIRST`]) or a new end ([`END_MOVED`]).
    pub async fn drop_reminders(
        tx: &mut Tx,
        request_id: &str,
        now: Millis,
        outcome: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET done_at = $1, outcome = $3, lease_owner = NULL, lease_until = NULL
             WHERE request_id = $2 AND event_type = 'request.expiring' AND done_at IS NULL",
        )
        .bind(now)
        .bind(request_id)
        .bind(outcome)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Endpoints, by name and destination, with a message due now that no worker holds and
    /// no older message holds back.
    pub async fn endpoints_due(&self, now: Millis) -> Result<Vec<(String, Option<String>)>> {
        let sql = format!(
            "SELECT DISTINCT endpoint, destination FROM outbox o
             WHERE done_at IS NULL AND due_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
               AND {}",
            IN_ORDER.replace("$2", "$1")
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(self.pool())
            .await?)
    }

    /// For each endpoint and destination with messages waiting that nothing older holds
    /// back: when the next falls due (or its lease runs out).
    pub async fn next_message_due(
        &self,
        now: Millis,
    ) -> Result<Vec<(String, Option<String>, Millis)>> {
        let sql = format!(
            "SELECT endpoint, destination,
                MIN(CASE WHEN COALESCE(lease_until, 0) > due_at THEN lease_until ELSE due_at END)
             FROM outbox o WHERE done_at IS NULL AND {}
             GROUP BY endpoint, destination",
            IN_ORDER.replace("$2", "$1")
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(self.pool())
            .await?)
    }

    /// Takes the lease on the endpoint's oldest due message that no worker holds, that was
    /// written for `destination` (or before messages named one), and that no older message
    /// of its request holds back.
    pub async fn claim_message(
        &self,
        endpoint: &str,
        destination: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Option<Message>> {
        let find = format!(
            "SELECT id FROM outbox o
             WHERE endpoint = $1 AND done_at IS NULL AND due_at <= $2
               AND (lease_until IS NULL OR lease_until <= $2)
               AND (destination IS NULL OR destination = $3)
               AND {IN_ORDER}
             ORDER BY seq, created_at, id LIMIT 1"
        );
        // Another replica may take the one found first; then look again.
        for _ in 0..8 {
            let found: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(find.clone()))
                .bind(endpoint)
                .bind(now)
                .bind(destination)
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

    /// Endpoints, by name and destination, with an open message that fell due before
    /// `before` and that no worker holds: messages nobody has taken for a while.
    pub async fn overdue_destinations(
        &self,
        before: Millis,
        now: Millis,
    ) -> Result<Vec<(String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT endpoint, destination FROM outbox
             WHERE done_at IS NULL AND due_at <= $1 AND (lease_until IS NULL OR lease_until <= $2)",
        )
        .bind(before)
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    /// Closes the open messages of one endpoint and destination that fell due before
    /// `before` and that no worker holds, with `outcome`; how many.
    pub async fn close_overdue(
        &self,
        endpoint: &str,
        destination: Option<&str>,
        before: Millis,
        now: Millis,
        outcome: &str,
    ) -> Result<u64> {
        let same = match destination {
            Some(_) => "destination = $5",
            None => "destination IS NULL AND $5 IS NULL",
        };
        let sql = format!(
            "UPDATE outbox SET done_at = $1, outcome = $2, lease_owner = NULL, lease_until = NULL
             WHERE endpoint = $3 AND {same} AND done_at IS NULL AND due_at <= $4
               AND (lease_until IS NULL OR lease_until <= $1)"
        );
        let closed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(outcome)
            .bind(endpoint)
            .bind(before)
            .bind(destination)
            .execute_write(self)
            .await?;
        Ok(closed.rows_affected())
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

    /// Messages given up, refused, or not sent for want of an endpoint (disabled, removed,
    /// moved) since `since`, newest first: an alarm for auditors. Reminders a request made
    /// moot are not among them.
    pub async fn undelivered_since(&self, since: Millis, limit: i64) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM outbox
             WHERE done_at >= $1 AND (outcome LIKE 'gave up%' OR outcome LIKE 'refused%'
                OR outcome IN ($3, $4, $5))
             ORDER BY done_at DESC LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .bind(limit)
            .bind(ENDPOINT_DISABLED)
            .bind(ENDPOINT_REMOVED)
            .bind(ENDPOINT_MOVED)
            .fetch_all(self.pool())
            .await?)
    }

    /// Disables an endpoint until its configuration hash changes, in the transaction of the
    /// audit event that records it.
    pub async fn disable_endpoint(
        tx: &mut Tx,
        name: &str,
        config_hash: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO disabled_endpoints (name, config_hash, disabled_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET config_hash = excluded.config_hash,
                disabled_at = excluded.disabled_at",
        )
        .bind(name)
        .bind(config_hash)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Every endpoint a 410 disabled, as (name, configuration hash, when), by name: it stays
    /// disabled while its configuration hashes the same.
    pub async fn disabled_endpoints(&self) -> Result<Vec<(String, String, Millis)>> {
        Ok(sqlx::query_as(
            "SELECT name, config_hash, disabled_at FROM disabled_endpoints ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?)
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
