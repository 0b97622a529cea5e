//! Background work, driven by the store and the clock rather than by polling sleeps.
//!
//! A decision that completes approval hands the request id straight to the worker, so the
//! apply starts as soon as the approval commits. Deadlines (expiry, approval windows, leases of
//! replicas that died, retry backoff) come from the store, and the worker sleeps on the clock
//! until the earliest one. Every action first claims a lease on its request in the database,
//! so with several replicas each request is applied once and undone once.

mod apply;
mod undo;

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;
use tokio::sync::mpsc;

use crate::clock::{Clock, Millis};
use crate::domain::State;
use crate::store::{AuditEvent, NewEvent, Store, StoreError, Tx, log_event};
use crate::targets::Target;

/// The broker's own name in the audit history.
pub const BROKER_ACTOR: &str = "breakglass-broker";

/// How long a claim on a request lasts before another replica may take the work over.
const LEASE_MS: Millis = 60_000;
/// The longest the worker sleeps without looking at the store, in case another replica made
/// work that this one has no signal for.
const IDLE_MS: Millis = 30_000;

/// Hands request ids to the worker.
#[derive(Clone)]
pub struct WorkQueue(mpsc::UnboundedSender<String>);

impl WorkQueue {
    pub fn push(&self, request_id: &str) {
        // A closed queue means the process is shutting down; the next start picks the work up.
        let _ = self.0.send(request_id.to_owned());
    }
}

pub struct Worker {
    store: Store,
    clock: Clock,
    targets: Arc<HashMap<String, Arc<Target>>>,
    replica: String,
}

pub fn queue() -> (WorkQueue, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (WorkQueue(tx), rx)
}

impl Worker {
    pub fn new(
        store: Store,
        clock: Clock,
        targets: Arc<HashMap<String, Arc<Target>>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            targets,
            replica: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// Runs until the queue closes: work pushed to it at once, deadlines when they come.
    pub async fn run(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<String>) {
        loop {
            self.clone().sweep().await;
            let now = self.clock.now();
            let next = match self.store.next_deadline().await {
                Ok(Some(at)) => at.clamp(now, now + IDLE_MS),
                Ok(None) => now + IDLE_MS,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read deadlines; trying again shortly");
                    now + 1_000
                }
            };
            tokio::select! {
                pushed = queue.recv() => match pushed {
                    Some(id) => { tokio::spawn(self.clone().process(id)); }
                    None => return,
                },
                () = self.clock.sleep_until(next) => {}
            }
        }
    }

    /// Starts everything that is due now.
    async fn sweep(self: Arc<Self>) {
        match self.store.due_work(self.clock.now(), 64).await {
            Ok(due) => {
                for (id, _) in due {
                    tokio::spawn(self.clone().process(id));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due work"),
        }
    }

    /// Does whatever the request's state calls for, if it is due.
    pub async fn process(self: Arc<Self>, id: String) {
        let result = match self.store.request(&id).await {
            Ok(Some(request)) => match request.state {
                State::Approved => self.apply(&request).await,
                State::Active => self.undo(&request).await,
                State::Pending if request.decide_by <= self.clock.now() => self.lapse(&id).await,
                _ => Ok(()),
            },
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(request_id = %id, error = %e, "work on request failed; it will be retried");
        }
    }

    fn target(&self, name: &str) -> Option<Arc<Target>> {
        self.targets.get(name).cloned()
    }

    /// A fresh owner token per attempt, so two tasks in one process never share a lease.
    fn owner(&self) -> String {
        format!("{}/{}", self.replica, uuid::Uuid::new_v4())
    }

    async fn claim(&self, id: &str, state: State, owner: &str) -> Result<bool, StoreError> {
        let now = self.clock.now();
        self.store
            .claim(id, state, owner, now, now + LEASE_MS)
            .await
    }

    /// Remembers a transient failure and schedules the next attempt with jittered backoff.
    async fn retry_later(
        &self,
        id: &str,
        owner: &str,
        attempts: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let delay = backoff(attempts);
        tracing::warn!(request_id = %id, error, retry_in_ms = delay, "target unavailable; will retry");
        self.store
            .record_retry(id, owner, error, self.clock.now() + delay)
            .await
    }

    async fn lapse(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        let Some(request) = Store::lock_request(&mut tx, id).await? else {
            return Ok(());
        };
        if request.state != State::Pending || request.decide_by > self.clock.now() {
            return Ok(());
        }
        Store::set_state(&mut tx, id, State::Lapsed, self.clock.now()).await?;
        let event = self
            .event(&mut tx, &request, "request.lapsed", serde_json::json!({}))
            .await?;
        commit(tx, vec![event]).await
    }

    async fn event(
        &self,
        tx: &mut Tx,
        request: &crate::store::Request,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<AuditEvent, StoreError> {
        Store::append_audit(
            tx,
            NewEvent {
                at: self.clock.now(),
                actor: BROKER_ACTOR,
                action,
                request_id: Some(&request.id),
                ticket: Some(&request.ticket),
                target: Some(&request.target),
                namespace: Some(&request.namespace),
                detail,
            },
        )
        .await
    }
}

/// Commits and then writes the events to the structured log: only what committed is logged.
pub async fn commit(tx: Tx, events: Vec<AuditEvent>) -> Result<(), StoreError> {
    tx.commit().await?;
    for event in &events {
        log_event(event);
    }
    Ok(())
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
