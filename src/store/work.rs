//! The workers' side of the requests table: what is due, the next deadline, and the leases and
//! retry times that coordinate replicas.

use sqlx::Row;

use super::requests::columns;
use super::{ExecuteWrite, Request, Result, Store};
use crate::clock::Millis;
use crate::domain::State;

impl Store {
    /// Requests a worker should act on now: approved ones to apply, active ones due to end,
    /// ones that need attention and whose end a person asked for again, pending ones whose
    /// approval window closed; none whose lease another replica holds.
    pub async fn due_work(&self, now: Millis, limit: i64) -> Result<Vec<(String, State)>> {
        let rows = sqlx::query(
            "SELECT id, state FROM requests
             WHERE ((state = 'approved')
                 OR (state = 'active' AND (expires_at <= $1 OR end_requested IS NOT NULL))
                 OR (state = 'needs_attention' AND end_requested IS NOT NULL)
                 OR (state = 'pending' AND decide_by <= $1))
               AND (lease_until IS NULL OR lease_until <= $1)
               AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
             ORDER BY created_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((
                    r.try_get("id")?,
                    State::parse(&state).unwrap_or(State::Pending),
                ))
            })
            .collect::<sqlx::Result<_>>()
            .map_err(Into::into)
    }

    /// The earliest moment at which [`Store::due_work`] will return a request, if any.
    ///
    /// A request is due when its own deadline has come (approval window, expiry; at once for
    /// approved ones and for ones whose end was requested) *and* no lease or retry backoff
    /// holds it back, so its due time is the latest of the three. Taking the latest, not the
    /// earliest, keeps a worker asleep while another replica holds a lease on past-due work
    /// instead of waking it again and again for nothing. A result at or before `now` means
    /// work is due now.
    pub async fn next_deadline(&self) -> Result<Option<Millis>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN own >= lease AND own >= backoff THEN own
                             WHEN lease >= backoff THEN lease
                             ELSE backoff END) AS next
             FROM (
                SELECT CASE
                         WHEN state = 'pending' THEN decide_by
                         WHEN state = 'active' AND end_requested IS NULL THEN COALESCE(expires_at, 0)
                         ELSE 0
                       END AS own,
                       COALESCE(lease_until, 0) AS lease,
                       COALESCE(next_attempt_at, 0) AS backoff
                FROM requests WHERE state IN ('pending', 'approved', 'active')
                   OR (state = 'needs_attention' AND end_requested IS NOT NULL)
             ) AS deadlines",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("next")?)
    }

    /// Takes the right to work on a request in `state` until `until`, unless another worker
    /// holds it; returns the request as the claim left it.
    pub async fn claim(
        &self,
        id: &str,
        state: State,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Option<Request>> {
        let sql = concat!(
            "UPDATE requests SET lease_owner = $1, lease_until = $2
             WHERE id = $3 AND state = $4 AND (lease_until IS NULL OR lease_until <= $5 OR lease_owner = $1)
             RETURNING ",
            columns!()
        );
        let claimed: Option<Request> = sqlx::query_as(sql)
            .bind(owner)
            .bind(until)
            .bind(id)
            .bind(state.as_str())
            .bind(now)
            .fetch_optional(self.writer())
            .await?;
        if claimed.is_some() {
            self.cache.changed();
        }
        Ok(claimed)
    }

    /// Extends a lease this owner still holds on a request still in `state`; false when the
    /// lease was lost (it expired and another worker took it) or the work is done.
    pub async fn renew(&self, id: &str, state: State, owner: &str, until: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE requests SET lease_until = $1
             WHERE id = $2 AND state = $3 AND lease_owner = $4",
        )
        .bind(until)
        .bind(id)
        .bind(state.as_str())
        .bind(owner)
        .execute_write(self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease up at once, so other replicas need not wait for it to expire.
    pub async fn release(&self, id: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE requests SET lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute_write(self)
        .await?;
        Ok(())
    }

    /// Remembers a failed attempt and when to try again; the lease is given up.
    pub async fn record_retry(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        next_attempt_at: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE requests SET last_error = $1, attempts = attempts + 1, next_attempt_at = $2,
                lease_owner = NULL, lease_until = NULL
             WHERE id = $3 AND lease_owner = $4",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(id)
        .bind(owner)
        .execute_write(self)
        .await?;
        Ok(())
    }
}
