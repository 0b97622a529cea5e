//! Browser sessions, and the keys the replicas share.

use std::sync::Arc;

use sqlx::Row;

use super::{ExecuteWrite, Result, Store};
use crate::clock::Millis;

#[derive(Clone, Debug)]
pub struct Session {
    pub issuer: String,
    pub subject: String,
    pub name: String,
    pub groups: Vec<String>,
    pub csrf_token: String,
    /// When the person last authenticated at the provider, as far as the broker knows.
    pub signed_in_at: Millis,
    pub expires_at: Millis,
}

impl Store {
    /// The key named `name` that every replica of this broker shares: made (64 random bytes)
    /// by the first replica that asks, read by the others.
    pub async fn shared_key(&self, name: &str) -> Result<Vec<u8>> {
        use base64::Engine;
        use rand::RngCore;
        let mut fresh = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut fresh);
        let encoded = base64::engine::general_purpose::STANDARD.encode(fresh);
        sqlx::query(
            "INSERT INTO broker_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&encoded)
        .execute_write(self)
        .await?;
        let stored: String = sqlx::query("SELECT value FROM broker_keys WHERE name = $1")
            .bind(name)
            .fetch_one(self.pool())
            .await?
            .try_get("value")?;
        base64::engine::general_purpose::STANDARD
            .decode(stored)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)).into())
    }

    pub async fn insert_session(
        &self,
        id_hash: &str,
        session: &Session,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, issuer, subject, name, groups_json, csrf_token,
                signed_in_at, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id_hash)
        .bind(&session.issuer)
        .bind(&session.subject)
        .bind(&session.name)
        .bind(serde_json::to_string(&session.groups).unwrap_or_else(|_| "[]".into()))
        .bind(&session.csrf_token)
        .bind(session.signed_in_at)
        .bind(now)
        .bind(session.expires_at)
        .execute_write(self)
        .await?;
        Ok(())
    }

    /// The session, if it is still valid at `now`: read from the database, as everything that
    /// changes something (a decision, a filing, signing out) must.
    pub async fn session(&self, id_hash: &str, now: Millis) -> Result<Option<Session>> {
        session(self.pool(), id_hash, now).await
    }

    /// [`Store::session`] for showing a page: from the read cache, so a session another
    /// replica ended may still show pages here for up to a second; one ended on this replica
    /// is gone at once.
    pub async fn session_for_view(&self, id_hash: &str, now: Millis) -> Result<Option<Session>> {
        let found = self
            .cache
            .session(id_hash, async {
                Ok(session(self.pool(), id_hash, now).await?.map(Arc::new))
            })
            .await?;
        Ok(found
            .filter(|session| session.expires_at > now)
            .map(|session| Session::clone(&session)))
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute_write(self)
            .await?;
        Ok(())
    }

    /// Drops expired sessions.
    pub async fn purge_sessions(&self, now: Millis) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute_write(self)
            .await?;
        Ok(())
    }
}

async fn session<'e, E>(executor: E, id_hash: &str, now: Millis) -> Result<Option<Session>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(
        "SELECT issuer, subject, name, groups_json, csrf_token, signed_in_at, expires_at
         FROM sessions
         WHERE id_hash = $1 AND expires_at > $2",
    )
    .bind(id_hash)
    .bind(now)
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let groups: String = row.try_get("groups_json")?;
    Ok(Some(Session {
        issuer: row.try_get("issuer")?,
        subject: row.try_get("subject")?,
        name: row.try_get("name")?,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        csrf_token: row.try_get("csrf_token")?,
        signed_in_at: row.try_get("signed_in_at")?,
        expires_at: row.try_get("expires_at")?,
    }))
}
