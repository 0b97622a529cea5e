//! What the Cloud Audit Log reader keeps: how far it has read each target's log, and the
//! questions it asks of the broker's own history about one logged write.

use std::collections::{BTreeSet, HashSet};

use sqlx::Row;

use super::{ExecuteWrite, Result, Store};
use crate::clock::Millis;
use crate::domain::unbrokered::Member;

impl Store {
    /// How far the target's log has been read (an entry timestamp, in milliseconds), or None
    /// before the first read.
    pub async fn audit_log_cursor(&self, target: &str) -> Result<Option<Millis>> {
        let row = sqlx::query("SELECT read_to FROM audit_log_cursors WHERE target = $1")
            .bind(target)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("read_to")?),
            None => None,
        })
    }

    pub async fn set_audit_log_cursor(
        &self,
        target: &str,
        read_to: Millis,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log_cursors (target, read_to, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (target) DO UPDATE SET read_to = excluded.read_to,
                updated_at = excluded.updated_at",
        )
        .bind(target)
        .bind(read_to)
        .bind(now)
        .execute_write(self)
        .await?;
        Ok(())
    }

    /// Of these UIDs, the ones the broker recorded at apply for a request that was applying
    /// or active at `at` (filed by then, and not ended before it): a write logged at `at` to
    /// such an object was made while the broker's breakglass on it was live.
    pub async fn applied_live_at(&self, uids: &[String], at: Millis) -> Result<HashSet<String>> {
        let mut live = HashSet::new();
        for uid in uids {
            let row = sqlx::query(
                "SELECT a.applied_uid FROM applied_objects a JOIN requests r ON r.id = a.request_id
                 WHERE a.applied_uid = $1 AND r.created_at <= $2
                   AND (r.state IN ('approved', 'active') OR r.ended_at >= $2)
                 LIMIT 1",
            )
            .bind(uid)
            .bind(at)
            .fetch_optional(self.pool())
            .await?;
            if row.is_some() {
                live.insert(uid.clone());
            }
        }
        Ok(live)
    }

    /// Whether this object has ever had a finding on `target`.
    pub async fn has_finding(&self, target: &str, uid: &str) -> Result<bool> {
        let row =
            sqlx::query("SELECT 1 AS found FROM findings WHERE target = $1 AND uid = $2 LIMIT 1")
                .bind(target)
                .bind(uid)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.is_some())
    }

    /// Adds `members` to the latest finding of this object on `target` (the ones it lists
    /// stay): what the log shows ran under an object that is gone.
    pub async fn add_finding_members(
        &self,
        target: &str,
        uid: &str,
        members: &[Member],
    ) -> Result<()> {
        let row = sqlx::query(
            "SELECT id, members FROM findings WHERE target = $1 AND uid = $2
             ORDER BY episode DESC LIMIT 1",
        )
        .bind(target)
        .bind(uid)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(());
        };
        let id: String = row.try_get("id")?;
        let text: String = row.try_get("members")?;
        let mut all: BTreeSet<Member> = serde_json::from_str(&text).unwrap_or_default();
        let before = all.len();
        all.extend(members.iter().cloned());
        if all.len() == before {
            return Ok(());
        }
        let merged = serde_json::to_string(&all).unwrap_or_else(|_| text.clone());
        // Only over what was read: a concurrent change is not lost, and the next read merges again.
        sqlx::query("UPDATE findings SET members = $1 WHERE id = $2 AND members = $3")
            .bind(merged)
            .bind(&id)
            .bind(&text)
            .execute_write(self)
            .await?;
        Ok(())
    }
}
