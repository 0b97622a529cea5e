//! What the cluster says of a request's objects: would it admit each without breakglass (a
//! server-side dry run), and what runs there now. Asking is a call to the production API
//! server with the broker's rights, so it is not made at every page view: it is made when the
//! request page is first opened and again when someone asks (at most once per
//! [`LOOK_AGAIN_AFTER`] per request, across replicas), stored, and shown with its age. Requests
//! filed and decided through the API alone never cost the cluster a look.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::view;
use super::{CsrfForm, PageError, see_other};
use crate::clock::Millis;
use crate::domain::State as RequestState;
use crate::domain::stamp::stamped;
use crate::lifecycle::stamp_of;
use crate::store::{Named, Request, StoreError};
use crate::targets::{ObjectRef, TargetError};
use crate::web::AppState;
use crate::web::error::AppError;

/// How long each question to the cluster may take before the look says it did not answer.
const CLUSTER_ANSWER: Duration = Duration::from_secs(2);
/// Looks at one request's objects are at least this far apart, however many people ask.
pub const LOOK_AGAIN_AFTER: Duration = Duration::from_secs(10);

/// What one object's look found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Looked {
    /// Why the cluster would not admit it without breakglass, or why it could not be asked.
    pub admission: Option<String>,
    pub admitted: bool,
    /// What runs now, as YAML with inline data masked (see [`view::masked`]); None if nothing.
    pub live: Option<String>,
}

/// A stored look: when it was taken and what it found, object by object.
pub struct Look {
    pub taken_at: Millis,
    pub objects: Vec<Looked>,
}

/// Whether people still decide on this request, which is all a look is for.
pub fn undecided(request: &Request) -> bool {
    matches!(
        request.state,
        RequestState::Pending | RequestState::Approved
    )
}

/// Looks at the cluster now and stores what it says, unless a look started within
/// [`LOOK_AGAIN_AFTER`] (then it leaves that one). True when it looked.
pub async fn take(state: &AppState, request: &Request) -> Result<bool, StoreError> {
    let now = state.clock.now();
    let again = i64::try_from(LOOK_AGAIN_AFTER.as_millis()).unwrap_or(i64::MAX);
    if !undecided(request)
        || !state
            .store
            .claim_look(&request.id, now, now - again)
            .await?
    {
        return Ok(false);
    }
    let Ok(target) = state.lifecycle.targets.get(&request.target) else {
        return Ok(false);
    };
    let client = target.client.clone();
    let approvals = state.store.approvals(&request.id).await?;
    let named = Named::of(request, &approvals);
    let stamp = stamp_of(request, &named, "(set when applied)");
    let mut looked = Vec::new();
    for object in request.objects().unwrap_or_default() {
        let reference = ObjectRef::from(&object);
        let applied = stamped(&object, &stamp);
        let mut found = Looked::default();
        // A stalled cluster must not stall the look: each question has its own deadline.
        match tokio::time::timeout(CLUSTER_ANSWER, client.dry_run(&reference, &object.body)).await {
            Ok(Ok(())) => found.admitted = true,
            Ok(Err(TargetError::Refused(message))) => found.admission = Some(message),
            Ok(Err(other)) => found.admission = Some(format!("could not ask the cluster: {other}")),
            Err(_) => {
                found.admission = Some(format!(
                    "could not ask the cluster: no answer within {} s",
                    CLUSTER_ANSWER.as_secs()
                ))
            }
        }
        if let Ok(Ok(Some(live))) =
            tokio::time::timeout(CLUSTER_ANSWER, client.get(&reference)).await
        {
            found.live = Some(view::masked(&view::comparable(live), &applied).yaml());
        }
        looked.push(found);
    }
    // Strings and booleans always serialize.
    let objects = serde_json::to_string(&looked).unwrap_or_else(|_| "[]".into());
    state
        .store
        .save_look(&request.id, state.clock.now(), &objects)
        .await?;
    Ok(true)
}

/// The first look at a request's objects, taken now: for a page opened while nobody has
/// looked yet (and only while the request awaits decisions).
pub async fn first(state: &AppState, request: &Request) -> Result<Option<Look>, StoreError> {
    take(state, request).await?;
    Ok(state.store.look(&request.id).await?.as_ref().map(parse))
}

/// A look as the store keeps it: when it was taken, and what it found as JSON.
pub fn parse((taken_at, objects): &(Millis, String)) -> Look {
    Look {
        taken_at: *taken_at,
        objects: serde_json::from_str(objects).unwrap_or_default(),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /requests/{id}/look`: look at the cluster again (anyone who may see the request).
pub async fn again(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    let request = state
        .lifecycle
        .load_visible(&f.viewer.person, &id)
        .await
        .map_err(AppError::from)?;
    if !undecided(&request) {
        return Err(AppError::Conflict(format!(
            "this request is {}: nobody decides on it any more, so there is nothing to look at",
            request.state
        ))
        .into());
    }
    take(&state, &request).await?;
    Ok(see_other(&format!("/requests/{id}")))
}

/// `3 min ago`, `just now`.
pub fn age(now: Millis, at: Millis) -> String {
    let seconds = (now - at).max(0) / 1000;
    match seconds {
        0..=9 => "just now".to_owned(),
        10..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        _ => format!("at {}", view::when(at)),
    }
}
