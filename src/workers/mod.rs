//! Background work, driven by the store and the clock rather than by polling sleeps.
//!
//! A decision that completes approval hands the request id straight to the worker, so the
//! apply starts as soon as the approval commits. Deadlines (expiry, approval windows, leases of
//! replicas that died, retry backoff) come from the store, and the worker sleeps on the clock
//! until the earliest one, or until one of its own tasks finishes (which may have moved a
//! deadline). Every action first claims a lease on its request in the database
//! ([`lease::Lease`]), so with several replicas each request is applied once and undone once.

mod apply;
pub mod audit_logs;
pub mod detect;
mod lease;
mod notify;
mod tasks;
mod undo;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Semaphore, mpsc};

use tasks::Tasks;

use crate::clock::{Clock, Millis};
use crate::domain::{AuditAction, State};
use crate::lifecycle::{Actor, Lifecycle, RequestRef, Work};
use crate::store::{Store, StoreError};
use crate::targets::Target;
use lease::Lease;
pub use notify::Notifier;

pub use crate::lifecycle::BROKER_ACTOR;

/// The longest the worker sleeps without looking at the store, in case another replica made
/// work that this one has no signal for (an approval on a replica that died before applying).
const IDLE_MS: Millis = 15_000;
/// How soon the worker looks again when work is due but all of it is already in this
/// process's hands, and how soon it retries after the database failed it. Real time, not the
/// clock: neither depends on the time of day, and a test's manual clock must not stall them.
const RECHECK: Duration = Duration::from_millis(250);
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How many due requests one sweep starts.
const SWEEP_LIMIT: i64 = 64;

pub struct Worker {
    lifecycle: Lifecycle,
    store: Store,
    clock: Clock,
    replica: String,
    /// A task per request this process works on, so a sweep does not start a second one;
    /// one ending wakes the loop: the deadlines it leaves may be earlier than the one the loop
    /// sleeps towards.
    tasks: Arc<Tasks>,
    /// Turns at applying (`applies_at_once`): a burst of approvals is applied a few at a time,
    /// and undoes never wait behind it.
    applies: Arc<Semaphore>,
}

impl Worker {
    pub fn new(lifecycle: Lifecycle, applies_at_once: u32) -> Arc<Self> {
        let applies_at_once = usize::try_from(applies_at_once).unwrap_or(usize::MAX);
        Arc::new(Self {
            applies: Arc::new(Semaphore::new(
                applies_at_once.clamp(1, Semaphore::MAX_PERMITS),
            )),
            store: lifecycle.store.clone(),
            clock: lifecycle.clock.clone(),
            lifecycle,
            replica: uuid::Uuid::new_v4().to_string(),
            tasks: Arc::default(),
        })
    }

    /// Runs until the queue closes: work pushed to it at once, deadlines when they come.
    ///
    /// The first sweep finishes what an earlier process left in flight. After that the store
    /// is swept only when a deadline comes: a pushed request starts at once without a look at
    /// the store, and a task that ends only makes the loop read the next deadline again (it
    /// may have left an earlier one). So a burst of approvals costs no query per approval
    /// here, and a replica never sweeps up the approvals another replica is about to apply.
    /// A database that cannot be reached makes the loop wait and try again; it never ends it.
    pub async fn run(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Work>) {
        let mut sweep = true;
        loop {
            let next = self.look(sweep).await;
            let pause = self.pause(next);
            tokio::pin!(pause);
            sweep = loop {
                tokio::select! {
                    pushed = queue.recv() => match pushed {
                        Some(work) => self.start(work),
                        None => return,
                    },
                    () = &mut pause => break true,
                    () = self.tasks.finished() => break false,
                }
            };
        }
    }

    /// Starts what is due (when `sweep`), then reads when work is next due.
    async fn look(self: &Arc<Self>, sweep: bool) -> Result<Option<Millis>, StoreError> {
        if sweep {
            self.sweep().await?;
        }
        self.store.next_deadline().await
    }

    /// Waits until the next deadline, never longer than [`IDLE_MS`].
    async fn pause(&self, next: Result<Option<Millis>, StoreError>) {
        let now = self.clock.now();
        match next {
            Ok(Some(at)) if at <= now => tokio::time::sleep(RECHECK).await,
            Ok(Some(at)) => self.clock.sleep_until(at.min(now + IDLE_MS)).await,
            Ok(None) => self.clock.sleep_until(now + IDLE_MS).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due work; trying again shortly");
                tokio::time::sleep(STORE_RETRY).await;
            }
        }
    }

    /// Starts everything that is due now.
    async fn sweep(self: &Arc<Self>) -> Result<(), StoreError> {
        for (id, _) in self.store.due_work(self.clock.now(), SWEEP_LIMIT).await? {
            self.start(Work::Look(id));
        }
        Ok(())
    }

    /// Starts a task for the request unless one of this process already works on it.
    fn start(self: &Arc<Self>, work: Work) {
        let worker = self.clone();
        self.tasks.start(work.request_id().to_owned(), async move {
            match work {
                Work::Apply(id) => worker.apply_now(&id).await,
                Work::Look(id) => worker.process(&id).await,
            }
        });
    }

    /// Applies a request approved just now.
    async fn apply_now(&self, id: &str) {
        if let Err(e) = self.apply_in_turn(id).await {
            tracing::warn!(request_id = %id, error = %e, "work on request failed; it will be retried");
        }
    }

    /// Does whatever the request's state calls for, if it is due.
    pub async fn process(&self, id: &str) {
        let result = match self.store.request(id).await {
            Ok(Some(request)) => match request.state {
                State::Approved => self.apply_in_turn(id).await,
                State::Active => self.undo(&request).await,
                State::NeedsAttention if request.end_requested.is_some() => {
                    self.undo(&request).await
                }
                State::Pending if request.decide_by <= self.clock.now() => self.lapse(id).await,
                _ => Ok(()),
            },
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(request_id = %id, error = %e, "work on request failed; it will be retried");
        }
    }

    /// Applies once the decisions being answered here are answered (a second at most) and a
    /// turn is free; the request may have moved on meanwhile, which the apply finds when it
    /// claims its lease.
    async fn apply_in_turn(&self, id: &str) -> Result<(), StoreError> {
        self.lifecycle.answering.wait_quiet().await;
        let Ok(_turn) = self.applies.acquire().await else {
            return Ok(());
        };
        self.apply(id).await
    }

    /// The target's client. A target this replica does not know may be known to another (a
    /// rolling update that adds one): the caller retries rather than fail the request.
    fn target(&self, name: &str) -> Result<Arc<dyn Target>, String> {
        match self.lifecycle.targets.get(name) {
            Ok(entry) => Ok(entry.client.clone()),
            Err(unknown) => Err(format!("{unknown} on this replica")),
        }
    }

    /// Claims the request's lease under a fresh owner token, so two tasks never share one;
    /// returns it with the request as read under it.
    async fn claim(
        &self,
        id: &str,
        state: State,
    ) -> Result<Option<(Lease, crate::store::Request)>, StoreError> {
        let owner = format!("{}/{}", self.replica, uuid::Uuid::new_v4());
        Lease::claim(&self.store, &self.clock, id, state, owner).await
    }

    /// Remembers a transient failure and schedules the next attempt with jittered backoff;
    /// recording it gives the lease up.
    async fn retry_later(
        &self,
        lease: Lease,
        attempts: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let delay = backoff(attempts);
        let id = lease.id().to_owned();
        tracing::warn!(request_id = %id, error, retry_in_ms = delay, "target unavailable; will retry");
        let owner = lease.owner().to_owned();
        drop(lease);
        self.store
            .record_retry(&id, &owner, error, self.clock.now() + delay)
            .await
    }

    async fn lapse(&self, id: &str) -> Result<(), StoreError> {
        let mut change = self.lifecycle.begin().await?;
        let Some(request) = Store::lock_request(change.tx(), id).await? else {
            return Ok(());
        };
        if request.state != State::Pending || request.decide_by > self.clock.now() {
            return Ok(());
        }
        change
            .transition(
                RequestRef::from(&request),
                Actor::Broker,
                AuditAction::Lapsed,
                serde_json::json!({}),
            )
            .await?;
        change.commit().await
    }
}

/// 0.5 s doubling to a minute, each delay jittered by ±50 % so replicas do not retry in step.
fn backoff(attempts: i64) -> Millis {
    let base: Millis = 500 << attempts.clamp(0, 7);
    let base = base.min(60_000);
    let jitter = rand::thread_rng().gen_range(-(base / 2)..=(base / 2));
    (base + jitter).max(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempts in 0..20 {
            let delay = backoff(attempts);
            let base = (500_i64 << attempts.clamp(0, 7)).min(60_000);
            assert!(
                delay >= base / 2 && delay <= base + base / 2,
                "{attempts}: {delay}"
            );
        }
    }
}
