//! Browser sign-in attempts and sessions.

use sqlx::Row;

use super::{Result, Store};
use crate::clock::Millis;

/// A sign-in in flight: what the callback must see again.
#[derive(Clone, Debug)]
pub struct LoginAttempt {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub created_at: Millis,
    /// Set when the sign-in must be a fresh authentication at the provider (for a decision):
    /// the `max_age` sent, which the ID token's `auth_time` must then meet.
    pub max_age_seconds: Option<i64>,
}

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

/// Sign-ins started and not finished that are kept at most: anyone can start one, so a flood
/// of them must not grow the database; the oldest give way (their sign-in says to start again).
pub const MAX_PENDING_LOGINS: i64 = 2000;

impl Store {
    pub async fn insert_login_attempt(&self, attempt: &LoginAttempt) -> Result<()> {
        sqlx::query(
            "INSERT INTO login_attempts (state, nonce, pkce_verifier, return_to, created_at,
                max_age_seconds)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&attempt.state)
        .bind(&attempt.nonce)
        .bind(&attempt.pkce_verifier)
        .bind(&attempt.return_to)
        .bind(attempt.created_at)
        .bind(attempt.max_age_seconds)
        .execute(self.pool())
        .await?;
        // The table never holds more than the cap, so this look at it stays small.
        sqlx::query(
            "DELETE FROM login_attempts WHERE state NOT IN (
                SELECT state FROM login_attempts ORDER BY created_at DESC, state DESC LIMIT $1)",
        )
        .bind(MAX_PENDING_LOGINS)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// How many sign-ins are started and not finished.
    pub async fn pending_logins(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM login_attempts")
            .fetch_one(self.pool())
            .await?
            .try_get("n")?)
    }

    /// Takes the attempt for `state` out of the store: a state works once, and only while young.
    pub async fn take_login_attempt(
        &self,
        state: &str,
        not_before: Millis,
    ) -> Result<Option<LoginAttempt>> {
        let row = sqlx::query(
            "DELETE FROM login_attempts WHERE state = $1
             RETURNING state, nonce, pkce_verifier, return_to, created_at, max_age_seconds",
        )
        .bind(state)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let attempt = LoginAttempt {
            state: row.try_get("state")?,
            nonce: row.try_get("nonce")?,
            pkce_verifier: row.try_get("pkce_verifier")?,
            return_to: row.try_get("return_to")?,
            created_at: row.try_get("created_at")?,
            max_age_seconds: row.try_get("max_age_seconds")?,
        };
        Ok((attempt.created_at >= not_before).then_some(attempt))
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
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn session(&self, id_hash: &str, now: Millis) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT issuer, subject, name, groups_json, csrf_token, signed_in_at, expires_at
             FROM sessions
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(self.pool())
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

    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Drops expired sessions and sign-in attempts older than `attempts_before`.
    pub async fn purge_sessions(&self, now: Millis, attempts_before: Millis) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM login_attempts WHERE created_at < $1")
            .bind(attempts_before)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
