use serde::{Deserialize, Serialize};

/// Where a request stands in its lifecycle (see DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved,
    Active,
    Expired,
    Closed,
    Rejected,
    Cancelled,
    Lapsed,
    Failed,
    NeedsAttention,
    /// An extension that was approved in time: it moved the end of the breakglass it extends
    /// and ends there. It never holds or applies anything itself: the objects stay with the
    /// breakglass it extends, which stays `active` until its new end, so nothing is undone in
    /// between. (An extension not approved in time lapses like any request; one rejected or
    /// cancelled ends so too; the breakglass it extends then ends as planned.)
    Granted,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Pending,
        State::Approved,
        State::Active,
        State::Expired,
        State::Closed,
        State::Rejected,
        State::Cancelled,
        State::Lapsed,
        State::Failed,
        State::NeedsAttention,
        State::Granted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Active => "active",
            State::Expired => "expired",
            State::Closed => "closed",
            State::Rejected => "rejected",
            State::Cancelled => "cancelled",
            State::Lapsed => "lapsed",
            State::Failed => "failed",
            State::NeedsAttention => "needs_attention",
            State::Granted => "granted",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// No transition leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Expired
                | State::Closed
                | State::Rejected
                | State::Cancelled
                | State::Lapsed
                | State::Failed
                | State::Granted
        )
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an action is not allowed in the request's current state, worded for the person asking.
pub fn refuse(action: &str, state: State) -> String {
    format!("cannot {action} a request that is {state}")
}

/// Approvals and rejections are taken only while a request waits for them: a late approval
/// never revives a lapsed, rejected or cancelled request.
pub fn check_decidable(state: State, action: &str) -> Result<(), String> {
    match state {
        State::Pending => Ok(()),
        other => Err(refuse(action, other)),
    }
}

pub fn check_cancellable(state: State) -> Result<(), String> {
    match state {
        State::Pending => Ok(()),
        other => Err(refuse("cancel", other)),
    }
}

/// A breakglass can be ended while it runs, and again when its end did not finish.
pub fn check_closable(state: State) -> Result<(), String> {
    match state {
        State::Active | State::NeedsAttention => Ok(()),
        other => Err(refuse("close", other)),
    }
}

/// Only a breakglass that runs can be extended: one that waits has its own duration still ahead,
/// and one that ended has nothing left to extend.
pub fn check_extendable(state: State) -> Result<(), String> {
    match state {
        State::Active => Ok(()),
        other => Err(refuse("extend", other)),
    }
}

/// A review looks back at a breakglass that ran and ended; one that never ran (rejected,
/// lapsed, failed...) or still runs has nothing to review yet.
pub fn check_reviewable(state: State) -> Result<(), String> {
    match state {
        State::Expired | State::Closed => Ok(()),
        other => Err(refuse("review", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_name() {
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert_eq!(State::parse("bogus"), None);
    }

    #[test]
    fn only_pending_requests_take_decisions() {
        assert!(check_decidable(State::Pending, "approve").is_ok());
        for state in State::ALL.into_iter().filter(|s| *s != State::Pending) {
            let err = check_decidable(state, "approve").expect_err("refused");
            assert!(err.contains(state.as_str()), "{err}");
        }
    }

    #[test]
    fn the_final_states_are_the_ones_nothing_leaves() {
        let finals: Vec<State> = State::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            vec![
                State::Expired,
                State::Closed,
                State::Rejected,
                State::Cancelled,
                State::Lapsed,
                State::Failed,
                State::Granted,
            ]
        );
    }

    #[test]
    fn only_a_breakglass_that_ran_and_ended_can_be_reviewed() {
        assert!(check_reviewable(State::Expired).is_ok());
        assert!(check_reviewable(State::Closed).is_ok());
        for state in State::ALL
            .into_iter()
            .filter(|s| !matches!(s, State::Expired | State::Closed))
        {
            assert_eq!(
                check_reviewable(state),
                Err(format!("cannot review a request that is {state}"))
            );
        }
    }

    #[test]
    fn only_an_active_breakglass_can_be_extended() {
        assert!(check_extendable(State::Active).is_ok());
        for state in State::ALL.into_iter().filter(|s| *s != State::Active) {
            assert_eq!(
                check_extendable(state),
                Err(format!("cannot extend a request that is {state}"))
            );
        }
    }

    #[test]
    fn only_pending_requests_can_be_cancelled() {
        assert!(check_cancellable(State::Pending).is_ok());
        for state in State::ALL.into_iter().filter(|s| *s != State::Pending) {
            let err = check_cancellable(state).expect_err("refused");
            assert_eq!(err, format!("cannot cancel a request that is {state}"));
        }
    }

    #[test]
    fn only_running_or_unfinished_breakglasses_can_be_closed() {
        assert!(check_closable(State::Active).is_ok());
        assert!(check_closable(State::NeedsAttention).is_ok());
        assert!(check_closable(State::Pending).is_err());
        assert!(check_closable(State::Expired).is_err());
    }
}
