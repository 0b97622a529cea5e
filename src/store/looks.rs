//! The last look at the cluster for a request (see `lifecycle::look`).

use sqlx::Row;

use super::{ExecuteWrite, Result, Store};
use crate::clock::Millis;

impl Store {
    /// Takes the right to look at the cluster for a request now, unless a look was started
    /// after `not_before`: true when this caller should look.
    pub async fn claim_look(
        &self,
        request_id: &str,
        now: Millis,
        not_before: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO cluster_looks (request_id, claimed_at) VALUES ($1, $2)
             ON CONFLICT (request_id) DO UPDATE SET claimed_at = excluded.claimed_at
             WHERE cluster_looks.claimed_at < $3",
        )
        .bind(request_id)
        .bind(now)
        .bind(not_before)
        .execute_write(self)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records what a look found (JSON), taken at `taken_at`.
    pub async fn save_look(&self, request_id: &str, taken_at: Millis, objects: &str) -> Result<()> {
        sqlx::query("UPDATE cluster_looks SET taken_at = $2, objects = $3 WHERE request_id = $1")
            .bind(request_id)
            .bind(taken_at)
            .bind(objects)
            .execute_write(self)
            .await?;
        Ok(())
    }

    /// The last look at the cluster for a request: when, and what it found (JSON).
    pub async fn look(&self, request_id: &str) -> Result<Option<(Millis, String)>> {
        look(self.pool(), request_id).await
    }
}

pub(super) async fn look<'e, E>(executor: E, request_id: &str) -> Result<Option<(Millis, String)>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(
        "SELECT taken_at, objects FROM cluster_looks
         WHERE request_id = $1 AND taken_at IS NOT NULL",
    )
    .bind(request_id)
    .fetch_optional(executor)
    .await?;
    row.map(|row| Ok((row.try_get("taken_at")?, row.try_get("objects")?)))
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
}
