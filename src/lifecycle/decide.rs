//! What people decide about a request after it is filed: approve, reject, cancel, close.
//! Each loads the request with its row locked, asks the domain whether the action is allowed,
//! and writes the change with its audit event in one transaction.

use serde_json::json;

use super::{Actor, Change, Lifecycle, LifecycleError, Limit, RequestRef};
use crate::domain::access::{self, may_decide};
use crate::domain::approval::{self, tally};
use crate::domain::manifest::ObjectRef;
use crate::domain::state::{check_cancellable, check_closable, check_decidable};
use crate::domain::{ApprovalTally, AuditAction, Person};
use crate::store::{Approval, Request, Store};

/// The longest comment a decision carries.
const MAX_COMMENT: usize = 4000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    fn verb(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

impl Lifecycle {
    /// How far the request's approvals go towards its target's rules, and the decisions.
    pub async fn tally(
        &self,
        request: &Request,
    ) -> Result<(ApprovalTally, Vec<Approval>), LifecycleError> {
        let approvals = self.store.approvals(&request.id).await?;
        Ok((self.tally_of(request, &approvals), approvals))
    }

    /// A request whose target is no longer configured has no rules to satisfy: its tally is
    /// never satisfied, and deciding on it is refused with the reason ([`Lifecycle::decide`]).
    pub fn tally_of(&self, request: &Request, approvals: &[Approval]) -> ApprovalTally {
        let rules = self.targets.rules(&request.target).unwrap_or_default();
        let people: Vec<Person> = approvals
            .iter()
            .filter(|a| a.is_approval())
            .map(Approval::person)
            .collect();
        tally(
            rules,
            (&request.requester_name, &request.requester_subject),
            &people,
        )
    }

    /// Records an approval or a rejection. An approval that completes the rule moves the
    /// request to `approved` in the same transaction, and the apply starts the moment it
    /// commits.
    pub async fn decide(
        &self,
        caller: &Person,
        id: &str,
        decision: Decision,
        digest: Option<&str>,
        comment: &str,
    ) -> Result<Request, LifecycleError> {
        let verb = decision.verb();
        self.require_recording().await?;
        self.count(caller, Limit::Decision)?;
        let _answering = self.answering.begin();
        if comment.len() > MAX_COMMENT {
            return Err(LifecycleError::Invalid(format!(
                "comment must be at most {MAX_COMMENT} characters"
            )));
        }
        let (mut change, request) = self.lock_visible(caller, id).await?;
        let target = self.targets.get(&request.target).map_err(|unknown| {
            LifecycleError::Conflict(format!(
                "nobody can {verb} this request until its target is configured again: {unknown}"
            ))
        })?;
        if request.requester_subject == caller.subject {
            return Err(LifecycleError::Forbidden(format!(
                "you filed this request, so you cannot {verb} it; someone else must"
            )));
        }
        if !may_decide(&self.access(&request), caller) {
            let groups: Vec<&str> = target.rules().iter().map(|r| r.group.as_str()).collect();
            return Err(LifecycleError::Forbidden(format!(
                "to {verb} requests on {} you must be in one of: {}",
                request.target,
                groups.join(", ")
            )));
        }
        check_decidable(request.state, verb).map_err(LifecycleError::Conflict)?;
        if request.decide_by <= self.clock.now() {
            return Err(LifecycleError::Conflict(format!(
                "the approval window of this request closed at {}",
                crate::clock::rfc3339(request.decide_by)
            )));
        }
        if decision == Decision::Approve {
            let named = digest.unwrap_or_default();
            if named != request.digest {
                return Err(LifecycleError::Conflict(format!(
                    "this approval names digest {named:?}, but the request's digest is {}; review the request again and approve what it now says",
                    request.digest
                )));
            }
        }
        let approval = Approval {
            approver_issuer: caller.issuer.clone(),
            approver_subject: caller.subject.clone(),
            approver_name: caller.name.clone(),
            approver_groups: serde_json::to_string(&caller.groups).map_err(anyhow::Error::from)?,
            decision: verb.to_owned(),
            digest: request.digest.clone(),
            comment: comment.to_owned(),
            at: self.clock.now(),
        };
        if !Store::insert_approval(change.tx(), id, &approval).await? {
            return Err(LifecycleError::Conflict(
                "you have already decided on this request; each person counts once".into(),
            ));
        }
        let reference = RequestRef::from(&request);
        let actor = Actor::Person(caller);
        let detail = json!({ "comment": comment, "digest": request.digest });
        let mut ready = false;
        // The request as a decision that moved it left it, read in the transaction (the worker
        // may move it on the moment it commits).
        let mut moved = None;
        // The breakglass an approved extension moved the end of.
        let mut extended = None;
        match decision {
            Decision::Reject => {
                moved = change
                    .transition(reference, actor, AuditAction::Rejected, detail)
                    .await?
            }
            Decision::Approve => {
                let approvals = Store::approvals_in(change.tx(), id).await?;
                let tally = self.tally_of(&request, &approvals);
                // How far the rule has come, so the timeline can say "1 of 2".
                let mut detail = detail;
                detail["counted"] = tally.counted().into();
                detail["required"] = tally.required().into();
                change
                    .record(reference, actor, AuditAction::Approved, detail)
                    .await?;
                if tally.satisfied {
                    // An extension holds nothing: the breakglass it extends holds its objects.
                    if request.extends.is_none() {
                        let objects = objects_of(&request)?;
                        if let Some(holder) =
                            Store::hold_objects(change.tx(), &request, &objects).await?
                        {
                            return Err(held_by(&holder));
                        }
                    }
                    let counted: Vec<&String> =
                        tally.rules.iter().flat_map(|r| &r.counted).collect();
                    let detail =
                        json!({ "counted": counted, "rule": approval::describe(target.rules()) });
                    moved = change
                        .transition(reference, actor, AuditAction::FullyApproved, detail)
                        .await?;
                    match &request.extends {
                        // Granted in this transaction: never `approved` once committed, so the
                        // apply worker never sees it.
                        Some(original) => {
                            moved = self.grant(&mut change, &request, original, actor).await?;
                            extended = Some(original.clone());
                        }
                        None => ready = true,
                    }
                }
            }
        }
        let decided = moved.unwrap_or(request);
        change.commit().await?;
        if ready {
            self.hand_to_apply(id);
        }
        if let Some(original) = extended {
            // Its end moved: the worker sleeps towards a new deadline.
            self.wake(&original);
        }
        Ok(decided)
    }

    /// The requester withdraws a request nobody has fully approved yet.
    pub async fn cancel(&self, caller: &Person, id: &str) -> Result<Request, LifecycleError> {
        let (mut change, request) = self.lock_visible(caller, id).await?;
        if !access::may_cancel(&self.access(&request), caller) {
            return Err(only_the_requester(&request, "cancel"));
        }
        check_cancellable(request.state).map_err(LifecycleError::Conflict)?;
        let cancelled = change
            .transition(
                RequestRef::from(&request),
                Actor::Person(caller),
                AuditAction::Cancelled,
                json!({}),
            )
            .await?
            .ok_or(LifecycleError::NotFound)?;
        change.commit().await?;
        Ok(cancelled)
    }

    /// Ends a breakglass now: the requester, early; an approver of the target, too, and also
    /// one whose end did not finish (needs attention), which runs the end again. The workers
    /// start at once; the audit names who ended it and why.
    pub async fn close(
        &self,
        caller: &Person,
        id: &str,
        comment: &str,
    ) -> Result<Request, LifecycleError> {
        self.count(caller, Limit::Decision)?;
        if comment.len() > MAX_COMMENT {
            return Err(LifecycleError::Invalid(format!(
                "comment must be at most {MAX_COMMENT} characters"
            )));
        }
        let (mut change, request) = self.lock_visible(caller, id).await?;
        let access = self.access(&request);
        if !access::may_close(&access, caller) {
            return Err(LifecycleError::Forbidden(format!(
                "only the requester, {}, or an approver of {} can end this breakglass",
                request.requester_name, request.target
            )));
        }
        let requester = request.requester_subject == caller.subject;
        if !requester && comment.trim().is_empty() {
            return Err(LifecycleError::Invalid(
                "say why you end someone else's breakglass: a comment is required".into(),
            ));
        }
        check_closable(request.state).map_err(LifecycleError::Conflict)?;
        if request.end_requested.is_some() {
            return Err(LifecycleError::Conflict(
                "this request is already being closed".into(),
            ));
        }
        Store::set_end_requested(change.tx(), id, "closed").await?;
        change
            .record(
                RequestRef::from(&request),
                Actor::Person(caller),
                AuditAction::CloseRequested,
                json!({ "comment": comment, "state": request.state }),
            )
            .await?;
        change.commit().await?;
        self.wake(id);
        self.reload(id).await
    }

    /// Opens the change to a request, with its row locked, if the caller may see it.
    pub(super) async fn lock_visible(
        &self,
        caller: &Person,
        id: &str,
    ) -> Result<(Change, Request), LifecycleError> {
        let mut change = self.begin().await?;
        let request = Store::lock_request(change.tx(), id)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        if !self.may_see(caller, &request) {
            return Err(LifecycleError::NotFound);
        }
        Ok((change, request))
    }

    pub(super) async fn reload(&self, id: &str) -> Result<Request, LifecycleError> {
        self.store
            .request(id)
            .await?
            .ok_or(LifecycleError::NotFound)
    }
}

/// The request's objects, as the holds and the one-breakglass-per-object rule name them.
pub(super) fn objects_of(request: &Request) -> Result<Vec<ObjectRef>, LifecycleError> {
    let objects = request
        .objects()
        .map_err(|e| LifecycleError::Internal(anyhow::anyhow!(e)))?;
    Ok(objects.iter().map(ObjectRef::from).collect())
}

/// The refusal when another breakglass holds one of the objects.
pub(super) fn held_by(holder: &str) -> LifecycleError {
    LifecycleError::Conflict(format!(
        "an object of this request is held by breakglass request {holder} (/requests/{holder}) until it ends; one breakglass per object"
    ))
}

fn only_the_requester(request: &Request, verb: &str) -> LifecycleError {
    LifecycleError::Forbidden(format!(
        "only the requester, {}, can {verb} this request",
        request.requester_name
    ))
}
