//! The detector's findings: one per unbrokered breakglass, per object and episode, each with
//! its audit event written in the same transaction as its row, so that a finding exists
//! exactly when its event does, however many replicas saw it.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{ExecuteWrite, Journaled, NewEvent, Result, Store};
use crate::clock::{Millis, rfc3339};
use crate::domain::unbrokered::{Known, Suspect};
use crate::domain::{AuditAction, State};

/// One finding, as the alerts page and API show it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub id: String,
    pub target: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub episode: i64,
    pub reasons: Value,
    pub images: Value,
    pub writers: Value,
    pub members: Value,
    #[serde(serialize_with = "as_rfc3339")]
    pub first_seen: Millis,
    #[serde(serialize_with = "as_rfc3339")]
    pub last_seen: Millis,
    /// When the breakglass was no longer there: the episode is over.
    #[serde(serialize_with = "as_rfc3339_opt")]
    pub gone_at: Option<Millis>,
    /// `open` or `acknowledged`.
    pub state: String,
    pub acknowledged_by: Option<String>,
    #[serde(serialize_with = "as_rfc3339_opt")]
    pub acknowledged_at: Option<Millis>,
    pub comment: Option<String>,
    /// What the broker deleted in answer, if it did.
    pub removed: Option<Value>,
}

fn as_rfc3339<S: serde::Serializer>(at: &Millis, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*at))
}

fn as_rfc3339_opt<S: serde::Serializer>(
    at: &Option<Millis>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&rfc3339(*at)),
        None => s.serialize_none(),
    }
}

fn json_column(row: &AnyRow, column: &str) -> sqlx::Result<Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(e.into()))
}

impl sqlx::FromRow<'_, AnyRow> for Finding {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let removed: Option<String> = row.try_get("removed")?;
        Ok(Finding {
            id: row.try_get("id")?,
            target: row.try_get("target")?,
            namespace: row.try_get("namespace")?,
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            uid: row.try_get("uid")?,
            episode: row.try_get("episode")?,
            reasons: json_column(row, "reasons")?,
            images: json_column(row, "images")?,
            writers: json_column(row, "writers")?,
            members: json_column(row, "members")?,
            first_seen: row.try_get("first_seen")?,
            last_seen: row.try_get("last_seen")?,
            gone_at: row.try_get("gone_at")?,
            state: row.try_get("state")?,
            acknowledged_by: row.try_get("acknowledged_by")?,
            acknowledged_at: row.try_get("acknowledged_at")?,
            comment: row.try_get("comment")?,
            removed: removed.and_then(|t| serde_json::from_str(&t).ok()),
        })
    }
}

const COLUMNS: &str = "id, target, namespace, kind, name, uid, episode, reasons, images, writers,
    members, first_seen, last_seen, gone_at, state, acknowledged_by, acknowledged_at, comment,
    removed";

/// Which findings to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingState {
    Open,
    Acknowledged,
}

impl FindingState {
    pub fn parse(text: &str) -> Option<FindingState> {
        match text {
            "open" => Some(FindingState::Open),
            "acknowledged" => Some(FindingState::Acknowledged),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FindingState::Open => "open",
            FindingState::Acknowledged => "acknowledged",
        }
    }
}

/// The audit event of a finding, as the broker writes it.
fn event<'a>(
    at: Millis,
    action: AuditAction,
    target: &'a str,
    namespace: &'a str,
    detail: Value,
) -> NewEvent<'a> {
    NewEvent {
        at,
        actor: crate::lifecycle::BROKER_ACTOR,
        person: None,
        action,
        request_id: None,
        ticket: None,
        target: Some(target),
        namespace: Some(namespace),
        detail,
    }
}

impl Store {
    /// What the broker recorded of its own applies, and the state of the requests these
    /// stamps name. UIDs of every target count: two targets may reach one cluster, and a UID
    /// is never reused, so the broker's own object is never taken for someone else's.
    pub async fn known_applies(&self, stamped: &[String]) -> Result<Known> {
        let mut known = Known::default();
        let rows = sqlx::query(
            "SELECT a.applied_uid, r.state FROM applied_objects a JOIN requests r ON r.id = a.request_id
             WHERE a.applied_uid IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        let mut live = Vec::new();
        for row in rows {
            let uid: String = row.try_get("applied_uid")?;
            let state: String = row.try_get("state")?;
            if is_live(&state) {
                live.push(uid.clone());
                known.live_uids.insert(uid);
            } else {
                if State::parse(&state) == Some(State::NeedsAttention) {
                    known.attention_uids.insert(uid.clone());
                }
                known.ended_uids.insert(uid);
            }
        }
        known.approved_images = self.approved_images(&live).await?;
        // A UID a live request recorded is live, even if an ended one recorded it too.
        known
            .ended_uids
            .retain(|uid| !known.live_uids.contains(uid));
        for id in stamped {
            let row = sqlx::query("SELECT state FROM requests WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
            if let Some(row) = row {
                let state: String = row.try_get("state")?;
                known.requests.insert(id.clone(), is_live(&state));
                if State::parse(&state) == Some(State::Approved) {
                    known.applying.insert(id.clone());
                }
            }
        }
        Ok(known)
    }

    /// What the approvers approved for each of `uids` (objects the broker applied): the images
    /// of the object's body as its request was filed.
    pub async fn approved_images(
        &self,
        uids: &[String],
    ) -> Result<HashMap<String, HashSet<String>>> {
        let mut approved: HashMap<String, HashSet<String>> = HashMap::new();
        for uid in uids {
            let rows = sqlx::query(
                "SELECT a.position, r.objects FROM applied_objects a
                 JOIN requests r ON r.id = a.request_id WHERE a.applied_uid = $1",
            )
            .bind(uid)
            .fetch_all(self.pool())
            .await?;
            for row in rows {
                let position: i64 = row.try_get("position")?;
                let objects: String = row.try_get("objects")?;
                let objects: Value = serde_json::from_str(&objects).unwrap_or(Value::Null);
                let body = usize::try_from(position)
                    .ok()
                    .and_then(|p| objects.get(p))
                    .unwrap_or(&Value::Null);
                approved
                    .entry(uid.clone())
                    .or_default()
                    .extend(Known::images_of(body));
            }
        }
        Ok(approved)
    }

    /// Records that `suspect` was seen on `target` now. The first sighting of an episode
    /// inserts the finding and its `breakglass.unbrokered` event together and returns the
    /// finding; later sightings (and a replica that lost the race to insert) only move
    /// `last_seen` and return None.
    ///
    /// `announce` writes, in the same transaction, what the first sighting announces (the
    /// notifications' outbox): a finding that rolls back announces nothing.
    pub async fn record_sighting<A>(
        &self,
        target: &str,
        suspect: &Suspect,
        now: Millis,
        announce: A,
    ) -> Result<Option<(Finding, Journaled)>>
    where
        A: for<'t> FnOnce(
            &'t mut super::Tx,
            &'t Journaled,
        ) -> futures_util::future::BoxFuture<'t, Result<()>>,
    {
        // Read outside the transaction: on SQLite a transaction that reads before it writes
        // cannot take the write lock later while another holds it. Two replicas that read
        // the same episode both try to insert it below, and the unique key keeps one.
        let latest = sqlx::query(
            "SELECT id, episode, gone_at FROM findings WHERE target = $1 AND uid = $2
             ORDER BY episode DESC LIMIT 1",
        )
        .bind(target)
        .bind(&suspect.uid)
        .fetch_optional(self.pool())
        .await?;
        let members = text(&suspect.members);
        let episode = match latest {
            Some(row) if row.try_get::<Option<i64>, _>("gone_at")?.is_none() => {
                let id: String = row.try_get("id")?;
                sqlx::query(
                    "UPDATE findings SET last_seen = $1, members = $2 WHERE id = $3 AND last_seen < $1",
                )
                .bind(now)
                .bind(&members)
                .bind(&id)
                .execute_write(self)
                .await?;
                return Ok(None);
            }
            Some(row) => row.try_get::<i64, _>("episode")? + 1,
            None => 1,
        };
        self.insert_finding(target, suspect, episode, now, announce)
            .await
    }

    /// Records a finding of an object that has never had one on `target` (its first
    /// episode), with its event, unless it has one already: how Cloud Audit Logs report an
    /// admission, since a log entry cannot tell which of an object's episodes it belongs to.
    pub async fn record_first_sighting<A>(
        &self,
        target: &str,
        suspect: &Suspect,
        now: Millis,
        announce: A,
    ) -> Result<Option<(Finding, Journaled)>>
    where
        A: for<'t> FnOnce(
            &'t mut super::Tx,
            &'t Journaled,
        ) -> futures_util::future::BoxFuture<'t, Result<()>>,
    {
        self.insert_finding(target, suspect, 1, now, announce).await
    }

    /// Inserts the finding of this episode and its event, unless another replica did.
    async fn insert_finding<A>(
        &self,
        target: &str,
        suspect: &Suspect,
        episode: i64,
        now: Millis,
        announce: A,
    ) -> Result<Option<(Finding, Journaled)>>
    where
        A: for<'t> FnOnce(
            &'t mut super::Tx,
            &'t Journaled,
        ) -> futures_util::future::BoxFuture<'t, Result<()>>,
    {
        let members = text(&suspect.members);
        let mut tx = self.begin().await?;
        let id = uuid::Uuid::now_v7().to_string();
        let inserted = sqlx::query(
            "INSERT INTO findings (id, target, namespace, kind, name, uid, episode, reasons, images,
                writers, members, first_seen, last_seen, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, 'open')
             ON CONFLICT (target, uid, episode) DO NOTHING",
        )
        .bind(&id)
        .bind(target)
        .bind(&suspect.namespace)
        .bind(&suspect.kind)
        .bind(&suspect.name)
        .bind(&suspect.uid)
        .bind(episode)
        .bind(text(&suspect.reasons))
        .bind(text(&suspect.images))
        .bind(text(&suspect.writers))
        .bind(&members)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Ok(None);
        }
        let audit = Store::append_audit(
            &mut tx,
            event(
                now,
                AuditAction::Unbrokered,
                target,
                &suspect.namespace,
                json!({
                    "finding": id,
                    "episode": episode,
                    "api_version": suspect.api_version,
                    "kind": suspect.kind,
                    "name": suspect.name,
                    "uid": suspect.uid,
                    "reasons": suspect.reasons,
                    "images": suspect.images,
                    "writers": suspect.writers,
                    "members": suspect.members,
                }),
            ),
        )
        .await?;
        let finding = sqlx::query_as::<_, Finding>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM findings WHERE id = $1"
        )))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        announce(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(Some((finding, audit)))
    }

    /// Ends the episode of every finding on `target` whose object is no longer an unbrokered
    /// breakglass (a complete scan saw none of `present`); returns how many ended.
    pub async fn end_episodes(&self, target: &str, present: &[String], now: Millis) -> Result<u64> {
        self.end_episodes_where(target, present, now, |_| true)
            .await
    }

    /// [`Store::end_episodes`] for the open findings not in `present` that `may_end` lets go
    /// (it is asked once for each).
    pub async fn end_episodes_where(
        &self,
        target: &str,
        present: &[String],
        now: Millis,
        may_end: impl Fn(&str) -> bool,
    ) -> Result<u64> {
        let rows =
            sqlx::query("SELECT id, uid FROM findings WHERE target = $1 AND gone_at IS NULL")
                .bind(target)
                .fetch_all(self.pool())
                .await?;
        let mut ended = 0;
        for row in rows {
            let uid: String = row.try_get("uid")?;
            if present.contains(&uid) || !may_end(&uid) {
                continue;
            }
            let id: String = row.try_get("id")?;
            ended +=
                sqlx::query("UPDATE findings SET gone_at = $1 WHERE id = $2 AND gone_at IS NULL")
                    .bind(now)
                    .bind(&id)
                    .execute_write(self)
                    .await?
                    .rows_affected();
        }
        Ok(ended)
    }

    /// Records what the broker deleted in answer to a finding, with its audit event, once.
    pub async fn record_removal(
        &self,
        finding: &Finding,
        removed: &Value,
        now: Millis,
    ) -> Result<Option<Journaled>> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE findings SET removed = $1 WHERE id = $2 AND removed IS NULL")
                .bind(removed.to_string())
                .bind(&finding.id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let audit = Store::append_audit(
            &mut tx,
            event(
                now,
                AuditAction::UnbrokeredRemoved,
                &finding.target,
                &finding.namespace,
                json!({ "finding": finding.id, "uid": finding.uid, "removed": removed }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(audit))
    }

    /// Findings, newest first; with a state, only those in it.
    pub async fn findings(&self, state: Option<FindingState>, limit: i64) -> Result<Vec<Finding>> {
        let rows = match state {
            Some(state) => {
                sqlx::query_as::<_, Finding>(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM findings WHERE state = $1 ORDER BY first_seen DESC, id DESC LIMIT $2"
                )))
                .bind(state.as_str())
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query_as::<_, Finding>(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM findings ORDER BY first_seen DESC, id DESC LIMIT $1"
                )))
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        Ok(rows)
    }

    /// The finding of the episode still going on for this object, if any.
    pub async fn open_episode(&self, target: &str, uid: &str) -> Result<Option<Finding>> {
        Ok(sqlx::query_as::<_, Finding>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM findings WHERE target = $1 AND uid = $2 AND gone_at IS NULL
             ORDER BY episode DESC LIMIT 1"
        )))
        .bind(target)
        .bind(uid)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn finding(&self, id: &str) -> Result<Option<Finding>> {
        Ok(sqlx::query_as::<_, Finding>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM findings WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// How many findings nobody has acknowledged yet.
    pub async fn open_findings(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM findings WHERE state = 'open'")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Acknowledges an open finding with the person's comment, with its audit event; None when
    /// it was not open (already acknowledged by someone else).
    pub async fn acknowledge_finding(
        &self,
        id: &str,
        actor: &str,
        person: (&str, &str),
        comment: &str,
        now: Millis,
    ) -> Result<Option<(Finding, Journaled)>> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE findings SET state = 'acknowledged', acknowledged_by = $1, acknowledged_at = $2,
                comment = $3
             WHERE id = $4 AND state = 'open'",
        )
        .bind(actor)
        .bind(now)
        .bind(comment)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let finding = sqlx::query_as::<_, Finding>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM findings WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let mut new = event(
            now,
            AuditAction::AlertAcknowledged,
            &finding.target,
            &finding.namespace,
            json!({ "finding": id, "kind": finding.kind, "name": finding.name, "uid": finding.uid, "comment": comment }),
        );
        new.actor = actor;
        new.person = Some(person);
        let audit = Store::append_audit(&mut tx, new).await?;
        tx.commit().await?;
        Ok(Some((finding, audit)))
    }
}

/// Requests that are applying (approved, apply under way) or active.
fn is_live(state: &str) -> bool {
    matches!(State::parse(state), Some(State::Approved | State::Active))
}

/// A list column's text.
fn text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}
