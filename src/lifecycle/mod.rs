//! The request lifecycle: every transition, by a person (file, approve, reject, cancel, close)
//! or by the machine (apply, undo, lapse), goes through here.
//!
//! A transition is a [`Change`]: one transaction that holds the state change and its audit
//! event, committed by [`Change::commit`], which then logs the events and publishes a typed
//! [`LifecycleEvent`] to whoever subscribed (notifications, metrics, the detector), so that
//! nothing is announced that did not commit. People's transitions live in [`file`] and
//! [`decide`]; the machine's are driven by [`crate::workers`] through the same [`Change`].
//! This module knows nothing of HTTP: its [`LifecycleError`] is mapped to a status at the web
//! edge.

mod announce;
mod answering;
mod decide;
mod extend;
mod file;
mod images;
mod read;
mod review;
mod work;

use std::sync::Arc;

use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde_json::Value;
use tokio::sync::broadcast;

pub use announce::Announcer;
pub use decide::Decision;
pub use extend::ExtendForm;
pub use file::{Checked, RequestForm};
pub use images::{Workload, WorkloadRef};
pub use read::{RequestHistory, TicketHistory};
pub use work::{Work, WorkQueue, queue};

use crate::clock::{Clock, Millis};
use crate::config::RateLimits;
use crate::domain::access::{self, RequestAccess};
use crate::domain::policy::Finding;
use crate::domain::stamp::Stamp;
use crate::domain::{AuditAction, Person, Roles, State};
use crate::store::{ChainingFailure, Named, NewEvent, Request, Store, StoreError, Tx, Visibility};
use crate::targets::Registry;

/// The broker's own name in the audit history.
pub const BROKER_ACTOR: &str = crate::domain::person::BROKER_NAME;

/// How many published events a slow subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 1024;

/// Why a transition did not happen, in words for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The request breaks its target's policy; every finding is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused(Vec<Finding>),
    #[error("{0}")]
    TooLarge(String),
    /// A target could not be read just now; nothing changed, and asking again may work.
    #[error("{0}")]
    Unavailable(String),
    /// This person did this too often just now; they may again after `retry_after_seconds`.
    #[error("{what}: try again in {retry_after_seconds} s")]
    TooMany {
        what: String,
        retry_after_seconds: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Who made a transition.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    Person(&'a Person),
    Broker,
}

impl Actor<'_> {
    pub fn name(&self) -> &str {
        match self {
            Actor::Person(person) => &person.name,
            Actor::Broker => BROKER_ACTOR,
        }
    }

    /// Who acted, as (issuer, subject); None for the broker.
    pub fn person(&self) -> Option<(&str, &str)> {
        match self {
            Actor::Person(person) => Some((&person.issuer, &person.subject)),
            Actor::Broker => None,
        }
    }
}

/// What happened to a request, published once it committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub request_id: String,
    pub ticket: String,
    pub target: String,
    pub namespace: String,
    pub action: AuditAction,
    /// The state the request moved to, for transitions that move it.
    pub state: Option<State>,
    pub actor: String,
    pub at: Millis,
}

/// The request fields every audit event about it carries.
#[derive(Clone, Copy, Debug)]
pub struct RequestRef<'a> {
    pub id: &'a str,
    pub ticket: &'a str,
    pub target: &'a str,
    pub namespace: &'a str,
}

impl<'a> From<&'a Request> for RequestRef<'a> {
    fn from(r: &'a Request) -> Self {
        RequestRef {
            id: &r.id,
            ticket: &r.ticket,
            target: &r.target,
            namespace: &r.namespace,
        }
    }
}

/// The lifecycle's shared parts: the store, the clock, the targets, the roles, the queue of
/// work for the workers and the publisher of lifecycle events. Cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    pub store: Store,
    pub clock: Clock,
    pub targets: Registry,
    pub roles: Arc<Roles>,
    work: WorkQueue,
    events: broadcast::Sender<LifecycleEvent>,
    limits: Arc<Limiters>,
    /// Writes each change's notifications into its transaction; None: nothing configured.
    announcer: Option<Arc<Announcer>>,
    /// The decisions being answered now, which applies let go first.
    pub(crate) answering: Arc<answering::Answering>,
}

/// Per-person rate limits, per replica (each replica allows the quota on its own), on the
/// broker's clock, so that tests move time instead of waiting for it.
struct Limiters {
    clock: LimiterClock,
    filings: PersonLimiter,
    decisions: PersonLimiter,
}

type PersonLimiter =
    RateLimiter<String, DashMapStateStore<String>, LimiterClock, NoOpMiddleware<Duration>>;

/// The broker's [`Clock`] as the rate limiter reads time: milliseconds as a duration.
#[derive(Clone)]
struct LimiterClock(Clock);

impl governor::clock::Clock for LimiterClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now()).unwrap_or(0))
    }
}

impl Limiters {
    fn new(limits: RateLimits, clock: &Clock) -> Self {
        let clock = LimiterClock(clock.clone());
        Limiters {
            filings: RateLimiter::dashmap_with_clock(
                Quota::per_minute(limits.filings_per_minute),
                clock.clone(),
            ),
            decisions: RateLimiter::dashmap_with_clock(
                Quota::per_minute(limits.decisions_per_minute),
                clock.clone(),
            ),
            clock,
        }
    }
}

/// Which per-person limit an action counts against.
#[derive(Clone, Copy)]
pub(crate) enum Limit {
    Filing,
    Decision,
}

impl Lifecycle {
    pub fn new(
        store: Store,
        clock: Clock,
        targets: Registry,
        roles: Roles,
        work: WorkQueue,
    ) -> Self {
        Self::with_limits(store, clock, targets, roles, work, RateLimits::default())
    }

    pub fn with_limits(
        store: Store,
        clock: Clock,
        targets: Registry,
        roles: Roles,
        work: WorkQueue,
        limits: RateLimits,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let limits = Arc::new(Limiters::new(limits, &clock));
        Lifecycle {
            store,
            clock,
            targets,
            roles: Arc::new(roles),
            work,
            events,
            limits,
            announcer: None,
            answering: Arc::default(),
        }
    }

    /// What announces changes to the notification endpoints, if any are configured.
    pub fn announcer(&self) -> Option<Arc<Announcer>> {
        self.announcer.clone()
    }

    /// The same lifecycle, announcing its changes to the configured endpoints.
    #[must_use]
    pub fn announcing(mut self, announcer: Option<Arc<Announcer>>) -> Self {
        self.announcer = announcer;
        self
    }

    /// Counts one action of this person against its limit, or says when they may again.
    /// Nothing that starts or widens a breakglass may go unrecorded: while the audit chain is
    /// not being written, filings, extensions and decisions wait (fail closed). Ending one
    /// never waits: it takes rights away.
    /// A database that could not be reached is no reason to refuse here: the change itself
    /// then fails with the database's own 503, or commits and chains if it is back.
    pub(crate) async fn require_recording(&self) -> Result<(), LifecycleError> {
        if self.store.chaining_failure() != Some(ChainingFailure::Blocked) {
            return Ok(());
        }
        // The block may be gone: try once before refusing.
        self.store.chain_committed().await;
        match self.store.chaining_failure() {
            Some(ChainingFailure::Blocked) => Err(LifecycleError::Unavailable(
                "the audit history cannot be written right now, so nothing can be filed, extended or decided; nothing was changed, try again shortly (auditors: see `audit verify`)".into(),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn count(&self, person: &Person, limit: Limit) -> Result<(), LifecycleError> {
        let (limiter, what) = match limit {
            Limit::Filing => (&self.limits.filings, "too many filings in the last minute"),
            Limit::Decision => (
                &self.limits.decisions,
                "too many decisions in the last minute",
            ),
        };
        limiter.check_key(&person.subject).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limits.clock.now());
            LifecycleError::TooMany {
                what: what.to_owned(),
                retry_after_seconds: wait.as_secs().saturating_add(1),
            }
        })
    }

    /// Every lifecycle event committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.events.subscribe()
    }

    /// Opens a change: a transaction whose audit events are logged and published on commit.
    pub async fn begin(&self) -> Result<Change, StoreError> {
        Ok(Change {
            tx: self.store.begin().await?,
            clock: self.clock.clone(),
            pending: Vec::new(),
            events: self.events.clone(),
            announcer: self.announcer.clone(),
        })
    }

    /// What the access rules need to know of a request.
    pub fn access<'a>(&'a self, request: &'a Request) -> RequestAccess<'a> {
        RequestAccess {
            requester_subject: &request.requester_subject,
            state: request.state,
            decide_by: request.decide_by,
            rules: self.targets.rules(&request.target),
        }
    }

    /// What of the requests list this person may see: None for auditors (everything), else
    /// their own and those on targets they approve for. The store applies it before its limit;
    /// [`Lifecycle::may_see`] stays the rule for each request.
    /// Whether this person holds any role here: files, approves on some target, or audits.
    pub fn has_a_role(&self, person: &Person) -> bool {
        self.roles.audits(person)
            || self.roles.may_file(person)
            || self
                .targets
                .iter()
                .any(|t| t.rules().iter().any(|r| person.in_group(&r.group)))
    }

    pub fn visibility(&self, person: &Person) -> Option<Visibility> {
        if self.roles.audits(person) {
            return None;
        }
        Some(Visibility {
            subject: person.subject.clone(),
            approver_of: self
                .targets
                .iter()
                .filter(|t| t.rules().iter().any(|r| person.in_group(&r.group)))
                .map(|t| t.name().to_owned())
                .collect(),
        })
    }

    pub fn may_see(&self, person: &Person, request: &Request) -> bool {
        access::may_see(&self.roles, &self.access(request), person)
    }

    /// Hands a request to the workers now, rather than at their next look at the store.
    fn wake(&self, id: &str) {
        self.work.push(Work::Look(id.to_owned()));
    }

    /// Hands a request that was fully approved just now to the workers to apply.
    fn hand_to_apply(&self, id: &str) {
        self.work.push(Work::Apply(id.to_owned()));
    }
}

/// One transition in the making: the transaction that holds the state change, and the audit
/// events written in it.
pub struct Change {
    tx: Tx,
    clock: Clock,
    /// The audit events of this change, appended to the chain just before it commits.
    pending: Vec<PendingEvent>,
    events: broadcast::Sender<LifecycleEvent>,
    announcer: Option<Arc<Announcer>>,
}

impl Change {
    /// The transaction, for the store calls that make the change itself.
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// Moves the request to `action`'s resulting state (when it has one) and records the audit
    /// event, in this change. Returns the request as the move left it (None when the action
    /// moves no state).
    pub async fn transition(
        &mut self,
        request: RequestRef<'_>,
        actor: Actor<'_>,
        action: AuditAction,
        detail: Value,
    ) -> Result<Option<Request>, StoreError> {
        let mut moved = None;
        if let Some(state) = action.resulting_state() {
            moved = Store::set_state(&mut self.tx, request.id, state, self.clock.now()).await?;
            if state.is_final() || state == State::NeedsAttention {
                // What would extend a breakglass that has ended lapses with it.
                Store::close_extension_windows(&mut self.tx, request.id, self.clock.now()).await?;
            }
        }
        self.record(request, actor, action, detail).await?;
        Ok(moved)
    }

    /// Records the audit event alone: for transitions whose state change the caller made with
    /// a store call of its own (an apply sets the expiry with it), and for events that change
    /// no state. The event is written to the audit journal when the change commits.
    pub async fn record(
        &mut self,
        request: RequestRef<'_>,
        actor: Actor<'_>,
        action: AuditAction,
        detail: Value,
    ) -> Result<(), StoreError> {
        self.pending.push(PendingEvent {
            at: self.clock.now(),
            actor: actor.name().to_owned(),
            person: actor
                .person()
                .map(|(issuer, subject)| (issuer.to_owned(), subject.to_owned())),
            action,
            request_id: request.id.to_owned(),
            ticket: request.ticket.to_owned(),
            target: request.target.to_owned(),
            namespace: request.namespace.to_owned(),
            detail,
        });
        Ok(())
    }

    /// Writes the change's audit events and announces them, then commits (the events take
    /// their place in the chain just after); then publishes the lifecycle events: only what
    /// committed is announced or published.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let new: Vec<NewEvent<'_>> = self.pending.iter().map(PendingEvent::as_new).collect();
        let written = Store::append_audits(&mut self.tx, &new).await?;
        if let Some(announcer) = &self.announcer {
            for (event, pending) in written.iter().zip(&self.pending) {
                announcer
                    .announce(&mut self.tx, event, pending.action, &pending.detail)
                    .await?;
            }
        }
        self.tx.commit().await?;
        for event in &self.pending {
            // Nobody listening is fine: subscribers are optional.
            let _ = self.events.send(event.published());
        }
        Ok(())
    }
}

/// An audit event of a change in the making.
struct PendingEvent {
    at: Millis,
    actor: String,
    person: Option<(String, String)>,
    action: AuditAction,
    request_id: String,
    ticket: String,
    target: String,
    namespace: String,
    detail: Value,
}

impl PendingEvent {
    /// What subscribers hear of it once it committed.
    fn published(&self) -> LifecycleEvent {
        LifecycleEvent {
            request_id: self.request_id.clone(),
            ticket: self.ticket.clone(),
            target: self.target.clone(),
            namespace: self.namespace.clone(),
            action: self.action,
            state: self.action.resulting_state(),
            actor: self.actor.clone(),
            at: self.at,
        }
    }

    fn as_new(&self) -> NewEvent<'_> {
        NewEvent {
            at: self.at,
            actor: &self.actor,
            person: self
                .person
                .as_ref()
                .map(|(issuer, subject)| (issuer.as_str(), subject.as_str())),
            action: self.action,
            request_id: Some(&self.request_id),
            ticket: Some(&self.ticket),
            target: Some(&self.target),
            namespace: Some(&self.namespace),
            detail: self.detail.clone(),
        }
    }
}

/// The broker's stamp for a request: the same on the objects the worker applies and on the
/// request page that shows them before they are.
pub fn stamp_of<'a>(request: &'a Request, named: &'a Named, expires_at: &'a str) -> Stamp<'a> {
    Stamp {
        request_id: &request.id,
        ticket: &request.ticket,
        requester: &named.requester,
        approvers: &named.approvers,
        expires_at,
    }
}
