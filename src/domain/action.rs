//! What an audit event records: one closed list of actions with stable names, so a name is
//! written in one place and a typo cannot become a new kind of event.

use std::fmt;

use serde::{Serialize, Serializer};

use super::State;

/// An audit action. The string names are part of the history (hashed into the chain, searched
/// by auditors): never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    Created,
    Approved,
    Rejected,
    FullyApproved,
    Cancelled,
    CloseRequested,
    Lapsed,
    Applying,
    Applied,
    Failed,
    NeedsAttention,
    Closed,
    Expired,
    /// A notification endpoint could not be reached for a day, or refused for good.
    NotificationGaveUp,
    /// A notification endpoint answered 410 Gone and is disabled until its configuration
    /// changes (the endpoint and the status in the detail).
    NotificationDisabled,
    /// On a breakglass: its requester filed an extension (named in the detail).
    ExtensionRequested,
    /// On a breakglass: an approved extension moved its end (both named in the detail).
    Extended,
    /// On an extension: approved in time, it moved the end of the breakglass it extends.
    ExtensionGranted,
    /// The requester wrote the post-incident review of a breakglass that ended.
    Reviewed,
    /// A breakglass on a target that the broker did not make (the detector's finding).
    Unbrokered,
    /// The detector removed an unbrokered breakglass with its controller chain.
    UnbrokeredRemoved,
    /// A person acknowledged a finding of the detector, with a comment.
    AlertAcknowledged,
}

impl AuditAction {
    pub const ALL: [AuditAction; 22] = [
        AuditAction::Created,
        AuditAction::Approved,
        AuditAction::Rejected,
        AuditAction::FullyApproved,
        AuditAction::Cancelled,
        AuditAction::CloseRequested,
        AuditAction::Lapsed,
        AuditAction::Applying,
        AuditAction::Applied,
        AuditAction::Failed,
        AuditAction::NeedsAttention,
        AuditAction::Closed,
        AuditAction::Expired,
        AuditAction::NotificationGaveUp,
        AuditAction::ExtensionRequested,
        AuditAction::Extended,
        AuditAction::ExtensionGranted,
        AuditAction::Reviewed,
        AuditAction::Unbrokered,
        AuditAction::UnbrokeredRemoved,
        AuditAction::AlertAcknowledged,
        AuditAction::NotificationDisabled,
    ];

    /// The stable name stored in the history.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::Created => "request.created",
            AuditAction::Approved => "request.approved",
            AuditAction::Rejected => "request.rejected",
            AuditAction::FullyApproved => "request.fully_approved",
            AuditAction::Cancelled => "request.cancelled",
            AuditAction::CloseRequested => "request.close_requested",
            AuditAction::Lapsed => "request.lapsed",
            AuditAction::Applying => "request.applying",
            AuditAction::Applied => "request.applied",
            AuditAction::Failed => "request.failed",
            AuditAction::NeedsAttention => "request.needs_attention",
            AuditAction::Closed => "request.closed",
            AuditAction::Expired => "request.expired",
            AuditAction::NotificationGaveUp => "notification.gave_up",
            AuditAction::ExtensionRequested => "request.extension_requested",
            AuditAction::Extended => "request.extended",
            AuditAction::ExtensionGranted => "request.extension_granted",
            AuditAction::Reviewed => "request.reviewed",
            AuditAction::Unbrokered => "breakglass.unbrokered",
            AuditAction::UnbrokeredRemoved => "breakglass.removed",
            AuditAction::AlertAcknowledged => "alert.acknowledged",
            AuditAction::NotificationDisabled => "notification.disabled",
        }
    }

    /// The state a request is in once this action is recorded, for the actions that move it;
    /// None for those that leave its state as it was (an approval short of the rule, the
    /// record before an apply, a request to close).
    pub const fn resulting_state(self) -> Option<State> {
        match self {
            AuditAction::Created => Some(State::Pending),
            AuditAction::Rejected => Some(State::Rejected),
            AuditAction::FullyApproved => Some(State::Approved),
            AuditAction::Cancelled => Some(State::Cancelled),
            AuditAction::Lapsed => Some(State::Lapsed),
            AuditAction::Applied => Some(State::Active),
            AuditAction::Failed => Some(State::Failed),
            AuditAction::NeedsAttention => Some(State::NeedsAttention),
            AuditAction::Closed => Some(State::Closed),
            AuditAction::Expired => Some(State::Expired),
            AuditAction::ExtensionGranted => Some(State::Granted),
            AuditAction::Approved
            | AuditAction::Applying
            | AuditAction::CloseRequested
            | AuditAction::NotificationGaveUp
            | AuditAction::NotificationDisabled
            | AuditAction::ExtensionRequested
            | AuditAction::Extended
            | AuditAction::Reviewed
            | AuditAction::Unbrokered
            | AuditAction::UnbrokeredRemoved
            | AuditAction::AlertAcknowledged => None,
        }
    }

    /// The action with this stored name, if it is one.
    pub fn parse(name: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl Serialize for AuditAction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_from_its_name_and_serializes_as_it() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
            assert_eq!(
                serde_json::to_value(action).ok(),
                Some(serde_json::Value::String(action.as_str().to_owned()))
            );
        }
        assert_eq!(AuditAction::parse("request.unknown"), None);
    }

    #[test]
    fn no_two_actions_share_a_name() {
        let mut names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AuditAction::ALL.len());
    }
}
