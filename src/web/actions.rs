//! What people do to requests, shared by the JSON API and the pages: each action loads, asks
//! the domain whether it is allowed, and writes the change with its audit event in one
//! transaction.

use std::time::Duration;

use serde_json::json;

use super::AppState;
use super::error::AppError;
use crate::auth::{is_auditor, is_requester};
use crate::domain::approval::{self, may_decide, tally};
use crate::domain::digest::{Subject, digest};
use crate::domain::manifest::{self, Object, ParseError};
use crate::domain::policy::{Finding, RequestFields, quoted};
use crate::domain::state::{check_cancellable, check_closable, check_decidable};
use crate::domain::{ApprovalTally, Person, State};
use crate::store::{Approval, AuditEvent, NewEvent, NewRequest, Request, Store, Tx};
use crate::workers::commit;

/// What an engineer asks for.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestForm {
    pub target: String,
    pub namespace: String,
    pub manifest: String,
    pub ticket: String,
    pub justification: String,
    pub duration_minutes: u64,
}

/// A request checked against its target's policy, ready to be filed.
pub struct Checked {
    pub objects: Vec<Object>,
    pub digest: String,
    pub rule: String,
}

/// Everything a request would be refused for, or the objects and digest if nothing.
///
/// A manifest over the target's size limit is answered like a body over the request limit,
/// 413, before anything in it is read; every other refusal is 422 with all its findings.
pub fn check(state: &AppState, form: &RequestForm) -> Result<Checked, AppError> {
    let Some(target) = state.config.target(&form.target) else {
        let known: Vec<&str> = state
            .config
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        return Err(AppError::refused(vec![Finding::new(
            "",
            "target",
            format!(
                "{} is not a configured target (known: {})",
                quoted(&form.target),
                known.join(", ")
            ),
        )]));
    };
    let policy = state.policy(&form.target)?;
    let limits = target.limits();
    let too_large = |bytes: usize| {
        AppError::TooLarge(format!(
            "manifest is {bytes} bytes; target {} accepts at most {} bytes",
            target.name, limits.max_bytes
        ))
    };
    if form.manifest.len() > limits.max_bytes {
        return Err(too_large(form.manifest.len()));
    }
    let duration = Duration::from_secs(form.duration_minutes.saturating_mul(60));
    let mut findings = policy.check_fields(&RequestFields {
        namespace: &form.namespace,
        ticket: &form.ticket,
        justification: &form.justification,
        duration_minutes: form.duration_minutes,
    });
    let docs = match manifest::parse(&form.manifest, &limits) {
        Ok(docs) => docs,
        Err(ParseError::TooLarge { bytes, .. }) => return Err(too_large(bytes)),
        Err(ParseError::TooManyObjects { count, limit, more }) => {
            findings.push(Finding::new(
                "",
                "manifest",
                format!(
                    "has {}{count} objects; target {} accepts at most {limit}",
                    if more { "more than " } else { "" },
                    target.name
                ),
            ));
            return Err(AppError::refused(findings));
        }
        Err(problem) => {
            findings.push(Finding::new("", "manifest", problem.to_string()));
            return Err(AppError::refused(findings));
        }
    };
    let objects = match manifest::normalize(docs, &form.namespace) {
        Ok(objects) => objects,
        Err(more) => {
            findings.extend(more);
            return Err(AppError::refused(findings));
        }
    };
    findings.extend(policy.check_objects(&objects));
    if !findings.is_empty() {
        return Err(AppError::refused(findings));
    }
    let digest = digest(&Subject {
        target: &form.target,
        namespace: &form.namespace,
        objects: &objects,
        duration_seconds: duration.as_secs(),
        ticket: &form.ticket,
    });
    Ok(Checked {
        objects,
        digest,
        rule: approval::describe(&target.approvals),
    })
}

pub async fn create(
    state: &AppState,
    caller: &Person,
    form: RequestForm,
) -> Result<Request, AppError> {
    if !is_requester(&state.config.roles, caller) {
        return Err(AppError::Forbidden(format!(
            "filing breakglass requests needs membership in one of: {}",
            state.config.roles.requesters.join(", ")
        )));
    }
    let checked = check(state, &form)?;
    let target = state
        .config
        .target(&form.target)
        .ok_or(AppError::NotFound)?;
    let now = state.clock.now();
    let window = i64::try_from(target.approval_window.as_millis()).unwrap_or(i64::MAX);
    let new = NewRequest {
        id: uuid::Uuid::now_v7().to_string(),
        target: form.target.clone(),
        namespace: form.namespace.clone(),
        ticket: form.ticket.clone(),
        justification: form.justification.clone(),
        requester_subject: caller.subject.clone(),
        requester_name: caller.name.clone(),
        manifest: form.manifest.clone(),
        objects: serde_json::to_string(
            &checked.objects.iter().map(|o| &o.body).collect::<Vec<_>>(),
        )
        .map_err(anyhow::Error::from)?,
        duration_seconds: i64::try_from(form.duration_minutes.saturating_mul(60))
            .unwrap_or(i64::MAX),
        digest: checked.digest.clone(),
        created_at: now,
        decide_by: now.saturating_add(window),
    };
    let mut tx = state.store.begin().await?;
    Store::insert_request(&mut tx, &new).await?;
    let detail = json!({
        "digest": new.digest,
        "objects": checked.objects.iter().map(Object::label).collect::<Vec<_>>(),
        "duration_minutes": form.duration_minutes,
        "justification": form.justification,
        "approval_rule": checked.rule,
    });
    let event = audit(
        &mut tx,
        state,
        caller,
        "request.created",
        &new_ref(&new),
        detail,
    )
    .await?;
    commit(tx, vec![event]).await?;
    state.work.push(&new.id);
    state
        .store
        .request(&new.id)
        .await?
        .ok_or(AppError::NotFound)
}

/// The request, if this person may see it: its requester, anyone who may decide on it, auditors.
pub async fn load_visible(
    state: &AppState,
    caller: &Person,
    id: &str,
) -> Result<Request, AppError> {
    let request = state.store.request(id).await?.ok_or(AppError::NotFound)?;
    if can_see(state, caller, &request) {
        Ok(request)
    } else {
        Err(AppError::NotFound)
    }
}

pub fn can_see(state: &AppState, caller: &Person, request: &Request) -> bool {
    request.requester_subject == caller.subject
        || is_auditor(&state.config.roles, caller)
        || state
            .config
            .target(&request.target)
            .is_some_and(|t| may_decide(&t.approvals, &request.requester_subject, caller))
}

pub async fn tally_for(
    state: &AppState,
    request: &Request,
) -> Result<(ApprovalTally, Vec<Approval>), AppError> {
    let approvals = state.store.approvals(&request.id).await?;
    Ok((tally_of(state, request, &approvals), approvals))
}

fn tally_of(state: &AppState, request: &Request, approvals: &[Approval]) -> ApprovalTally {
    let rules = state
        .config
        .target(&request.target)
        .map(|t| t.approvals.clone())
        .unwrap_or_default();
    let people: Vec<Person> = approvals
        .iter()
        .filter(|a| a.decision == "approve")
        .map(|a| Person {
            subject: a.approver_subject.clone(),
            name: a.approver_name.clone(),
            groups: serde_json::from_str(&a.approver_groups).unwrap_or_default(),
        })
        .collect();
    tally(&rules, &request.requester_subject, &people)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

/// Records an approval or a rejection. An approval that completes the rule moves the request
/// to `approved` in the same transaction, and the apply starts the moment it commits.
pub async fn decide(
    state: &AppState,
    caller: &Person,
    id: &str,
    decision: Decision,
    digest: Option<&str>,
    comment: &str,
) -> Result<Request, AppError> {
    let verb = if decision == Decision::Approve {
        "approve"
    } else {
        "reject"
    };
    if comment.len() > 4000 {
        return Err(AppError::invalid("comment must be at most 4000 characters"));
    }
    let (mut tx, request) = lock_visible(state, caller, id).await?;
    let target = state
        .config
        .target(&request.target)
        .ok_or(AppError::NotFound)?;
    if request.requester_subject == caller.subject {
        return Err(AppError::Forbidden(format!(
            "you filed this request, so you cannot {verb} it; someone else must"
        )));
    }
    if !may_decide(&target.approvals, &request.requester_subject, caller) {
        let groups: Vec<&str> = target.approvals.iter().map(|r| r.group.as_str()).collect();
        return Err(AppError::Forbidden(format!(
            "to {verb} requests on {} you must be in one of: {}",
            request.target,
            groups.join(", ")
        )));
    }
    check_decidable(request.state, verb).map_err(AppError::Conflict)?;
    if request.decide_by <= state.clock.now() {
        return Err(AppError::Conflict(format!(
            "the approval window of this request closed at {}",
            crate::clock::rfc3339(request.decide_by)
        )));
    }
    if decision == Decision::Approve {
        let named = digest.unwrap_or_default();
        if named != request.digest {
            return Err(AppError::Conflict(format!(
                "this approval names digest {named:?}, but the request's digest is {}; review the request again and approve what it now says",
                request.digest
            )));
        }
    }
    let approval = Approval {
        approver_subject: caller.subject.clone(),
        approver_name: caller.name.clone(),
        approver_groups: serde_json::to_string(&caller.groups).map_err(anyhow::Error::from)?,
        decision: verb.to_owned(),
        digest: request.digest.clone(),
        comment: comment.to_owned(),
        at: state.clock.now(),
    };
    if !Store::insert_approval(&mut tx, id, &approval).await? {
        return Err(AppError::Conflict(format!(
            "{} has already decided on this request; each person counts once",
            caller.name
        )));
    }
    let action = if decision == Decision::Approve {
        "request.approved"
    } else {
        "request.rejected"
    };
    let mut events = vec![
        audit(
            &mut tx,
            state,
            caller,
            action,
            &request_ref(&request),
            json!({ "comment": comment, "digest": request.digest }),
        )
        .await?,
    ];
    let mut ready = false;
    match decision {
        Decision::Reject => {
            Store::set_state(&mut tx, id, State::Rejected, state.clock.now()).await?
        }
        Decision::Approve => {
            let approvals = Store::approvals_in(&mut tx, id).await?;
            let tally = tally_of(state, &request, &approvals);
            if tally.satisfied {
                Store::set_state(&mut tx, id, State::Approved, state.clock.now()).await?;
                let counted: Vec<&String> = tally.rules.iter().flat_map(|r| &r.counted).collect();
                events.push(
                    audit(&mut tx, state, caller, "request.fully_approved", &request_ref(&request), json!({ "counted": counted, "rule": approval::describe(&target.approvals) }))
                        .await?,
                );
                ready = true;
            }
        }
    }
    commit(tx, events).await?;
    if ready {
        state.work.push(id);
    }
    state.store.request(id).await?.ok_or(AppError::NotFound)
}

/// The requester withdraws a request nobody has fully approved yet.
pub async fn cancel(state: &AppState, caller: &Person, id: &str) -> Result<Request, AppError> {
    requester_action(state, caller, id, RequesterAction::Cancel).await
}

/// The requester ends an active breakglass early; the worker undoes it at once.
pub async fn close(state: &AppState, caller: &Person, id: &str) -> Result<Request, AppError> {
    let request = requester_action(state, caller, id, RequesterAction::Close).await?;
    state.work.push(id);
    Ok(request)
}

#[derive(Clone, Copy)]
enum RequesterAction {
    Cancel,
    Close,
}

async fn requester_action(
    state: &AppState,
    caller: &Person,
    id: &str,
    action: RequesterAction,
) -> Result<Request, AppError> {
    let (verb, event) = match action {
        RequesterAction::Cancel => ("cancel", "request.cancelled"),
        RequesterAction::Close => ("close", "request.close_requested"),
    };
    let (mut tx, request) = lock_visible(state, caller, id).await?;
    if request.requester_subject != caller.subject {
        return Err(AppError::Forbidden(format!(
            "only the requester, {}, can {verb} this request",
            request.requester_name
        )));
    }
    match action {
        RequesterAction::Cancel => {
            check_cancellable(request.state).map_err(AppError::Conflict)?;
            Store::set_state(&mut tx, id, State::Cancelled, state.clock.now()).await?;
        }
        RequesterAction::Close => {
            check_closable(request.state).map_err(AppError::Conflict)?;
            if request.end_requested.is_some() {
                return Err(AppError::Conflict(
                    "this request is already being closed".into(),
                ));
            }
            Store::set_end_requested(&mut tx, id, "closed").await?;
        }
    }
    let event = audit(
        &mut tx,
        state,
        caller,
        event,
        &request_ref(&request),
        json!({}),
    )
    .await?;
    commit(tx, vec![event]).await?;
    state.store.request(id).await?.ok_or(AppError::NotFound)
}

/// Opens the transaction that changes a request, with its row locked, if the caller may see it.
async fn lock_visible(
    state: &AppState,
    caller: &Person,
    id: &str,
) -> Result<(Tx, Request), AppError> {
    let mut tx = state.store.begin().await?;
    let request = Store::lock_request(&mut tx, id)
        .await?
        .ok_or(AppError::NotFound)?;
    if !can_see(state, caller, &request) {
        return Err(AppError::NotFound);
    }
    Ok((tx, request))
}

/// The request fields every audit event about it carries.
pub struct RequestRef<'a> {
    pub id: &'a str,
    pub ticket: &'a str,
    pub target: &'a str,
    pub namespace: &'a str,
}

fn request_ref(r: &Request) -> RequestRef<'_> {
    RequestRef {
        id: &r.id,
        ticket: &r.ticket,
        target: &r.target,
        namespace: &r.namespace,
    }
}

fn new_ref(r: &NewRequest) -> RequestRef<'_> {
    RequestRef {
        id: &r.id,
        ticket: &r.ticket,
        target: &r.target,
        namespace: &r.namespace,
    }
}

async fn audit(
    tx: &mut Tx,
    state: &AppState,
    caller: &Person,
    action: &str,
    request: &RequestRef<'_>,
    detail: serde_json::Value,
) -> Result<AuditEvent, AppError> {
    Ok(Store::append_audit(
        tx,
        NewEvent {
            at: state.clock.now(),
            actor: &caller.name,
            action,
            request_id: Some(request.id),
            ticket: Some(request.ticket),
            target: Some(request.target),
            namespace: Some(request.namespace),
            detail,
        },
    )
    .await?)
}
