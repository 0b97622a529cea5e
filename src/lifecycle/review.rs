//! The post-incident review: after a breakglass ends, its requester says what broke, where the
//! postmortem is and whether the image has been attested since. On a target with
//! `require_review`, their next request there waits for it.

use serde_json::json;

use super::{Actor, Lifecycle, LifecycleError, RequestRef};
use crate::domain::AuditAction;
use crate::domain::Person;
use crate::domain::state::check_reviewable;
use crate::store::{Request, Store};

/// The shortest and longest review.
const MIN_REVIEW: usize = 10;
const MAX_REVIEW: usize = 4000;

impl Lifecycle {
    /// Records the requester's review of a breakglass that ended; written once.
    pub async fn review(
        &self,
        caller: &Person,
        id: &str,
        review: &str,
    ) -> Result<Request, LifecycleError> {
        let review = review.trim();
        let length = review.chars().count();
        if !(MIN_REVIEW..=MAX_REVIEW).contains(&length) {
            return Err(LifecycleError::Invalid(format!(
                "review must be {MIN_REVIEW} to {MAX_REVIEW} characters: what broke, a link to the postmortem, whether the image has been attested since"
            )));
        }
        let (mut change, request) = self.lock_visible(caller, id).await?;
        if request.requester_subject != caller.subject {
            return Err(LifecycleError::Forbidden(format!(
                "only the requester, {}, can review this breakglass",
                request.requester_name
            )));
        }
        check_reviewable(request.state).map_err(LifecycleError::Conflict)?;
        if request.review.is_some() {
            return Err(LifecycleError::Conflict(
                "this breakglass has been reviewed already; a review is written once".into(),
            ));
        }
        Store::set_review(change.tx(), id, review, self.clock.now()).await?;
        change
            .record(
                RequestRef::from(&request),
                Actor::Person(caller),
                AuditAction::Reviewed,
                json!({ "review": review }),
            )
            .await?;
        change.commit().await?;
        self.reload(id).await
    }

    /// On a target that requires reviews, refuses a new request while one of the filer's
    /// breakglasses there waits for its review, and says which.
    pub(super) async fn check_reviewed(
        &self,
        caller: &Person,
        target: &str,
    ) -> Result<(), LifecycleError> {
        let required = self
            .targets
            .get(target)
            .is_ok_and(|entry| entry.config.require_review);
        if !required {
            return Ok(());
        }
        match self.store.awaiting_review(&caller.subject, target).await? {
            None => Ok(()),
            Some(waiting) => Err(LifecycleError::Conflict(format!(
                "your breakglass request {waiting} (/requests/{waiting}) on {target} ended and waits for your review; target {target} takes no new request from you until it is written"
            ))),
        }
    }
}
