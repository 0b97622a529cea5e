//! The lifecycle module on its own: a request from filing to expiry on SQLite, against a test
//! double of the target interface (the Kubernetes target has its own end-to-end tests), with
//! the published lifecycle events and the audit history checked step by step.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use breakglass_broker::clock::Clock;
use breakglass_broker::config::{Credentials, TargetConfig};
use breakglass_broker::domain::stamp::REQUEST_ID;
use breakglass_broker::domain::{AuditAction, BREAKGLASS_LABEL, Person, Roles, State};
use breakglass_broker::lifecycle::{
    self, Decision, Lifecycle, LifecycleError, LifecycleEvent, RequestForm,
};
use breakglass_broker::store::{AuditFilter, ChainingFailure, Store};
use breakglass_broker::targets::{
    Expect, ObjectRef, Registry, Target, TargetEntry, TargetError, Written,
};
use breakglass_broker::workers::Worker;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

use crate::common::{HOTFIX_IMAGE, deployment};

/// A target that keeps objects in memory, versions every write, and honours the version
/// preconditions of restore and delete as a cluster does.
#[derive(Default)]
struct Double {
    objects: Mutex<HashMap<String, Value>>,
    versions: AtomicU64,
}

impl Double {
    fn key(object: &ObjectRef) -> String {
        format!("{}/{}/{}", object.kind, object.namespace, object.name)
    }

    fn object(&self, key: &str) -> Option<Value> {
        self.objects.lock().expect("lock").get(key).cloned()
    }

    fn store(&self, object: &ObjectRef, body: &Value) -> String {
        let version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
        let mut body = body.clone();
        body["metadata"]["resourceVersion"] = Value::String(version.to_string());
        body["metadata"]["uid"] = Value::String(format!("uid-{}", Self::key(object)));
        self.objects
            .lock()
            .expect("lock")
            .insert(Self::key(object), body);
        version.to_string()
    }

    fn at_version(&self, object: &ObjectRef, version: Option<&str>) -> Result<(), TargetError> {
        let live = self
            .object(&Self::key(object))
            .ok_or(TargetError::NotFound)?;
        let live_version = live["metadata"]["resourceVersion"].as_str();
        match version {
            Some(version) if live_version != Some(version) => Err(TargetError::Conflict(format!(
                "{object} is at version {live_version:?}, not {version}"
            ))),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Target for Double {
    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, TargetError> {
        Ok(self.object(&Self::key(object)))
    }

    async fn apply(
        &self,
        object: &ObjectRef,
        body: &Value,
        expect: Expect<'_>,
    ) -> Result<Written, TargetError> {
        let live = self.object(&Self::key(object));
        let live_version = live
            .as_ref()
            .and_then(|l| l["metadata"]["resourceVersion"].as_str());
        let version = match (expect, live_version) {
            (Expect::Absent, None) => self.store(object, body),
            (Expect::Version(want), Some(have)) if want == have => self.store(object, body),
            _ => {
                return Err(TargetError::Conflict(format!(
                    "{object} is not as recorded"
                )));
            }
        };
        Ok(Written {
            version,
            uid: Some(format!("uid-{}", Self::key(object))),
        })
    }

    async fn dry_run(&self, _object: &ObjectRef, _body: &Value) -> Result<(), TargetError> {
        Ok(())
    }

    async fn restore(
        &self,
        object: &ObjectRef,
        body: &Value,
        version: &str,
    ) -> Result<(), TargetError> {
        self.at_version(object, Some(version))?;
        self.store(object, body);
        Ok(())
    }

    async fn delete(&self, object: &ObjectRef, version: Option<&str>) -> Result<(), TargetError> {
        self.at_version(object, version)?;
        self.objects
            .lock()
            .expect("lock")
            .remove(&Self::key(object));
        Ok(())
    }
}

/// The dev target's policy under another name, reached through a test double rather than a
/// kubeconfig.
fn target_config(name: &str) -> TargetConfig {
    TargetConfig {
        name: name.into(),
        credentials: Credentials::InCluster,
        kubeconfig: None,
        ..breakglass_broker::dev::dev_target(std::path::Path::new("unused"))
    }
}

fn person(subject: &str, groups: &[&str]) -> Person {
    Person {
        issuer: "https://issuer.example".into(),
        subject: subject.into(),
        name: subject.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn roles() -> Roles {
    Roles {
        requesters: vec!["oncall".into()],
        auditors: vec!["auditors".into()],
    }
}

struct Harness {
    lifecycle: Lifecycle,
    worker: Arc<Worker>,
    double: Arc<Double>,
    clock: Clock,
    _dir: tempfile::TempDir,
}

async fn harness(targets: &[&str]) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("lifecycle.db").display()
    ))
    .await
    .expect("store");
    let clock = Clock::manual(1_800_000_000_000);
    let double = Arc::new(Double::default());
    let entries = targets
        .iter()
        .map(|name| {
            let config = target_config(name);
            TargetEntry {
                policy: config.policy().expect("policy"),
                config,
                client: double.clone(),
            }
        })
        .collect();
    let (work, _queue) = lifecycle::queue();
    let lifecycle = Lifecycle::new(store, clock.clone(), Registry::new(entries), roles(), work);
    Harness {
        worker: Worker::new(lifecycle.clone(), 2),
        lifecycle,
        double,
        clock,
        _dir: dir,
    }
}

fn form(target: &str) -> RequestForm {
    RequestForm {
        target: target.into(),
        namespace: "prod".into(),
        manifest: deployment("api", HOTFIX_IMAGE),
        ticket: "INC-7".into(),
        justification: "checkout is down".into(),
        duration_minutes: 30,
        ..RequestForm::default()
    }
}

/// Everything published so far, without waiting.
fn drain(events: &mut broadcast::Receiver<LifecycleEvent>) -> Vec<LifecycleEvent> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    seen
}

#[tokio::test]
async fn the_lifecycle_takes_a_request_from_filing_to_expiry_against_a_target_double() {
    let h = harness(&["prod"]).await;
    let mut events = h.lifecycle.subscribe();
    let (alice, bob, carol) = (
        person("alice", &["oncall"]),
        person("bob", &["approvers"]),
        person("carol", &["approvers"]),
    );

    let filed = h.lifecycle.file(&alice, form("prod")).await.expect("filed");
    assert_eq!(filed.state, State::Pending);
    let id = filed.id.clone();
    let approve = |who| {
        let lifecycle = h.lifecycle.clone();
        let id = id.clone();
        let digest = filed.digest.clone();
        async move {
            lifecycle
                .decide(who, &id, Decision::Approve, Some(&digest), "ok")
                .await
        }
    };
    let after_bob = approve(&bob).await.expect("bob approves");
    assert_eq!(after_bob.state, State::Pending, "one of two approvals");
    let after_carol = approve(&carol).await.expect("carol approves");
    assert_eq!(after_carol.state, State::Approved);

    h.worker.process(&id).await;
    let active = h
        .lifecycle
        .store
        .request(&id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(active.state, State::Active);
    let live = h.double.object("Deployment/prod/api").expect("applied");
    assert_eq!(live["metadata"]["labels"][REQUEST_ID], id.as_str());
    assert_eq!(
        live["spec"]["template"]["metadata"]["labels"][BREAKGLASS_LABEL],
        "true"
    );

    // Not yet due: the worker leaves it alone.
    h.clock.advance(Duration::from_secs(29 * 60));
    h.worker.process(&id).await;
    assert!(h.double.object("Deployment/prod/api").is_some());
    h.clock.advance(Duration::from_secs(61));
    h.worker.process(&id).await;
    let ended = h
        .lifecycle
        .store
        .request(&id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(ended.state, State::Expired);
    assert!(
        h.double.object("Deployment/prod/api").is_none(),
        "the object the broker created is gone"
    );

    let published = drain(&mut events);
    let steps: Vec<(AuditAction, Option<State>, &str)> = published
        .iter()
        .map(|e| (e.action, e.state, e.actor.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (AuditAction::Created, Some(State::Pending), "alice"),
            (AuditAction::Approved, None, "bob"),
            (AuditAction::Approved, None, "carol"),
            (AuditAction::FullyApproved, Some(State::Approved), "carol"),
            (AuditAction::Applying, None, "breakglass-broker"),
            (
                AuditAction::Applied,
                Some(State::Active),
                "breakglass-broker"
            ),
            (
                AuditAction::Expired,
                Some(State::Expired),
                "breakglass-broker"
            ),
        ]
    );
    assert!(
        published
            .iter()
            .all(|e| e.request_id == id && e.ticket == "INC-7")
    );

    let history = h
        .lifecycle
        .store
        .audit_events(&AuditFilter {
            request_id: Some(id.clone()),
            oldest_first: true,
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .expect("history");
    let recorded: Vec<(&str, i64)> = history.iter().map(|e| (e.action.as_str(), e.at)).collect();
    let announced: Vec<(&str, i64)> = published
        .iter()
        .map(|e| (e.action.as_str(), e.at))
        .collect();
    assert_eq!(
        recorded, announced,
        "every event published is the audit event it commits with"
    );
}

#[tokio::test]
async fn a_refused_transition_publishes_nothing_and_records_nothing() {
    let h = harness(&["prod"]).await;
    let alice = person("alice", &["oncall", "approvers"]);
    let filed = h.lifecycle.file(&alice, form("prod")).await.expect("filed");
    let mut events = h.lifecycle.subscribe();

    let own = h
        .lifecycle
        .decide(
            &alice,
            &filed.id,
            Decision::Approve,
            Some(&filed.digest),
            "",
        )
        .await;
    assert!(matches!(own, Err(LifecycleError::Forbidden(_))), "{own:?}");
    let stranger = h
        .lifecycle
        .cancel(&person("bob", &["approvers"]), &filed.id)
        .await;
    assert!(
        matches!(stranger, Err(LifecycleError::Forbidden(_))),
        "{stranger:?}"
    );

    assert!(drain(&mut events).is_empty());
    h.lifecycle.store.chain_committed().await;
    let head = h.lifecycle.store.audit_head().await.expect("head");
    assert_eq!(head.seq, 1, "only the filing is in the history");
}

#[tokio::test]
async fn a_request_whose_target_is_no_longer_configured_cannot_be_decided_and_says_why() {
    let before = harness(&["prod"]).await;
    let alice = person("alice", &["oncall"]);
    let filed = before
        .lifecycle
        .file(&alice, form("prod"))
        .await
        .expect("filed");
    // The same database under a broker whose configuration lost the target.
    let (work, _queue) = lifecycle::queue();
    let after = Lifecycle::new(
        before.lifecycle.store.clone(),
        before.clock.clone(),
        Registry::new(Vec::new()),
        roles(),
        work,
    );

    let decided = after
        .decide(
            &person("bob", &["approvers"]),
            &filed.id,
            Decision::Approve,
            Some(&filed.digest),
            "",
        )
        .await;
    // Bob cannot see it either: nobody is an approver of a target that is not configured.
    assert!(
        matches!(decided, Err(LifecycleError::NotFound)),
        "{decided:?}"
    );
    let refiled = after.file(&alice, form("prod")).await;
    match refiled {
        Err(LifecycleError::Refused(findings)) => {
            assert!(
                findings[0]
                    .to_string()
                    .contains("\"prod\" is not a configured target"),
                "{findings:?}"
            );
        }
        other => panic!("expected a refusal naming the target, got {other:?}"),
    }
    let (tally, _) = after
        .tally(
            &after
                .store
                .request(&filed.id)
                .await
                .expect("read")
                .expect("exists"),
        )
        .await
        .expect("tally");
    assert!(!tally.satisfied);
}

/// Chains what has committed, then puts a row of someone else's in the chain's next place, so
/// that the next pass collides with it.
async fn squat_next_place(store: &Store) {
    store.chain_committed().await;
    let head: i64 = sqlx::query_scalar("SELECT seq FROM audit_head WHERE id = 1")
        .fetch_one(store.pool())
        .await
        .expect("head");
    sqlx::query(
        "INSERT INTO audit_events (seq, at, actor, action, detail, prev_hash, hash)
         VALUES ($1, 0, 'mallory', 'squat', '{}', 'x', 'y')",
    )
    .bind(head + 1)
    .execute(store.pool())
    .await
    .expect("squat");
}

async fn unsquat(store: &Store) {
    sqlx::query("DELETE FROM audit_events WHERE actor = 'mallory'")
        .execute(store.pool())
        .await
        .expect("unsquat");
}

/// The record that a breakglass goes live is in the audit chain before anything reaches the
/// cluster: while the chain cannot be written, an approved request waits, and goes live once
/// it can.
#[tokio::test]
async fn while_the_audit_chain_cannot_be_written_no_apply_reaches_the_cluster() {
    let h = harness(&["prod"]).await;
    let store = h.lifecycle.store.clone();
    let (alice, bob, carol) = (
        person("alice", &["oncall"]),
        person("bob", &["approvers"]),
        person("carol", &["approvers"]),
    );
    let filed = h.lifecycle.file(&alice, form("prod")).await.expect("filed");
    for approver in [&bob, &carol] {
        h.lifecycle
            .decide(
                approver,
                &filed.id,
                Decision::Approve,
                Some(&filed.digest),
                "ok",
            )
            .await
            .expect("approved");
    }
    squat_next_place(&store).await;

    h.worker.process(&filed.id).await;
    assert!(
        h.double.object("Deployment/prod/api").is_none(),
        "nothing reached the cluster while its record could not be chained"
    );
    let waiting = store
        .request(&filed.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(waiting.state, State::Approved);
    assert!(
        waiting
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("audit history")),
        "{:?}",
        waiting.last_error
    );

    unsquat(&store).await;
    h.clock.advance(Duration::from_secs(600));
    h.worker.process(&filed.id).await;
    let active = store
        .request(&filed.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(active.state, State::Active);
    assert!(h.double.object("Deployment/prod/api").is_some());
}

/// Nothing that starts a breakglass goes unrecorded: while the audit chain cannot be written
/// (here a row squats on the chain's next place), filings and decisions are refused with
/// "unavailable" and change nothing; once the chain is written again they go through.
#[tokio::test]
async fn while_the_audit_chain_cannot_be_written_nobody_files_or_decides() {
    let h = harness(&["prod"]).await;
    let store = h.lifecycle.store.clone();
    let (alice, bob) = (person("alice", &["oncall"]), person("bob", &["approvers"]));
    let filed = h.lifecycle.file(&alice, form("prod")).await.expect("filed");
    squat_next_place(&store).await;
    // A cancel commits (it takes nothing away from anyone's safety) and finds the chain blocked.
    let mut second = form("prod");
    second.ticket = "INC-8".into();
    second.manifest = deployment("web", HOTFIX_IMAGE);
    let other = h.lifecycle.file(&alice, second).await.expect("filed");
    h.lifecycle
        .cancel(&alice, &other.id)
        .await
        .expect("cancelled");
    store.chain_committed().await;
    assert_eq!(
        store.chaining_failure(),
        Some(ChainingFailure::Blocked),
        "the pass after the cancel failed"
    );

    let refused = h
        .lifecycle
        .decide(
            &bob,
            &filed.id,
            Decision::Approve,
            Some(&filed.digest),
            "ok",
        )
        .await
        .expect_err("no decision while the chain is blocked");
    assert!(
        matches!(refused, LifecycleError::Unavailable(ref why) if why.contains("audit history")),
        "{refused:?}"
    );
    let refused = h
        .lifecycle
        .file(&alice, form("prod"))
        .await
        .expect_err("no filing while the chain is blocked");
    assert!(
        matches!(refused, LifecycleError::Unavailable(_)),
        "{refused:?}"
    );
    let approvals = store.approvals(&filed.id).await.expect("approvals");
    assert!(
        approvals.is_empty(),
        "the refused decision recorded nothing"
    );

    unsquat(&store).await;
    store
        .chain_journal()
        .await
        .expect("the chain is written again");
    assert_eq!(store.chaining_failure(), None);
    h.lifecycle
        .decide(
            &bob,
            &filed.id,
            Decision::Approve,
            Some(&filed.digest),
            "ok",
        )
        .await
        .expect("decisions go through again");
}
