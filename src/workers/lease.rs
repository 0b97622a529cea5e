//! Leases: the right to work on one request, held in the request's row.
//!
//! A lease is short ([`LEASE_MS`]) so that the work of a replica that dies is taken over
//! quickly, and a heartbeat extends it while the work runs, so that a slow cluster never makes
//! two replicas work on one request at once. A worker calls the cluster only while
//! [`Lease::held`] says so: once renewals fail for long enough that another replica may have
//! taken over, it stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::clock::{Clock, Millis};
use crate::domain::State;
use crate::lifecycle::{Change, Lifecycle};
use crate::store::{Request, Store, StoreError};

/// How long a claim lasts without renewal before another replica may take the work over.
pub(super) const LEASE_MS: Millis = 15_000;
/// How often the heartbeat renews: three chances before the lease runs out.
const RENEW_MS: Millis = LEASE_MS / 3;
/// The holder stops calling the cluster this long before its lease runs out, leaving room for
/// the call in flight and for clocks of replicas that disagree a little.
const MARGIN_MS: Millis = 3_000;

pub(super) struct Lease {
    store: Store,
    clock: Clock,
    id: String,
    owner: String,
    /// The last expiry the database accepted from this holder; 0 once the lease is known lost.
    until: Arc<AtomicI64>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease on a request in `state` unless another worker holds it; returns it
    /// with the request as read under the lease: what an earlier holder did is what this
    /// work continues from.
    pub(super) async fn claim(
        store: &Store,
        clock: &Clock,
        id: &str,
        state: State,
        owner: String,
    ) -> Result<Option<(Lease, Request)>, StoreError> {
        let now = clock.now();
        let until = now + LEASE_MS;
        let Some(request) = store.claim(id, state, &owner, now, until).await? else {
            return Ok(None);
        };
        let until = Arc::new(AtomicI64::new(until));
        let heartbeat = tokio::spawn(heartbeat(
            store.clone(),
            clock.clone(),
            id.to_owned(),
            state,
            owner.clone(),
            until.clone(),
        ));
        let lease = Lease {
            store: store.clone(),
            clock: clock.clone(),
            id: id.to_owned(),
            owner,
            until,
            heartbeat,
        };
        Ok(Some((lease, request)))
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether the holder may still act: the lease is known to run for a while yet.
    pub(super) fn held(&self) -> bool {
        self.clock.now() + MARGIN_MS < self.until.load(Ordering::SeqCst)
    }

    /// Opens the change that records this work's outcome, with the request's row locked, if
    /// the request is still in `state` and this lease still holds it; None when another
    /// worker took it over or the request moved on, and then nothing is to be recorded.
    pub(super) async fn lock(
        &self,
        lifecycle: &Lifecycle,
        state: State,
    ) -> Result<Option<(Change, Request)>, StoreError> {
        let mut change = lifecycle.begin().await?;
        let Some(locked) = Store::lock_request(change.tx(), &self.id).await? else {
            return Ok(None);
        };
        if locked.state != state || locked.lease_owner.as_deref() != Some(self.owner()) {
            return Ok(None);
        }
        Ok(Some((change, locked)))
    }

    /// Gives the lease up for other workers. Needed only when the work stops without a state
    /// change or a recorded retry, which release it themselves.
    pub(super) async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.store.release(&self.id, &self.owner).await {
            tracing::warn!(request_id = %self.id, error = %e, "cannot release lease; it expires on its own");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn heartbeat(
    store: Store,
    clock: Clock,
    id: String,
    state: State,
    owner: String,
    until: Arc<AtomicI64>,
) {
    loop {
        clock.sleep_until(clock.now() + RENEW_MS).await;
        let next = clock.now() + LEASE_MS;
        match store.renew(&id, state, &owner, next).await {
            Ok(true) => until.store(next, Ordering::SeqCst),
            Ok(false) => {
                until.store(0, Ordering::SeqCst);
                return;
            }
            // The lease runs out on its own if this keeps failing; `held` then says so.
            Err(e) => tracing::warn!(request_id = %id, error = %e, "cannot renew lease"),
        }
    }
}
