//! Who may do what to a request: one pure answer each, used alike by the pages, the API and
//! the workers, so that a button is shown exactly when the action behind it is allowed.

use serde::Deserialize;

use super::approval::ApprovalRule;
use super::{Person, State};

/// Roles that do not depend on a target: who may file requests and who audits.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    #[serde(default)]
    pub requesters: Vec<String>,
    #[serde(default)]
    pub auditors: Vec<String>,
}

impl Roles {
    pub fn may_file(&self, person: &Person) -> bool {
        person.in_any(&self.requesters)
    }

    pub fn audits(&self, person: &Person) -> bool {
        person.in_any(&self.auditors)
    }
}

/// What the rules need to know of one request.
#[derive(Clone, Copy, Debug)]
pub struct RequestAccess<'a> {
    pub requester_subject: &'a str,
    pub state: State,
    /// When the approval window closes, in milliseconds since the epoch.
    pub decide_by: i64,
    /// The approval rules of the request's target; `None` when that target is not configured
    /// (then nobody counts as its approver).
    pub rules: Option<&'a [ApprovalRule]>,
}

impl RequestAccess<'_> {
    fn is_requester(&self, person: &Person) -> bool {
        self.requester_subject == person.subject
    }
}

/// May this person approve or reject the request at all: in one of the target's approver
/// groups, and not the person who filed it.
pub fn may_decide(request: &RequestAccess<'_>, person: &Person) -> bool {
    request
        .rules
        .is_some_and(|rules| super::approval::may_decide(rules, request.requester_subject, person))
}

/// May this person see the request: its requester, anyone who may decide on it, auditors.
pub fn may_see(roles: &Roles, request: &RequestAccess<'_>, person: &Person) -> bool {
    request.is_requester(person) || roles.audits(person) || may_decide(request, person)
}

/// Is a decision by this person wanted now: the request waits, its window is open, the person
/// may decide and has not yet.
pub fn awaits_decision_from(
    request: &RequestAccess<'_>,
    person: &Person,
    already_decided: bool,
    now: i64,
) -> bool {
    request.state == State::Pending
        && request.decide_by > now
        && !already_decided
        && may_decide(request, person)
}

/// Only the requester withdraws their request.
pub fn may_cancel(request: &RequestAccess<'_>, person: &Person) -> bool {
    request.is_requester(person)
}

/// The requester ends their breakglass early; any approver of the target may end it too, so
/// that a breakglass the broker could not end (needs attention) is never a dead end.
pub fn may_close(request: &RequestAccess<'_>, person: &Person) -> bool {
    request.is_requester(person) || may_decide(request, person)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(subject: &str, groups: &[&str]) -> Person {
        Person {
            issuer: "https://issuer.example".into(),
            subject: subject.into(),
            name: subject.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn rules() -> Vec<ApprovalRule> {
        vec![ApprovalRule {
            group: "sre".into(),
            count: 1,
        }]
    }

    fn request(rules: Option<&[ApprovalRule]>) -> RequestAccess<'_> {
        RequestAccess {
            requester_subject: "alice",
            state: State::Pending,
            decide_by: 1_000,
            rules,
        }
    }

    fn roles() -> Roles {
        Roles {
            requesters: vec!["oncall".into()],
            auditors: vec!["audit".into()],
        }
    }

    #[test]
    fn the_requester_an_approver_and_an_auditor_see_a_request_and_nobody_else_does() {
        let rules = rules();
        let r = request(Some(&rules));
        assert!(may_see(&roles(), &r, &person("alice", &[])));
        assert!(may_see(&roles(), &r, &person("bob", &["sre"])));
        assert!(may_see(&roles(), &r, &person("dave", &["audit"])));
        assert!(!may_see(&roles(), &r, &person("mallory", &["oncall"])));
    }

    #[test]
    fn a_requester_in_the_approver_group_still_cannot_decide_on_their_own_request() {
        let rules = rules();
        let r = request(Some(&rules));
        assert!(!may_decide(&r, &person("alice", &["sre"])));
        assert!(may_decide(&r, &person("bob", &["sre"])));
    }

    #[test]
    fn nobody_decides_on_a_request_whose_target_is_not_configured() {
        let r = request(None);
        assert!(!may_decide(&r, &person("bob", &["sre"])));
        assert!(may_see(&roles(), &r, &person("alice", &[])));
    }

    #[test]
    fn a_decision_is_awaited_only_while_pending_in_the_window_and_not_yet_given() {
        let rules = rules();
        let bob = person("bob", &["sre"]);
        let r = request(Some(&rules));
        assert!(awaits_decision_from(&r, &bob, false, 999));
        assert!(!awaits_decision_from(&r, &bob, true, 999));
        assert!(!awaits_decision_from(&r, &bob, false, 1_000));
        let active = RequestAccess {
            state: State::Active,
            ..r
        };
        assert!(!awaits_decision_from(&active, &bob, false, 999));
    }

    #[test]
    fn only_the_requester_cancels_and_the_requester_or_an_approver_closes() {
        let rules = rules();
        let r = request(Some(&rules));
        assert!(may_cancel(&r, &person("alice", &[])));
        assert!(!may_cancel(&r, &person("bob", &["sre"])));
        assert!(may_close(&r, &person("alice", &[])));
        assert!(may_close(&r, &person("bob", &["sre"])));
        assert!(!may_close(&r, &person("dave", &["audit"])));
        assert!(!may_close(&r, &person("mallory", &["oncall"])));
    }

    #[test]
    fn roles_come_from_groups() {
        assert!(roles().may_file(&person("alice", &["oncall"])));
        assert!(!roles().may_file(&person("bob", &["sre"])));
        assert!(roles().audits(&person("dave", &["audit"])));
        assert!(!roles().audits(&person("alice", &["oncall"])));
    }
}
