//! The notifier: delivers the outbox that state changes write (see
//! [`crate::lifecycle::Announcer`]), to Slack incoming webhooks and Standard Webhooks
//! receivers.
//!
//! It runs beside the apply/undo worker and never in its way: a slow or dead receiver delays
//! only its own endpoint's messages. One task per endpoint takes that endpoint's due messages
//! oldest first, each under a lease in its row, so that with several replicas one at a time
//! tries a message. The lease outlasts one try (the HTTP timeout plus a margin), so it needs no
//! heartbeat. A try is recorded after it: 2xx delivered; 410 Gone disables the endpoint until
//! its configuration changes, with an audit event; anything else, or no answer, is tried again
//! with jittered exponential backoff (at least as long as a 429's or 503's `Retry-After` asks,
//! within the 10-minute cap) for up to a day, and then given up with an audit event.
//!
//! Order: one request's messages reach an endpoint in the order of their events. A message
//! waits while an older one of the same request to the same endpoint is still open (retrying,
//! or in flight on another replica); messages of other requests go on.
//!
//! A message is sent only to the destination (kind and URL) it was written for. Messages that
//! no replica takes for [`ORPHANED_AFTER_MS`] after they fell due, because their endpoint is no
//! longer configured or now points elsewhere, are closed as not sent, and auditors see them.
//!
//! Crash safety: a message is delivered at least once. A replica killed before it recorded a
//! try leaves the row leased; once the lease runs out, another replica (or the same one
//! restarted) tries again under the same `webhook-id`, which receivers use to drop a repeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::tasks::Tasks;

use crate::clock::{Clock, Millis, rfc3339};
use crate::config::{NotificationConfig, NotificationKind};
use crate::domain::notice::{self, EventType, GIVE_UP_AFTER_MS, MAX_RETRY_MS};
use crate::domain::{AuditAction, State};
use crate::lifecycle::{Actor, BROKER_ACTOR, Lifecycle, RequestRef};
use crate::store::{
    DELIVERED, END_MOVED, ENDPOINT_DISABLED, ENDPOINT_MOVED, ENDPOINT_REMOVED, Message, NewEvent,
    REQUEST_ENDED_FIRST, Store, StoreError,
};

/// How long one try may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A try's lease: the timeout and room to record the outcome.
const LEASE_MS: Millis = 30_000;
/// The longest the notifier sleeps without looking at the outbox, for messages other replicas
/// wrote (each replica wakes at once only for its own).
const IDLE_MS: Millis = 15_000;
/// See [`super::RECHECK`]: real time, so a test's manual clock never stalls it.
const RECHECK: Duration = Duration::from_millis(250);
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How long after it fell due a message of an endpoint this replica does not have (by name
/// and destination) waits before it is closed: long enough for replicas with another
/// configuration to take it while a new configuration rolls out.
pub const ORPHANED_AFTER_MS: Millis = 10 * 60 * 1000;
/// What a refusal with 410 Gone records on the message it answered.
const REFUSED_GONE: &str =
    "refused: 410 Gone; the endpoint is disabled until its configuration changes";

struct Endpoint {
    config: NotificationConfig,
    hash: String,
    destination: String,
}

pub struct Notifier {
    lifecycle: Lifecycle,
    store: Store,
    clock: Clock,
    endpoints: HashMap<String, Endpoint>,
    http: reqwest::Client,
    replica: String,
    /// A task per endpoint this process delivers to.
    tasks: Arc<Tasks>,
}

impl Notifier {
    /// Looks for due messages now: for writers of the outbox that announce no lifecycle
    /// event (the detector's findings).
    pub fn wake(&self) {
        self.tasks.wake();
    }

    /// None when no endpoint is configured.
    pub fn new(lifecycle: Lifecycle, endpoints: &[NotificationConfig]) -> Option<Arc<Self>> {
        if endpoints.is_empty() {
            return None;
        }
        Some(Arc::new(Notifier {
            store: lifecycle.store.clone(),
            clock: lifecycle.clock.clone(),
            lifecycle,
            endpoints: endpoints
                .iter()
                .map(|e| {
                    (
                        e.name.clone(),
                        Endpoint {
                            config: e.clone(),
                            hash: e.config_hash(),
                            destination: e.destination(),
                        },
                    )
                })
                .collect(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(TIMEOUT)
                .user_agent(concat!("breakglass-broker/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            replica: uuid::Uuid::new_v4().to_string(),
            tasks: Arc::default(),
        }))
    }

    /// Runs for as long as the lifecycle does: woken by each committed change of this process,
    /// by the next due message (a reminder, a retry), and every [`IDLE_MS`] at the latest.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.lifecycle.subscribe();
        loop {
            // One reading of the clock for the whole round: a clock that moves meanwhile
            // ends the pause at once rather than being missed.
            let now = self.clock.now();
            let next = match self.sweep(now).await {
                Ok(()) => self.next_due(now).await,
                Err(e) => Err(e),
            };
            tokio::select! {
                change = changes.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = change {
                        return;
                    }
                }
                () = self.pause(now, next) => {}
                () = self.tasks.finished() => {}
            }
        }
    }

    async fn pause(&self, now: Millis, next: Result<Option<Millis>, StoreError>) {
        match next {
            Ok(Some(at)) if at <= now => tokio::time::sleep(RECHECK).await,
            Ok(Some(at)) => self.clock.sleep_until(at.min(now + IDLE_MS)).await,
            Ok(None) => self.clock.sleep_until(now + IDLE_MS).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox; trying again shortly");
                tokio::time::sleep(STORE_RETRY).await;
            }
        }
    }

    /// When a message of an endpoint this replica knows falls due next, leaving out endpoints
    /// a task of this process is draining already (it ends by waking the loop).
    async fn next_due(&self, now: Millis) -> Result<Option<Millis>, StoreError> {
        let busy = self.tasks.busy();
        Ok(self
            .store
            .next_message_due(now)
            .await?
            .into_iter()
            .filter(|(endpoint, destination, _)| self.serves(endpoint, destination.as_deref()))
            .filter(|(endpoint, _, _)| !busy.contains(endpoint))
            .map(|(_, _, at)| at)
            .min())
    }

    /// Whether this replica delivers an endpoint's messages written for `destination`: it has
    /// an endpoint of that name that still sends there (a row from before destinations were
    /// recorded names none).
    fn serves(&self, endpoint: &str, destination: Option<&str>) -> bool {
        self.endpoints
            .get(endpoint)
            .is_some_and(|e| destination.is_none_or(|d| d == e.destination))
    }

    async fn sweep(self: &Arc<Self>, now: Millis) -> Result<(), StoreError> {
        for (endpoint, destination) in self.store.endpoints_due(now).await? {
            if self.serves(&endpoint, destination.as_deref()) {
                self.start(endpoint);
            }
        }
        self.close_orphans(now).await
    }

    /// Closes the messages nobody took long after they fell due because their endpoint is
    /// gone from this replica's configuration, or now sends elsewhere.
    async fn close_orphans(&self, now: Millis) -> Result<(), StoreError> {
        let before = now - ORPHANED_AFTER_MS;
        for (endpoint, destination) in self.store.overdue_destinations(before, now).await? {
            let outcome = match self.endpoints.get(&endpoint) {
                None => ENDPOINT_REMOVED,
                Some(_) if !self.serves(&endpoint, destination.as_deref()) => ENDPOINT_MOVED,
                Some(_) => continue,
            };
            let closed = self
                .store
                .close_overdue(&endpoint, destination.as_deref(), before, now, outcome)
                .await?;
            if closed > 0 {
                tracing::warn!(
                    endpoint,
                    closed,
                    outcome,
                    "notifications closed without being sent"
                );
            }
        }
        Ok(())
    }

    fn start(self: &Arc<Self>, endpoint: String) {
        let notifier = self.clone();
        self.tasks.start(
            endpoint.clone(),
            async move { notifier.drain(&endpoint).await },
        );
    }

    /// Tries every due message of one endpoint, oldest first.
    async fn drain(&self, endpoint: &str) {
        let owner = format!("{}/{}", self.replica, uuid::Uuid::new_v4());
        let Some(destination) = self.endpoints.get(endpoint).map(|e| e.destination.clone()) else {
            return;
        };
        loop {
            let now = self.clock.now();
            let message = match self
                .store
                .claim_message(endpoint, &destination, &owner, now, now + LEASE_MS)
                .await
            {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(endpoint, error = %e, "cannot claim a notification; it will be retried");
                    return;
                }
            };
            if let Err(e) = self.deliver(&message, &owner).await {
                tracing::warn!(endpoint, message_id = %message.id, error = %e, "cannot record a notification's outcome; it will be retried");
                return;
            }
        }
    }

    /// One try of one message, and its outcome recorded.
    async fn deliver(&self, message: &Message, owner: &str) -> Result<(), StoreError> {
        let Some(endpoint) = self.endpoints.get(&message.endpoint) else {
            return Ok(());
        };
        let now = self.clock.now();
        if self
            .store
            .disabled_hash(&message.endpoint)
            .await?
            .as_deref()
            == Some(&endpoint.hash)
        {
            self.store
                .finish_message(&message.id, owner, now, ENDPOINT_DISABLED, None)
                .await?;
            return Ok(());
        }
        let body: Value = serde_json::from_str(&message.body).unwrap_or(Value::Null);
        if message.event_type == EventType::Expiring.as_str()
            && let Some(why) = self.reminder_moot(message, &body).await?
        {
            self.store
                .finish_message(&message.id, owner, now, why, None)
                .await?;
            return Ok(());
        }
        let started = std::time::Instant::now();
        let answer = self.send(endpoint, message, &body).await;
        let now = self.clock.now();
        match answer {
            Ok((status, _)) if status.is_success() => {
                tracing::info!(
                    endpoint = %message.endpoint,
                    message_id = %message.id,
                    event = %message.event_type,
                    request_id = message.request_id.as_deref().unwrap_or_default(),
                    delay_ms = now - message.created_at,
                    took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "notification delivered"
                );
                self.store
                    .finish_message(&message.id, owner, now, DELIVERED, None)
                    .await?;
            }
            Ok((reqwest::StatusCode::GONE, _)) => self.gone(message, owner, endpoint).await?,
            Ok((status, retry_after)) => {
                self.failed(message, owner, &format!("HTTP {status}"), retry_after)
                    .await?
            }
            Err(error) => self.failed(message, owner, &error, None).await?,
        }
        Ok(())
    }

    /// A 410 Gone: the endpoint is disabled until its configuration changes, in one
    /// transaction with the message's outcome and the audit event that records it.
    async fn gone(
        &self,
        message: &Message,
        owner: &str,
        endpoint: &Endpoint,
    ) -> Result<(), StoreError> {
        tracing::warn!(endpoint = %message.endpoint, "the endpoint answered 410 Gone; disabling it until its configuration changes");
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let error = "HTTP 410 Gone";
        if !Store::finish_message_in(&mut tx, &message.id, owner, now, REFUSED_GONE, error).await? {
            return Ok(());
        }
        Store::disable_endpoint(&mut tx, &message.endpoint, &endpoint.hash, now).await?;
        let request = match message.request_id.as_deref() {
            Some(id) => Store::request_in(&mut tx, id).await?,
            None => None,
        };
        Store::append_audit(
            &mut tx,
            NewEvent {
                at: now,
                actor: BROKER_ACTOR,
                person: None,
                action: AuditAction::NotificationDisabled,
                request_id: request.as_ref().map(|r| r.id.as_str()),
                ticket: request.as_ref().map(|r| r.ticket.as_str()),
                target: request.as_ref().map(|r| r.target.as_str()),
                namespace: request.as_ref().map(|r| r.namespace.as_str()),
                detail: json!({
                    "endpoint": message.endpoint,
                    "status": 410,
                    "event": message.event_type,
                    "message": message.id,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Why a reminder is not to be sent: the request ended, or its end moved, before it.
    async fn reminder_moot(
        &self,
        message: &Message,
        body: &Value,
    ) -> Result<Option<&'static str>, StoreError> {
        let Some(id) = message.request_id.as_deref() else {
            return Ok(None);
        };
        let request = self.store.request(id).await?;
        Ok(match request {
            Some(r) if r.state != State::Active => Some(REQUEST_ENDED_FIRST),
            Some(r)
                if r.expires_at.map(rfc3339).as_deref()
                    != body["data"]["times"]["expires_at"].as_str() =>
            {
                Some(END_MOVED)
            }
            Some(_) => None,
            None => Some("not sent: the request is gone"),
        })
    }

    /// Sends the message once; the status and, on a 429 or 503, how long its `Retry-After`
    /// asks to wait; or why there was no answer (without the URL, which may be a secret).
    async fn send(
        &self,
        endpoint: &Endpoint,
        message: &Message,
        body: &Value,
    ) -> Result<(reqwest::StatusCode, Option<Millis>), String> {
        let Some(url) = endpoint.config.endpoint.clone() else {
            return Err("the endpoint's URL was not loaded".into());
        };
        let request = match endpoint.config.kind {
            NotificationKind::Slack => self.http.post(url).json(&notice::slack_message(body)),
            NotificationKind::Webhook => {
                let timestamp = self.clock.now().div_euclid(1000);
                let signature = endpoint
                    .config
                    .secret
                    .as_deref()
                    .map(|secret| notice::sign(secret, &message.id, timestamp, &message.body))
                    .unwrap_or_default();
                self.http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &message.id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .body(message.body.clone())
            }
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = matches!(
                    status,
                    reqwest::StatusCode::TOO_MANY_REQUESTS
                        | reqwest::StatusCode::SERVICE_UNAVAILABLE
                )
                .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
                .flatten()
                .and_then(|value| value.to_str().ok())
                .and_then(|value| notice::retry_after(value, self.clock.now()));
                Ok((status, retry_after))
            }
            Err(e) if e.is_timeout() => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
            Err(e) => Err(e.without_url().to_string()),
        }
    }

    /// Schedules the next try (no sooner than `retry_after`, which is within the cap), or
    /// gives the message up once it has been tried for a day.
    async fn failed(
        &self,
        message: &Message,
        owner: &str,
        error: &str,
        retry_after: Option<Millis>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let give_up_at = message.created_at + GIVE_UP_AFTER_MS;
        if now < give_up_at {
            let delay = notice::retry_delay(message.attempts, rand::thread_rng().r#gen::<f64>())
                .max(retry_after.unwrap_or(0))
                .min(MAX_RETRY_MS);
            let at = (now + delay).min(give_up_at);
            tracing::warn!(endpoint = %message.endpoint, message_id = %message.id, error, retry_in_ms = at - now, "notification not delivered; will retry");
            return self
                .store
                .retry_message(&message.id, owner, error, at)
                .await;
        }
        tracing::error!(endpoint = %message.endpoint, message_id = %message.id, error, "notification not delivered for a day; giving up");
        let mut change = self.lifecycle.begin().await?;
        let outcome = format!("gave up after {} tries", message.attempts + 1);
        if !Store::finish_message_in(change.tx(), &message.id, owner, now, &outcome, error).await? {
            return Ok(());
        }
        let request = match message.request_id.as_deref() {
            Some(id) => Store::request_in(change.tx(), id).await?,
            None => None,
        };
        if let Some(request) = request {
            change
                .record(
                    RequestRef::from(&request),
                    Actor::Broker,
                    AuditAction::NotificationGaveUp,
                    json!({
                        "endpoint": message.endpoint,
                        "event": message.event_type,
                        "message": message.id,
                        "tries": message.attempts + 1,
                        "error": error,
                    }),
                )
                .await?;
        }
        change.commit().await
    }
}
