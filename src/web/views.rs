//! What the JSON API shows of requests and decisions, shared by the request and audit routes.

use serde::Serialize;
use serde_json::Value;

use crate::clock::rfc3339;
use crate::domain::{ApprovalTally, State as RequestState};
use crate::store::{Approval, Request};

/// A request as the API shows it.
#[derive(Serialize)]
pub struct RequestView {
    pub id: String,
    pub state: RequestState,
    pub digest: String,
    pub target: String,
    pub namespace: String,
    pub ticket: String,
    pub justification: String,
    /// The requester's display name; the person is `requester_issuer` + `requester_subject`.
    pub requester: String,
    pub requester_issuer: String,
    pub requester_subject: String,
    pub duration_minutes: i64,
    pub created_at: String,
    pub decide_by: String,
    pub applied_at: Option<String>,
    pub expires_at: Option<String>,
    pub ended_at: Option<String>,
    pub last_error: Option<String>,
    pub objects: Value,
    /// For an extension: the request whose breakglass it extends; null for the others.
    pub extends: Option<String>,
    /// The requester's post-incident review, once written.
    pub review: Option<String>,
    pub reviewed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Vec<ApprovalView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalTally>,
    /// Who was notified and whether it reached them (on a single request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<super::notices::NoticeView>>,
}

#[derive(Serialize)]
pub struct ApprovalView {
    /// The approver's display name; the person is `approver_issuer` + `approver_subject`.
    pub approver: String,
    pub approver_issuer: String,
    pub approver_subject: String,
    pub decision: String,
    pub comment: String,
    pub digest: String,
    pub at: String,
}

impl From<Approval> for ApprovalView {
    fn from(a: Approval) -> Self {
        ApprovalView {
            approver: a.approver_name,
            approver_issuer: a.approver_issuer,
            approver_subject: a.approver_subject,
            decision: a.decision,
            comment: a.comment,
            digest: a.digest,
            at: rfc3339(a.at),
        }
    }
}

impl RequestView {
    pub fn new(r: Request) -> Self {
        let objects = serde_json::from_str(&r.objects).unwrap_or(Value::Null);
        RequestView {
            id: r.id,
            state: r.state,
            digest: r.digest,
            target: r.target,
            namespace: r.namespace,
            ticket: r.ticket,
            justification: r.justification,
            requester: r.requester_name,
            requester_issuer: r.requester_issuer,
            requester_subject: r.requester_subject,
            duration_minutes: r.duration_seconds / 60,
            created_at: rfc3339(r.created_at),
            decide_by: rfc3339(r.decide_by),
            applied_at: r.applied_at.map(rfc3339),
            // Planned expiry is only a fact once the request is live.
            expires_at: r.expires_at.filter(|_| r.applied_at.is_some()).map(rfc3339),
            ended_at: r.ended_at.map(rfc3339),
            last_error: r.last_error,
            objects,
            extends: r.extends,
            review: r.review,
            reviewed_at: r.reviewed_at.map(rfc3339),
            approvals: None,
            approval: None,
            notifications: None,
        }
    }
}
