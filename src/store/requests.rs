//! Requests, decisions on them, and what the broker applied for them.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, FromRow, Row};

use super::{ExecuteWrite, Result, Store, Tx};
use crate::clock::Millis;
use crate::domain::manifest::{Object, ObjectRef, Written};
use crate::domain::person::Names;
use crate::domain::{Person, State};
use serde_json::Value;

/// A request as stored. Immutable fields first; then what the lifecycle fills in.
#[derive(Clone, Debug, Serialize)]
pub struct Request {
    pub id: String,
    pub target: String,
    pub namespace: String,
    pub ticket: String,
    pub justification: String,
    pub requester_issuer: String,
    pub requester_subject: String,
    pub requester_name: String,
    pub manifest: String,
    /// The normalized objects, as a JSON array: exactly what the digest covers.
    pub objects: String,
    pub duration_seconds: i64,
    pub digest: String,
    pub state: State,
    pub created_at: Millis,
    pub decide_by: Millis,
    pub applied_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub end_requested: Option<String>,
    pub last_error: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: Option<Millis>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Millis>,
    /// For an extension: the request whose breakglass it extends.
    pub extends: Option<String>,
    /// The requester's post-incident review, once written, and when.
    pub review: Option<String>,
    pub reviewed_at: Option<Millis>,
}

impl FromRow<'_, AnyRow> for Request {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let state: String = row.try_get("state")?;
        Ok(Request {
            id: row.try_get("id")?,
            target: row.try_get("target")?,
            namespace: row.try_get("namespace")?,
            ticket: row.try_get("ticket")?,
            justification: row.try_get("justification")?,
            requester_issuer: row.try_get("requester_issuer")?,
            requester_subject: row.try_get("requester_subject")?,
            requester_name: row.try_get("requester_name")?,
            manifest: row.try_get("manifest")?,
            objects: row.try_get("objects")?,
            duration_seconds: row.try_get("duration_seconds")?,
            digest: row.try_get("digest")?,
            state: State::parse(&state)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown state {state:?}").into()))?,
            created_at: row.try_get("created_at")?,
            decide_by: row.try_get("decide_by")?,
            applied_at: row.try_get("applied_at")?,
            expires_at: row.try_get("expires_at")?,
            ended_at: row.try_get("ended_at")?,
            end_requested: row.try_get("end_requested")?,
            last_error: row.try_get("last_error")?,
            attempts: row.try_get("attempts")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_until: row.try_get("lease_until")?,
            extends: row.try_get("extends")?,
            review: row.try_get("review")?,
            reviewed_at: row.try_get("reviewed_at")?,
        })
    }
}

impl Request {
    /// The normalized objects, as stored when the request was made.
    pub fn objects(&self) -> std::result::Result<Vec<Object>, String> {
        let bodies: Vec<Value> = serde_json::from_str(&self.objects)
            .map_err(|e| format!("stored objects are unreadable: {e}"))?;
        bodies
            .into_iter()
            .map(|body| {
                let field = |p: &str| {
                    body.pointer(p)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| format!("stored object lacks {p}"))
                };
                Ok(Object {
                    api_version: field("/apiVersion")?,
                    kind: field("/kind")?,
                    // Cloud Run services have none.
                    namespace: field("/metadata/namespace").unwrap_or_default(),
                    name: field("/metadata/name")?,
                    body,
                })
            })
            .collect()
    }
}

pub struct NewRequest {
    pub id: String,
    pub target: String,
    pub namespace: String,
    pub ticket: String,
    pub justification: String,
    pub requester_issuer: String,
    pub requester_subject: String,
    pub requester_name: String,
    pub manifest: String,
    pub objects: String,
    pub duration_seconds: i64,
    pub digest: String,
    pub created_at: Millis,
    pub decide_by: Millis,
    /// For an extension: the request whose breakglass it extends.
    pub extends: Option<String>,
}

/// A decision on a request: an approval or a rejection.
#[derive(Clone, Debug, Serialize, FromRow)]
pub struct Approval {
    pub approver_issuer: String,
    pub approver_subject: String,
    pub approver_name: String,
    /// The approver's groups when they decided, as a JSON array.
    #[serde(skip)]
    pub approver_groups: String,
    pub decision: String,
    pub digest: String,
    pub comment: String,
    pub at: Millis,
}

impl AppliedObject {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl Approval {
    /// An approval rather than a rejection.
    pub fn is_approval(&self) -> bool {
        self.decision == "approve"
    }

    /// The approver as they were when they decided: the groups they decided with count.
    pub fn person(&self) -> Person {
        Person {
            issuer: self.approver_issuer.clone(),
            subject: self.approver_subject.clone(),
            name: self.approver_name.clone(),
            groups: serde_json::from_str(&self.approver_groups).unwrap_or_default(),
        }
    }
}

/// The people of a request as the broker stamps them on the objects and shows them on the
/// request page: the requester, and those who approved in the order they did, each name told
/// apart from the others' where two people share one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub requester: String,
    pub approvers: Vec<String>,
}

impl Named {
    pub fn of(request: &Request, approvals: &[Approval]) -> Named {
        let names = Names::new(
            std::iter::once((
                request.requester_name.as_str(),
                request.requester_subject.as_str(),
            ))
            .chain(
                approvals
                    .iter()
                    .map(|a| (a.approver_name.as_str(), a.approver_subject.as_str())),
            ),
        );
        Named {
            requester: names.show(&request.requester_name, &request.requester_subject),
            approvers: approvals
                .iter()
                .filter(|a| a.is_approval())
                .map(|a| names.show(&a.approver_name, &a.approver_subject))
                .collect(),
        }
    }
}

/// One object of an applied request: what stood there before, and the version the broker left.
#[derive(Clone, Debug, FromRow)]
pub struct AppliedObject {
    pub position: i64,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub before_apply: Option<String>,
    pub applied_version: Option<String>,
    /// The object's UID after the broker's write.
    pub applied_uid: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    pub state: Option<State>,
    pub requester_subject: Option<String>,
    pub ticket: Option<String>,
    /// Only what this person may see; None for everything (auditors).
    pub visible_to: Option<Visibility>,
    pub limit: i64,
}

/// Whom a list is for: the requests they filed, and those on the targets they approve for.
/// Applied in the query, before the limit, so that a page of others' requests never hides
/// one's own.
#[derive(Clone, Debug, Default)]
pub struct Visibility {
    pub subject: String,
    pub approver_of: Vec<String>,
}

/// The columns a [`Request`] is read from; a macro so queries stay `&'static str`.
macro_rules! columns {
    () => {
        "id, target, namespace, ticket, justification, requester_issuer, requester_subject, requester_name, \
         manifest, objects, duration_seconds, digest, state, created_at, decide_by, applied_at, \
         expires_at, ended_at, end_requested, last_error, attempts, next_attempt_at, lease_owner, lease_until, \
         extends, review, reviewed_at"
    };
}
pub(super) use columns;

impl Store {
    pub async fn request(&self, id: &str) -> Result<Option<Request>> {
        request(self.pool(), id).await
    }

    pub async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>> {
        let mut sql = String::from(concat!(
            "SELECT ",
            columns!(),
            " FROM requests
             WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR requester_subject = $2)
               AND ($3 IS NULL OR ticket = $3)"
        ));
        if let Some(visible) = &filter.visible_to {
            sql.push_str(" AND (requester_subject = $5");
            if !visible.approver_of.is_empty() {
                let places: Vec<String> = (0..visible.approver_of.len())
                    .map(|i| format!("${}", i + 6))
                    .collect();
                sql.push_str(&format!(" OR target IN ({})", places.join(", ")));
            }
            sql.push(')');
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT $4");
        // Placeholders only: every value is bound below.
        let mut query = sqlx::query_as(AssertSqlSafe(sql))
            .bind(filter.state.map(State::as_str))
            .bind(filter.requester_subject.as_deref())
            .bind(filter.ticket.as_deref())
            .bind(if filter.limit > 0 { filter.limit } else { 100 });
        if let Some(visible) = &filter.visible_to {
            query = query.bind(visible.subject.as_str());
            for target in &visible.approver_of {
                query = query.bind(target.as_str());
            }
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    /// The pending requests this person has already decided on, in one query: what the
    /// dashboard needs to leave out of "waiting for you".
    pub async fn pending_decided_by(&self, subject: &str) -> Result<HashSet<String>> {
        let rows = sqlx::query(
            "SELECT a.request_id FROM approvals a JOIN requests r ON r.id = a.request_id
             WHERE a.approver_subject = $1 AND r.state = 'pending'",
        )
        .bind(subject)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("request_id")?))
            .collect()
    }

    pub async fn approvals(&self, request_id: &str) -> Result<Vec<Approval>> {
        approvals(self.pool(), request_id).await
    }

    /// The request that holds one of these objects for a breakglass, if one does.
    pub async fn holder(&self, target: &str, objects: &[ObjectRef]) -> Result<Option<String>> {
        for object in objects {
            if let Some(holder) = holder_of(self.pool(), target, object, None).await? {
                return Ok(Some(holder));
            }
        }
        Ok(None)
    }

    /// The oldest breakglass of this person on this target that ended and still waits for
    /// its review, if one does.
    pub async fn awaiting_review(&self, subject: &str, target: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT id FROM requests
             WHERE requester_subject = $1 AND target = $2 AND review IS NULL
               AND state IN ('expired', 'closed')
             ORDER BY created_at, id LIMIT 1",
        )
        .bind(subject)
        .bind(target)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|row| row.try_get("id")).transpose()?)
    }

    pub async fn applied_objects(&self, request_id: &str) -> Result<Vec<AppliedObject>> {
        applied_objects(self.pool(), request_id).await
    }
}

/// The request holding this object for a breakglass, other than `except`.
async fn holder_of<'e, E>(
    executor: E,
    target: &str,
    object: &ObjectRef,
    except: Option<&str>,
) -> Result<Option<String>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(
        "SELECT request_id FROM object_holds
         WHERE target = $1 AND namespace = $2 AND kind = $3 AND name = $4
           AND ($5 IS NULL OR request_id <> $5)",
    )
    .bind(target)
    .bind(&object.namespace)
    .bind(&object.kind)
    .bind(&object.name)
    .bind(except)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| row.try_get("request_id")).transpose()?)
}

pub(super) async fn request<'e, E>(executor: E, id: &str) -> Result<Option<Request>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = concat!("SELECT ", columns!(), " FROM requests WHERE id = $1");
    Ok(sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(executor)
        .await?)
}

pub(super) async fn approvals<'e, E>(executor: E, request_id: &str) -> Result<Vec<Approval>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    Ok(sqlx::query_as(
        "SELECT approver_issuer, approver_subject, approver_name, approver_groups, decision, digest,
                comment, at
         FROM approvals WHERE request_id = $1 ORDER BY at, approver_subject",
    )
    .bind(request_id)
    .fetch_all(executor)
    .await?)
}

async fn applied_objects<'e, E>(executor: E, request_id: &str) -> Result<Vec<AppliedObject>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    Ok(sqlx::query_as(
        "SELECT position, api_version, kind, namespace, name, before_apply, applied_version, applied_uid
         FROM applied_objects WHERE request_id = $1 ORDER BY position",
    )
    .bind(request_id)
    .fetch_all(executor)
    .await?)
}

/// Writes inside a transaction. Each one that changes a request starts by locking its row
/// ([`lock_request`]), so concurrent deciders on one request take turns.
impl Store {
    pub async fn insert_request(tx: &mut Tx, new: &NewRequest) -> Result<()> {
        sqlx::query(
            "INSERT INTO requests (id, target, namespace, ticket, justification, requester_issuer,
                requester_subject, requester_name, manifest, objects, duration_seconds, digest, state,
                created_at, decide_by, extends)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $14, $15)",
        )
        .bind(&new.id)
        .bind(&new.target)
        .bind(&new.namespace)
        .bind(&new.ticket)
        .bind(&new.justification)
        .bind(&new.requester_issuer)
        .bind(&new.requester_subject)
        .bind(&new.requester_name)
        .bind(&new.manifest)
        .bind(&new.objects)
        .bind(new.duration_seconds)
        .bind(&new.digest)
        .bind(new.created_at)
        .bind(new.decide_by)
        .bind(new.extends.as_deref())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The extensions filed for a breakglass, as this transaction sees them, oldest first.
    /// Closes the approval window of every pending extension of `original_id` at `now`: the
    /// breakglass it would extend has ended, so the worker lets it lapse.
    pub async fn close_extension_windows(
        tx: &mut Tx,
        original_id: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE requests SET decide_by = $2
             WHERE extends = $1 AND state = 'pending' AND decide_by > $2",
        )
        .bind(original_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn extensions_in(tx: &mut Tx, original_id: &str) -> Result<Vec<Request>> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM requests WHERE extends = $1 ORDER BY created_at, id"
        );
        Ok(sqlx::query_as(sql)
            .bind(original_id)
            .fetch_all(&mut **tx)
            .await?)
    }

    /// Records the requester's review of a breakglass that ended.
    pub async fn set_review(tx: &mut Tx, id: &str, review: &str, at: Millis) -> Result<()> {
        sqlx::query("UPDATE requests SET review = $1, reviewed_at = $2 WHERE id = $3")
            .bind(review)
            .bind(at)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Moves the end of a running breakglass: what an approved extension does.
    pub async fn move_expiry(tx: &mut Tx, id: &str, expires_at: Millis) -> Result<()> {
        sqlx::query("UPDATE requests SET expires_at = $1 WHERE id = $2 AND state = 'active'")
            .bind(expires_at)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Locks the request's row for the rest of the transaction and returns it.
    pub async fn lock_request(tx: &mut Tx, id: &str) -> Result<Option<Request>> {
        let sql = concat!(
            "UPDATE requests SET version = version + 1 WHERE id = $1 RETURNING ",
            columns!()
        );
        Ok(sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?)
    }

    /// A request as this transaction sees it, without locking it.
    pub async fn request_in(tx: &mut Tx, id: &str) -> Result<Option<Request>> {
        let sql = concat!("SELECT ", columns!(), " FROM requests WHERE id = $1");
        Ok(sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?)
    }

    /// The decisions on a request as this transaction sees them.
    pub async fn approvals_in(tx: &mut Tx, request_id: &str) -> Result<Vec<Approval>> {
        approvals(&mut **tx, request_id).await
    }

    /// Records a decision; false when this person already decided on this request.
    pub async fn insert_approval(
        tx: &mut Tx,
        request_id: &str,
        approval: &Approval,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO approvals (request_id, approver_issuer, approver_subject, approver_name,
                approver_groups, decision, digest, comment, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (request_id, approver_subject) DO NOTHING",
        )
        .bind(request_id)
        .bind(&approval.approver_issuer)
        .bind(&approval.approver_subject)
        .bind(&approval.approver_name)
        .bind(&approval.approver_groups)
        .bind(&approval.decision)
        .bind(&approval.digest)
        .bind(&approval.comment)
        .bind(approval.at)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves the request to `state` (`ended_at` is set for final states); returns it as it
    /// now is, or None when there is none.
    pub async fn set_state(
        tx: &mut Tx,
        id: &str,
        state: State,
        now: Millis,
    ) -> Result<Option<Request>> {
        let sql = concat!(
            "UPDATE requests SET state = $1, ended_at = CASE WHEN $2 THEN $3 ELSE ended_at END,
                lease_owner = NULL, lease_until = NULL, next_attempt_at = NULL, attempts = 0
             WHERE id = $4 RETURNING ",
            columns!()
        );
        Ok(sqlx::query_as(sql)
            .bind(state.as_str())
            .bind(state.is_final() || state == State::NeedsAttention)
            .bind(now)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?)
    }

    pub async fn set_end_requested(tx: &mut Tx, id: &str, reason: &str) -> Result<()> {
        sqlx::query("UPDATE requests SET end_requested = $1 WHERE id = $2")
            .bind(reason)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The request's last error is no longer current.
    pub async fn clear_error(tx: &mut Tx, id: &str) -> Result<()> {
        sqlx::query("UPDATE requests SET last_error = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The end was tried and did not finish: it runs again only when a person asks again.
    pub async fn clear_end_requested(tx: &mut Tx, id: &str) -> Result<()> {
        sqlx::query("UPDATE requests SET end_requested = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Takes hold of the request's objects for its breakglass; the ones it holds already
    /// (from its approval) count as taken. Returns the request holding one of the others, if
    /// any, and then holds none of them: one breakglass per object.
    ///
    /// One statement takes every object nobody else holds. Only when some are held by another
    /// does a second look say by whom: the conflicting rows stay locked until the transaction
    /// ends, so that holder cannot let go in between.
    pub async fn hold_objects(
        tx: &mut Tx,
        request: &Request,
        objects: &[ObjectRef],
    ) -> Result<Option<String>> {
        // As held: by namespace, kind and name (one statement may not take a row twice).
        let mut distinct: Vec<&ObjectRef> = Vec::with_capacity(objects.len());
        for object in objects {
            let held = |o: &&ObjectRef| {
                (&o.namespace, &o.kind, &o.name) == (&object.namespace, &object.kind, &object.name)
            };
            if !distinct.iter().any(held) {
                distinct.push(object);
            }
        }
        if distinct.is_empty() {
            return Ok(None);
        }
        // Placeholders only: the objects are all bound below.
        let sql = format!(
            "INSERT INTO object_holds (target, namespace, kind, name, request_id) VALUES {}
             ON CONFLICT (target, namespace, kind, name) DO UPDATE SET request_id = excluded.request_id
             WHERE object_holds.request_id = excluded.request_id
             RETURNING namespace, kind, name",
            super::audit::placeholders(0, distinct.len(), 5)
        );
        let mut insert = sqlx::query(AssertSqlSafe(sql));
        for object in &distinct {
            insert = insert
                .bind(&request.target)
                .bind(&object.namespace)
                .bind(&object.kind)
                .bind(&object.name)
                .bind(&request.id);
        }
        let taken = insert.fetch_all(&mut **tx).await?;
        if taken.len() == distinct.len() {
            return Ok(None);
        }
        let Some(holder) = Self::holder_in(tx, request, objects).await? else {
            return Ok(None);
        };
        // Give back what this call took, should the caller commit anyway.
        for row in &taken {
            sqlx::query(
                "DELETE FROM object_holds
                 WHERE target = $1 AND namespace = $2 AND kind = $3 AND name = $4 AND request_id = $5",
            )
            .bind(&request.target)
            .bind(row.try_get::<String, _>("namespace")?)
            .bind(row.try_get::<String, _>("kind")?)
            .bind(row.try_get::<String, _>("name")?)
            .bind(&request.id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(Some(holder))
    }

    /// The breakglass's objects are free again.
    pub async fn release_holds(tx: &mut Tx, request_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM object_holds WHERE request_id = $1")
            .bind(request_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn holder_in(
        tx: &mut Tx,
        request: &Request,
        objects: &[ObjectRef],
    ) -> Result<Option<String>> {
        for object in objects {
            if let Some(holder) =
                holder_of(&mut **tx, &request.target, object, Some(&request.id)).await?
            {
                return Ok(Some(holder));
            }
        }
        Ok(None)
    }

    /// Marks the request active from `applied_at` until `expires_at`.
    pub async fn set_active(
        tx: &mut Tx,
        id: &str,
        applied_at: Millis,
        expires_at: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE requests SET state = 'active', applied_at = $1, expires_at = $2, last_error = NULL,
                lease_owner = NULL, lease_until = NULL, next_attempt_at = NULL, attempts = 0
             WHERE id = $3",
        )
        .bind(applied_at)
        .bind(expires_at)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Plans the expiry before the first object is applied, so the stamp and the record agree.
    pub async fn plan_expiry(tx: &mut Tx, id: &str, expires_at: Millis) -> Result<()> {
        sqlx::query("UPDATE requests SET expires_at = $1 WHERE id = $2")
            .bind(expires_at)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn record_error(tx: &mut Tx, id: &str, error: &str) -> Result<()> {
        sqlx::query("UPDATE requests SET last_error = $1 WHERE id = $2")
            .bind(error)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn insert_applied_object(
        tx: &mut Tx,
        request_id: &str,
        object: &AppliedObject,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO applied_objects (request_id, position, api_version, kind, namespace, name, before_apply)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(request_id)
        .bind(object.position)
        .bind(&object.api_version)
        .bind(&object.kind)
        .bind(&object.namespace)
        .bind(&object.name)
        .bind(object.before_apply.as_deref())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn record_applied_version(
        &self,
        request_id: &str,
        position: i64,
        written: &Written,
    ) -> Result<()> {
        sqlx::query("UPDATE applied_objects SET applied_version = $1, applied_uid = $2 WHERE request_id = $3 AND position = $4")
            .bind(&written.version)
            .bind(written.uid.as_deref())
            .bind(request_id)
            .bind(position)
            .execute_write(self)
            .await?;
        Ok(())
    }
}
