//! What the metrics read of the shared database at scrape time.

use sqlx::Row;

use super::{Result, Store};
use crate::clock::Millis;
use crate::domain::State;

impl Store {
    /// How many requests are in each state (states with none are left out).
    pub async fn count_by_state(&self) -> Result<Vec<(State, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM requests GROUP BY state")
            .fetch_all(self.pool())
            .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in rows {
            let state: String = row.try_get("state")?;
            if let Some(state) = State::parse(&state) {
                counts.push((state, row.try_get("n")?));
            }
        }
        Ok(counts)
    }

    /// How many audit events have committed but wait for their place in the chain, and when
    /// the oldest of them happened: a number that stays up means the chain is not being
    /// written (see `journal.rs`).
    pub async fn journal_backlog(&self) -> Result<(i64, Option<Millis>)> {
        let row = sqlx::query("SELECT COUNT(*) AS n, MIN(at) AS oldest FROM audit_journal")
            .fetch_one(self.pool())
            .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    /// When the oldest piece of work that is due now and free to take became due: an approved
    /// request since its last approval, an active one since its expiry, a pending one since
    /// its approval window closed. Work that a lease or a retry's backoff holds back is not
    /// late. None when nothing is due.
    pub async fn oldest_due(&self, now: Millis) -> Result<Option<Millis>> {
        let row = sqlx::query(
            "SELECT MIN(due) AS due FROM (
                SELECT CASE
                         WHEN r.state = 'pending' THEN r.decide_by
                         WHEN r.state = 'active' THEN r.expires_at
                         ELSE (SELECT MAX(a.at) FROM approvals a WHERE a.request_id = r.id)
                       END AS due
                FROM requests r
                WHERE ((r.state = 'approved')
                    OR (r.state = 'active' AND r.expires_at <= $1)
                    OR (r.state = 'pending' AND r.decide_by <= $1))
                  AND (r.lease_until IS NULL OR r.lease_until <= $1)
                  AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= $1)
             ) AS overdue",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }
}
