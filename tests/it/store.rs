//! The store, the same tests against SQLite and PostgreSQL: each test gets a fresh database
//! (a file in a temp dir, or `CREATE DATABASE bg_<uuid>` on the server named by
//! `BREAKGLASS_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`).

use std::time::Duration;

use breakglass_broker::clock::Millis;
use breakglass_broker::domain::manifest::ObjectRef;
use breakglass_broker::domain::{AuditAction, State};
use breakglass_broker::store::{Approval, ChainingFailure, NewEvent, NewRequest, Store};
use serde_json::json;
use sqlx::{Connection, Executor, Row};
use tempfile::TempDir;

/// The server and database test databases are made from.
pub fn postgres_admin_url() -> String {
    std::env::var("BREAKGLASS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of its own on the shared PostgreSQL server, dropped when this is dropped.
pub struct FreshPostgres {
    pub url: String,
    admin: String,
    name: String,
}

impl FreshPostgres {
    pub async fn create() -> FreshPostgres {
        let admin = postgres_admin_url();
        let name = format!("bg_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("the test PostgreSQL server answers");
        // A name made here, not input: safe to put in the statement.
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create database");
        conn.close().await.expect("close");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        FreshPostgres {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }
}

impl Drop for FreshPostgres {
    /// Drop runs in async tests too, where blocking on the runtime is not allowed: the drop
    /// gets a thread and a runtime of its own. FORCE ends the sessions still open on it.
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

mod read_cache;

/// A store on a fresh database, and what keeps that database alive.
struct TestDb {
    store: Store,
    /// For a second store on the same database: another replica.
    url: String,
    _dir: Option<TempDir>,
    postgres: Option<FreshPostgres>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("store.db").display()
        );
        let store = Store::connect(&url).await.expect("sqlite store");
        TestDb {
            store,
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    async fn postgres() -> TestDb {
        let database = FreshPostgres::create().await;
        let store = Store::connect(&database.url).await.expect("postgres store");
        TestDb {
            store,
            url: database.url.clone(),
            _dir: None,
            postgres: Some(database),
        }
    }
}

/// Each test below, once per database, as `store::sqlite::NAME` and `store::postgres::NAME`.
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::TestDb::sqlite().await;
                    super::$test(db.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::TestDb::postgres().await;
                    super::$test(db.store.clone()).await;
                    db.store.pool().close().await;
                }
            )*
        }
    };
}

on_both_databases!(
    a_request_is_stored_locked_and_moved_through_its_states,
    each_person_decides_once_on_a_request,
    a_lease_is_exclusive_until_it_expires_and_renewals_keep_it,
    a_retry_records_the_error_and_gives_the_lease_up,
    due_work_and_next_deadline_agree_on_what_is_due_and_when,
    a_change_and_its_audit_event_commit_together,
    a_failing_audit_write_rolls_back_the_change_it_records,
    events_that_cannot_take_their_place_wait_in_the_journal,
    events_chained_after_a_verification_read_the_head_are_not_past_it,
    an_open_transaction_with_audit_events_holds_up_no_other_writer,
    two_deciders_on_one_request_take_turns_and_see_each_other,
    two_workers_racing_for_one_request_get_one_lease,
    an_extension_names_its_original_and_moves_only_a_running_end,
    a_breakglass_that_ended_waits_for_its_review_until_one_is_written,
    replicas_sighting_one_breakglass_at_once_record_one_finding_and_one_event,
    a_finding_ends_with_its_episode_and_is_acknowledged_once,
    a_request_meeting_a_held_object_takes_none_of_its_objects,
);

const NOW: Millis = 1_700_000_000_000;
const ISSUER: &str = "https://issuer.example";

fn new_request(ticket: &str, decide_by: Millis) -> NewRequest {
    NewRequest {
        id: uuid::Uuid::now_v7().to_string(),
        target: "dev-cluster".into(),
        namespace: "prod".into(),
        ticket: ticket.into(),
        justification: "payments API is down".into(),
        requester_issuer: ISSUER.into(),
        requester_subject: "alice".into(),
        requester_name: "alice".into(),
        manifest: "kind: Deployment".into(),
        objects: "[]".into(),
        duration_seconds: 3600,
        digest: "d1g3st".into(),
        created_at: NOW,
        decide_by,
        extends: None,
    }
}

/// Files a request and moves it to `state` the way the broker would, returning its id.
async fn request_in(store: &Store, state: State, decide_by: Millis) -> String {
    let new = new_request("INC-1", decide_by);
    let mut tx = store.begin().await.expect("begin");
    Store::insert_request(&mut tx, &new).await.expect("insert");
    match state {
        State::Pending => {}
        State::Active => Store::set_active(&mut tx, &new.id, NOW, NOW + 3_600_000)
            .await
            .expect("active"),
        other => {
            Store::set_state(&mut tx, &new.id, other, NOW)
                .await
                .expect("state");
        }
    }
    tx.commit().await.expect("commit");
    new.id
}

fn approval(who: &str) -> Approval {
    Approval {
        approver_issuer: ISSUER.into(),
        approver_subject: who.into(),
        approver_name: who.into(),
        approver_groups: r#"["approvers"]"#.into(),
        decision: "approve".into(),
        digest: "d1g3st".into(),
        comment: "ok".into(),
        at: NOW,
    }
}

fn event(request_id: &str, action: AuditAction) -> NewEvent<'_> {
    NewEvent {
        at: NOW,
        actor: "bob",
        person: Some((ISSUER, "bob")),
        action,
        request_id: Some(request_id),
        ticket: Some("INC-1"),
        target: Some("dev-cluster"),
        namespace: Some("prod"),
        detail: json!({ "comment": "ok" }),
    }
}

/// The head of the chain once everything committed so far is in it.
async fn audit_head_seq(store: &Store) -> i64 {
    store.chain_committed().await;
    sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
        .fetch_one(store.pool())
        .await
        .expect("audit head")
        .try_get("seq")
        .expect("seq")
}

async fn a_request_is_stored_locked_and_moved_through_its_states(store: Store) {
    let new = new_request("INC-77", NOW + 60_000);
    let mut tx = store.begin().await.expect("begin");
    Store::insert_request(&mut tx, &new).await.expect("insert");
    tx.commit().await.expect("commit");

    let stored = store.request(&new.id).await.expect("read").expect("exists");
    assert_eq!(stored.state, State::Pending);
    assert_eq!(
        (
            stored.ticket.as_str(),
            stored.duration_seconds,
            stored.decide_by
        ),
        ("INC-77", 3600, NOW + 60_000)
    );
    assert_eq!((stored.applied_at, stored.lease_owner), (None, None));

    let mut tx = store.begin().await.expect("begin");
    let locked = Store::lock_request(&mut tx, &new.id)
        .await
        .expect("lock")
        .expect("found");
    assert_eq!(locked.id, new.id);
    Store::set_state(&mut tx, &new.id, State::Approved, NOW + 1)
        .await
        .expect("approve");
    tx.commit().await.expect("commit");
    let approved = store.request(&new.id).await.expect("read").expect("exists");
    assert_eq!((approved.state, approved.ended_at), (State::Approved, None));

    let mut tx = store.begin().await.expect("begin");
    Store::lock_request(&mut tx, &new.id).await.expect("lock");
    Store::set_active(&mut tx, &new.id, NOW + 2, NOW + 3_600_002)
        .await
        .expect("active");
    tx.commit().await.expect("commit");
    let active = store.request(&new.id).await.expect("read").expect("exists");
    assert_eq!(
        (active.state, active.applied_at, active.expires_at),
        (State::Active, Some(NOW + 2), Some(NOW + 3_600_002))
    );

    let mut tx = store.begin().await.expect("begin");
    Store::lock_request(&mut tx, &new.id).await.expect("lock");
    Store::set_state(&mut tx, &new.id, State::Expired, NOW + 3_600_002)
        .await
        .expect("expire");
    tx.commit().await.expect("commit");
    let expired = store.request(&new.id).await.expect("read").expect("exists");
    assert_eq!(
        (expired.state, expired.ended_at),
        (State::Expired, Some(NOW + 3_600_002))
    );

    let mut tx = store.begin().await.expect("begin");
    assert!(
        Store::lock_request(&mut tx, "no-such-request")
            .await
            .expect("lock")
            .is_none()
    );
    drop(tx);
    let listed = store
        .requests(&breakglass_broker::store::RequestFilter {
            state: Some(State::Expired),
            ticket: Some("INC-77".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [new.id.as_str()]
    );
}

async fn each_person_decides_once_on_a_request(store: Store) {
    let id = request_in(&store, State::Pending, NOW + 60_000).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(
        Store::insert_approval(&mut tx, &id, &approval("bob"))
            .await
            .expect("first")
    );
    assert!(
        !Store::insert_approval(&mut tx, &id, &approval("bob"))
            .await
            .expect("second"),
        "bob counts once"
    );
    assert!(
        Store::insert_approval(&mut tx, &id, &approval("carol"))
            .await
            .expect("carol")
    );
    tx.commit().await.expect("commit");
    let approvals = store.approvals(&id).await.expect("approvals");
    let who: Vec<&str> = approvals
        .iter()
        .map(|a| a.approver_subject.as_str())
        .collect();
    assert_eq!(who, ["bob", "carol"]);
}

async fn a_lease_is_exclusive_until_it_expires_and_renewals_keep_it(store: Store) {
    let id = request_in(&store, State::Approved, NOW + 60_000).await;
    assert!(
        store
            .claim(&id, State::Approved, "a", NOW, NOW + 15_000)
            .await
            .expect("claim")
            .is_some()
    );
    assert!(
        store
            .claim(&id, State::Approved, "b", NOW + 1, NOW + 15_001)
            .await
            .expect("claim")
            .is_none(),
        "a holds it"
    );
    assert!(
        store
            .claim(&id, State::Active, "a", NOW, NOW + 15_000)
            .await
            .expect("claim")
            .is_none(),
        "a lease is for the state the work is for"
    );
    assert!(
        store
            .renew(&id, State::Approved, "a", NOW + 20_000)
            .await
            .expect("renew")
    );
    assert!(
        store
            .claim(&id, State::Approved, "b", NOW + 15_000, NOW + 30_000)
            .await
            .expect("claim")
            .is_none(),
        "the renewal moved the expiry"
    );
    assert!(
        store
            .claim(&id, State::Approved, "b", NOW + 20_000, NOW + 35_000)
            .await
            .expect("claim")
            .is_some(),
        "an expired lease is taken over"
    );
    assert!(
        !store
            .renew(&id, State::Approved, "a", NOW + 40_000)
            .await
            .expect("renew"),
        "a learns it lost the lease"
    );
    store.release(&id, "a").await.expect("release");
    let held = store.request(&id).await.expect("read").expect("exists");
    assert_eq!(
        (held.lease_owner.as_deref(), held.lease_until),
        (Some("b"), Some(NOW + 35_000)),
        "only the holder releases"
    );
    store.release(&id, "b").await.expect("release");
    assert!(
        store
            .claim(&id, State::Approved, "c", NOW + 20_001, NOW + 35_001)
            .await
            .expect("claim")
            .is_some(),
        "a released lease is free at once"
    );
}

async fn a_retry_records_the_error_and_gives_the_lease_up(store: Store) {
    let id = request_in(&store, State::Approved, NOW + 60_000).await;
    assert!(
        store
            .claim(&id, State::Approved, "a", NOW, NOW + 15_000)
            .await
            .expect("claim")
            .is_some()
    );
    store
        .record_retry(&id, "someone-else", "ignored", NOW + 9)
        .await
        .expect("retry");
    store
        .record_retry(&id, "a", "unavailable: HTTP 503", NOW + 500)
        .await
        .expect("retry");
    let retried = store.request(&id).await.expect("read").expect("exists");
    assert_eq!(retried.last_error.as_deref(), Some("unavailable: HTTP 503"));
    assert_eq!(
        (
            retried.attempts,
            retried.next_attempt_at,
            retried.lease_owner
        ),
        (1, Some(NOW + 500), None)
    );
    assert!(store.due_work(NOW + 499, 10).await.expect("due").is_empty());
    assert_eq!(
        store.due_work(NOW + 500, 10).await.expect("due"),
        [(id, State::Approved)]
    );
}

async fn due_work_and_next_deadline_agree_on_what_is_due_and_when(store: Store) {
    assert_eq!(store.next_deadline().await.expect("deadline"), None);
    let pending_later = request_in(&store, State::Pending, NOW + 10_000).await;
    let pending_lapsed = request_in(&store, State::Pending, NOW - 1).await;
    let approved = request_in(&store, State::Approved, NOW + 60_000).await;
    let approved_leased = request_in(&store, State::Approved, NOW + 60_000).await;
    assert!(
        store
            .claim(&approved_leased, State::Approved, "w", NOW, NOW + 5_000)
            .await
            .expect("claim")
            .is_some()
    );
    let approved_backing_off = request_in(&store, State::Approved, NOW + 60_000).await;
    assert!(
        store
            .claim(
                &approved_backing_off,
                State::Approved,
                "w",
                NOW,
                NOW + 5_000
            )
            .await
            .expect("claim")
            .is_some()
    );
    store
        .record_retry(&approved_backing_off, "w", "HTTP 503", NOW + 3_000)
        .await
        .expect("retry");
    let closing = request_in(&store, State::Active, NOW + 60_000).await;
    let mut tx = store.begin().await.expect("begin");
    Store::set_end_requested(&mut tx, &closing, "closed")
        .await
        .expect("close");
    tx.commit().await.expect("commit");
    // Active until NOW + 1h; past due only from then on.
    let running = request_in(&store, State::Active, NOW + 60_000).await;
    request_in(&store, State::Expired, NOW - 1).await;

    let mut due: Vec<String> = store
        .due_work(NOW, 64)
        .await
        .expect("due")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    due.sort();
    let mut expected = vec![pending_lapsed.clone(), approved.clone(), closing.clone()];
    expected.sort();
    assert_eq!(due, expected);
    assert!(
        store
            .next_deadline()
            .await
            .expect("deadline")
            .is_some_and(|at| at <= NOW),
        "work is due now"
    );

    // The broker deals with what was due; what is left comes due one after another.
    for id in [&pending_lapsed, &approved, &closing] {
        let mut tx = store.begin().await.expect("begin");
        Store::set_state(&mut tx, id, State::Closed, NOW)
            .await
            .expect("end");
        tx.commit().await.expect("commit");
    }
    assert!(store.due_work(NOW, 64).await.expect("due").is_empty());
    assert_eq!(
        store.next_deadline().await.expect("deadline"),
        Some(NOW + 3_000),
        "the retry backoff ends first"
    );
    let mut tx = store.begin().await.expect("begin");
    Store::set_state(&mut tx, &approved_backing_off, State::Failed, NOW)
        .await
        .expect("end");
    tx.commit().await.expect("commit");
    assert_eq!(
        store.next_deadline().await.expect("deadline"),
        Some(NOW + 5_000),
        "then the lease of a worker that may have died"
    );
    assert_eq!(
        store.due_work(NOW + 5_000, 64).await.expect("due"),
        [(approved_leased.clone(), State::Approved)]
    );
    let mut tx = store.begin().await.expect("begin");
    Store::set_state(&mut tx, &approved_leased, State::Failed, NOW)
        .await
        .expect("end");
    tx.commit().await.expect("commit");
    assert_eq!(
        store.next_deadline().await.expect("deadline"),
        Some(NOW + 10_000),
        "then an approval window"
    );
    let mut tx = store.begin().await.expect("begin");
    Store::set_state(&mut tx, &pending_later, State::Cancelled, NOW)
        .await
        .expect("end");
    tx.commit().await.expect("commit");
    assert_eq!(
        store.next_deadline().await.expect("deadline"),
        Some(NOW + 3_600_000),
        "then an expiry"
    );

    // Past due but leased by another worker: due when the lease ends, not again and again now.
    assert!(
        store
            .claim(
                &running,
                State::Active,
                "w",
                NOW + 3_600_000,
                NOW + 3_615_000
            )
            .await
            .expect("claim")
            .is_some()
    );
    assert_eq!(
        store.next_deadline().await.expect("deadline"),
        Some(NOW + 3_615_000)
    );
    assert!(
        store
            .due_work(NOW + 3_600_001, 64)
            .await
            .expect("due")
            .is_empty()
    );
}

async fn a_change_and_its_audit_event_commit_together(store: Store) {
    let id = request_in(&store, State::Pending, NOW + 60_000).await;
    let before = audit_head_seq(&store).await;
    let mut tx = store.begin().await.expect("begin");
    Store::lock_request(&mut tx, &id).await.expect("lock");
    Store::set_state(&mut tx, &id, State::Rejected, NOW)
        .await
        .expect("reject");
    let first = Store::append_audit(&mut tx, event(&id, AuditAction::Rejected))
        .await
        .expect("audit");
    let second = Store::append_audit(&mut tx, event(&id, AuditAction::Approved))
        .await
        .expect("audit");
    assert!(first.entry < second.entry, "journaled in order");
    tx.commit().await.expect("commit");

    // In the chain just after the commit, in the order they were written.
    assert_eq!(audit_head_seq(&store).await, before + 2);
    let events = store
        .audit_events(&breakglass_broker::store::AuditFilter {
            request_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .expect("events");
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            AuditAction::Approved.as_str(),
            AuditAction::Rejected.as_str()
        ]
    );
    assert!(events.iter().all(|e| e.hash == e.expected_hash()));
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [before + 2, before + 1], "newest first");
    assert_eq!(events[0].prev_hash, events[1].hash, "chained");
    let stored = store.request(&id).await.expect("read").expect("exists");
    assert_eq!(stored.state, State::Rejected);
}

async fn a_failing_audit_write_rolls_back_the_change_it_records(store: Store) {
    let id = request_in(&store, State::Pending, NOW + 60_000).await;
    let head = audit_head_seq(&store).await;
    // The journal is gone behind the store's back: no audit event can be written.
    sqlx::query("ALTER TABLE audit_journal RENAME TO audit_journal_gone")
        .execute(store.pool())
        .await
        .expect("hide the journal");

    let mut tx = store.begin().await.expect("begin");
    Store::lock_request(&mut tx, &id).await.expect("lock");
    Store::set_state(&mut tx, &id, State::Approved, NOW)
        .await
        .expect("approve");
    let appended = Store::append_audit(&mut tx, event(&id, AuditAction::FullyApproved)).await;
    assert!(appended.is_err(), "the audit write fails");
    drop(tx);

    let stored = store.request(&id).await.expect("read").expect("exists");
    assert_eq!(
        stored.state,
        State::Pending,
        "the change did not happen without its event"
    );
    assert_eq!(audit_head_seq(&store).await, head, "the chain did not move");
    assert!(store.due_work(NOW, 10).await.expect("due").is_empty());
}

/// Puts a row of someone else's at `seq` in the chain, behind the store's back.
async fn squat(store: &Store, seq: i64) {
    sqlx::query(
        "INSERT INTO audit_events (seq, at, actor, action, detail, prev_hash, hash)
         VALUES ($1, $2, 'mallory', 'squat', '{}', 'x', 'y')",
    )
    .bind(seq)
    .bind(NOW)
    .execute(store.pool())
    .await
    .expect("squat");
}

/// A verification reads the head, walks to it, then looks for events past it: a pass that
/// chained meanwhile is no tampering, a row past the head as it now is, is.
async fn events_chained_after_a_verification_read_the_head_are_not_past_it(store: Store) {
    let id = request_in(&store, State::Pending, NOW + 60_000).await;
    let read = audit_head_seq(&store).await;
    let mut tx = store.begin().await.expect("begin");
    Store::append_audit(&mut tx, event(&id, AuditAction::Approved))
        .await
        .expect("journaled");
    tx.commit().await.expect("commit");
    let now = audit_head_seq(&store).await;
    assert_eq!(now, read + 1, "chained meanwhile");
    assert_eq!(store.first_event_past(read).await.expect("past"), None);

    squat(&store, now + 1).await;
    assert_eq!(
        store.first_event_past(read).await.expect("past"),
        Some(now + 1)
    );
}

async fn events_that_cannot_take_their_place_wait_in_the_journal(store: Store) {
    let id = request_in(&store, State::Pending, NOW + 60_000).await;
    let head = audit_head_seq(&store).await;
    // Something takes the chain's next place behind the store's back: chaining collides.
    squat(&store, head + 1).await;

    let mut tx = store.begin().await.expect("begin");
    Store::lock_request(&mut tx, &id).await.expect("lock");
    Store::set_state(&mut tx, &id, State::Rejected, NOW)
        .await
        .expect("reject");
    Store::append_audit(&mut tx, event(&id, AuditAction::Rejected))
        .await
        .expect("journaled");
    tx.commit()
        .await
        .expect("the change commits with its event");

    assert_eq!(audit_head_seq(&store).await, head, "the head did not move");
    assert_eq!(
        store.journal_backlog().await.expect("backlog"),
        (1, Some(NOW)),
        "the event waits in the journal, and the metrics say since when"
    );

    // Once the place is free again, the next pass chains it.
    sqlx::query("DELETE FROM audit_events WHERE actor = 'mallory'")
        .execute(store.pool())
        .await
        .expect("unsquat");
    assert_eq!(audit_head_seq(&store).await, head + 1);
    assert_eq!(store.journal_backlog().await.expect("backlog"), (0, None));
    let events = store
        .audit_events(&breakglass_broker::store::AuditFilter {
            request_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, AuditAction::Rejected.as_str());
    assert_eq!(events[0].hash, events[0].expected_hash());
}

async fn an_open_transaction_with_audit_events_holds_up_no_other_writer(store: Store) {
    let slow = request_in(&store, State::Pending, NOW + 60_000).await;
    let quick = request_in(&store, State::Pending, NOW + 60_000).await;
    let head = audit_head_seq(&store).await;
    let mut open = store.begin().await.expect("begin");
    Store::append_audit(&mut open, event(&slow, AuditAction::Approved))
        .await
        .expect("journaled");

    // Another writer's change commits and is chained while the first is still open. (On
    // SQLite, one writer at a time: the open transaction holds the database, not the head.)
    if store.backend() == breakglass_broker::store::Backend::Postgres {
        let mut tx = store.begin().await.expect("begin");
        Store::append_audit(&mut tx, event(&quick, AuditAction::Rejected))
            .await
            .expect("journaled");
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tx.commit().await.expect("commit");
            store.chain_committed().await;
        })
        .await
        .expect("the commit and its chaining do not wait for the open transaction");
        assert_eq!(audit_head_seq(&store).await, head + 1);
    }
    open.commit().await.expect("commit");
    let events = store
        .audit_events(&breakglass_broker::store::AuditFilter {
            oldest_first: true,
            after_seq: Some(head),
            ..Default::default()
        })
        .await
        .expect("events");
    let chained: Vec<(&str, i64)> = events
        .iter()
        .map(|e| (e.request_id.as_deref().unwrap_or_default(), e.seq))
        .collect();
    let expected: Vec<(&str, i64)> = match store.backend() {
        breakglass_broker::store::Backend::Postgres => {
            vec![(quick.as_str(), head + 1), (slow.as_str(), head + 2)]
        }
        breakglass_broker::store::Backend::Sqlite => vec![(slow.as_str(), head + 1)],
    };
    assert_eq!(chained, expected, "chained in the order they committed");
    assert!(events.iter().all(|e| e.hash == e.expected_hash()));
}

async fn two_deciders_on_one_request_take_turns_and_see_each_other(store: Store) {
    let id = request_in(&store, State::Pending, NOW + 60_000).await;
    let decide = |who: &'static str| {
        let store = store.clone();
        let id = id.clone();
        async move {
            let mut tx = store.begin().await.expect("begin");
            Store::lock_request(&mut tx, &id)
                .await
                .expect("lock")
                .expect("found");
            Store::insert_approval(&mut tx, &id, &approval(who))
                .await
                .expect("approve");
            // Hold the lock long enough that the other decider is sure to be waiting for it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let seen = Store::approvals_in(&mut tx, &id)
                .await
                .expect("approvals")
                .len();
            tx.commit().await.expect("commit");
            seen
        }
    };
    let (bob, carol) = tokio::join!(tokio::spawn(decide("bob")), tokio::spawn(decide("carol")));
    let mut seen = [bob.expect("bob"), carol.expect("carol")];
    seen.sort_unstable();
    assert_eq!(
        seen,
        [1, 2],
        "whoever decides second sees the first decision, so the approval that completes the rule is never missed"
    );
}

async fn two_workers_racing_for_one_request_get_one_lease(store: Store) {
    const WORKERS: usize = 8;
    for round in 0..3 {
        let id = request_in(&store, State::Approved, NOW + 60_000).await;
        // Every claim is its own task, and all of them wait at the barrier until the last
        // is ready, so the UPDATEs reach the database together rather than one by one.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(WORKERS));
        let mut claims = tokio::task::JoinSet::new();
        for worker in 0..WORKERS {
            let store = store.clone();
            let id = id.clone();
            let start = start.clone();
            claims.spawn(async move {
                let owner = format!("w{worker}");
                start.wait().await;
                let won = store
                    .claim(&id, State::Approved, &owner, NOW, NOW + 15_000)
                    .await
                    .expect("claim")
                    .is_some();
                (owner, won)
            });
        }
        let mut winners = Vec::new();
        while let Some(claim) = claims.join_next().await {
            let (owner, won) = claim.expect("claim task");
            if won {
                winners.push(owner);
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one of {WORKERS} racing workers holds the lease: {winners:?}"
        );
        let held = store.request(&id).await.expect("read").expect("exists");
        assert_eq!(
            held.lease_owner.as_deref(),
            winners.first().map(String::as_str),
            "round {round}: the row names the one winner"
        );
    }
}

/// Someone holds the chain's head in an open transaction (only PostgreSQL lets a second writer
/// in to find it so): a change still commits, but its pass cannot finish, and once it has
/// tried for PASS_LIMIT the store counts the chain as blocked, which refuses filings and
/// decisions and holds applies back. Let go, the next pass chains the change.
#[tokio::test]
async fn a_chaining_pass_held_up_by_a_lock_on_the_head_counts_as_blocked() {
    let db = TestDb::postgres().await;
    let store = db.store.clone();
    let id = request_in(&store, State::Pending, NOW + 60_000).await;
    let head = audit_head_seq(&store).await;
    let mut holder = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("hold the head");

    let mut tx = store.begin().await.expect("begin");
    Store::append_audit(&mut tx, event(&id, AuditAction::Approved))
        .await
        .expect("journaled");
    tx.commit().await.expect("the change commits");
    let began = std::time::Instant::now();
    let chained = tokio::time::timeout(
        breakglass_broker::store::PASS_LIMIT * 4,
        store.chained_all_committed(),
    )
    .await
    .expect("a pass held up gives up");
    assert!(!chained);
    assert!(began.elapsed() >= breakglass_broker::store::PASS_LIMIT / 2);
    assert_eq!(store.chaining_failure(), Some(ChainingFailure::Blocked));

    holder.rollback().await.expect("let go");
    assert!(store.chained_all_committed().await);
    assert_eq!(audit_head_seq(&store).await, head + 1);
    db.store.pool().close().await;
}

/// Only PostgreSQL drops connections under the pool (a restart, a failover, an idle timeout
/// in a proxy); the pool must replace them rather than hand them out dead.
/// SQLite's log is copied into the database beside the writes (no commit does it): while
/// writes go on, the database file itself grows, which nothing else makes it do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_copies_its_log_into_the_database_while_writes_go_on() {
    let db = TestDb::sqlite().await;
    let file = db
        ._dir
        .as_ref()
        .expect("a directory")
        .path()
        .join("store.db");
    let size = || std::fs::metadata(&file).expect("the database file").len();
    let before = size();
    let began = std::time::Instant::now();
    let deadline = began + Duration::from_secs(20);
    // Writes for a while: a copy begins at most once a second.
    while began.elapsed() < Duration::from_millis(1500) || size() == before {
        request_in(&db.store, State::Pending, NOW + 60_000).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            std::time::Instant::now() < deadline,
            "the database file never grew from {before} bytes: the log was never copied"
        );
    }
}

#[tokio::test]
async fn the_store_keeps_working_after_postgres_drops_its_connections() {
    let db = TestDb::postgres().await;
    let id = request_in(&db.store, State::Pending, NOW + 60_000).await;
    let name = db
        .postgres
        .as_ref()
        .map(|p| p.name.clone())
        .expect("postgres");
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("admin");
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
    )
    .bind(&name)
    .fetch_one(&mut admin)
    .await
    .expect("terminate");
    admin.close().await.expect("close");
    assert!(killed >= 1, "the store had connections open");

    // A connection used again within this window is not pinged first (see PING_AFTER_IDLE):
    // a server restart or failover drops connections for longer than that.
    tokio::time::sleep(breakglass_broker::store::PING_AFTER_IDLE).await;
    let stored = db.store.request(&id).await.expect("read after the drop");
    assert_eq!(stored.map(|r| r.state), Some(State::Pending));
    db.store.pool().close().await;
}

async fn an_extension_names_its_original_and_moves_only_a_running_end(store: Store) {
    let original = request_in(&store, State::Active, NOW + 60_000).await;
    let mut extension = new_request("INC-1", NOW + 60_000);
    extension.extends = Some(original.clone());
    let mut tx = store.begin().await.expect("begin");
    Store::insert_request(&mut tx, &extension)
        .await
        .expect("insert");
    let found = Store::extensions_in(&mut tx, &original)
        .await
        .expect("extensions");
    assert_eq!(
        found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec![extension.id.as_str()]
    );
    assert_eq!(found[0].extends.as_deref(), Some(original.as_str()));
    Store::move_expiry(&mut tx, &original, NOW + 7_200_000)
        .await
        .expect("move");
    // Only a running breakglass: the pending extension's own expiry stays unset.
    Store::move_expiry(&mut tx, &extension.id, NOW + 7_200_000)
        .await
        .expect("move");
    tx.commit().await.expect("commit");
    let moved = store
        .request(&original)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(moved.expires_at, Some(NOW + 7_200_000));
    let pending = store
        .request(&extension.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(pending.expires_at, None);
}

async fn a_breakglass_that_ended_waits_for_its_review_until_one_is_written(store: Store) {
    assert_eq!(
        store
            .awaiting_review("alice", "dev-cluster")
            .await
            .expect("look"),
        None
    );
    request_in(&store, State::Rejected, NOW + 60_000).await;
    let ended = request_in(&store, State::Expired, NOW + 60_000).await;
    assert_eq!(
        store
            .awaiting_review("alice", "dev-cluster")
            .await
            .expect("look"),
        Some(ended.clone())
    );
    assert_eq!(
        store
            .awaiting_review("bob", "dev-cluster")
            .await
            .expect("look"),
        None
    );
    assert_eq!(
        store.awaiting_review("alice", "other").await.expect("look"),
        None
    );
    let mut tx = store.begin().await.expect("begin");
    Store::set_review(&mut tx, &ended, "what broke and the postmortem", NOW + 1)
        .await
        .expect("review");
    tx.commit().await.expect("commit");
    let reviewed = store.request(&ended).await.expect("read").expect("exists");
    assert_eq!(
        (reviewed.review.as_deref(), reviewed.reviewed_at),
        (Some("what broke and the postmortem"), Some(NOW + 1))
    );
    assert_eq!(
        store
            .awaiting_review("alice", "dev-cluster")
            .await
            .expect("look"),
        None
    );
}

fn suspect(uid: &str) -> breakglass_broker::domain::unbrokered::Suspect {
    use breakglass_broker::domain::unbrokered::{Member, Reason, Suspect};
    Suspect {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: "prod".into(),
        name: "api".into(),
        uid: uid.into(),
        resource_version: "3".into(),
        reasons: vec![Reason::NotByTheBroker],
        images: vec!["evil@sha256:1".into()],
        writers: vec!["kubectl".into()],
        members: vec![Member {
            kind: "ReplicaSet".into(),
            name: "api-1".into(),
            uid: "rs".into(),
        }],
    }
}

async fn unbrokered_events(store: &Store) -> i64 {
    // Events take their place in the chain just after their commit.
    store.chain_committed().await;
    sqlx::query("SELECT COUNT(*) AS n FROM audit_events WHERE action = 'breakglass.unbrokered'")
        .fetch_one(store.pool())
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

async fn replicas_sighting_one_breakglass_at_once_record_one_finding_and_one_event(store: Store) {
    let seen = suspect("u1");
    let mut racers = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let seen = seen.clone();
        racers.push(tokio::spawn(async move {
            store
                .record_sighting(
                    "t",
                    &seen,
                    NOW + i,
                    breakglass_broker::workers::detect::announce(None),
                )
                .await
        }));
    }
    let mut firsts = 0;
    for racer in racers {
        if racer.await.expect("joins").expect("records").is_some() {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
    assert_eq!(unbrokered_events(&store).await, 1);
    let all = store.findings(None, 10).await.expect("lists");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].members[0]["kind"], "ReplicaSet");
    assert_eq!(store.open_findings().await.expect("counts"), 1);
}

async fn a_finding_ends_with_its_episode_and_is_acknowledged_once(store: Store) {
    let (first, event) = store
        .record_sighting(
            "t",
            &suspect("u1"),
            NOW,
            breakglass_broker::workers::detect::announce(None),
        )
        .await
        .expect("records")
        .expect("a new finding");
    assert_eq!(event.detail["finding"], first.id.as_str());
    assert!(
        store
            .record_sighting(
                "t",
                &suspect("u1"),
                NOW + 5,
                breakglass_broker::workers::detect::announce(None)
            )
            .await
            .expect("records")
            .is_none()
    );
    assert_eq!(
        store
            .finding(&first.id)
            .await
            .expect("reads")
            .expect("there")
            .last_seen,
        NOW + 5
    );
    // Still there: the episode goes on.
    assert_eq!(
        store
            .end_episodes("t", &["u1".into()], NOW + 6)
            .await
            .expect("ends"),
        0
    );
    assert_eq!(
        store.end_episodes("t", &[], NOW + 7).await.expect("ends"),
        1
    );
    let (second, _) = store
        .record_sighting(
            "t",
            &suspect("u1"),
            NOW + 8,
            breakglass_broker::workers::detect::announce(None),
        )
        .await
        .expect("records")
        .expect("a second episode");
    assert_eq!((first.episode, second.episode), (1, 2));
    let person = ("https://issuer.example", "sub-dave");
    let acked = store
        .acknowledge_finding(&first.id, "dave", person, "known drill", NOW + 9)
        .await
        .expect("acknowledges");
    let (finding, audit) = acked.expect("was open");
    assert_eq!(finding.state, "acknowledged");
    assert_eq!(audit.action, "alert.acknowledged");
    assert_eq!(audit.actor_subject.as_deref(), Some("sub-dave"));
    assert!(
        store
            .acknowledge_finding(&first.id, "erin", person, "again", NOW + 10)
            .await
            .expect("runs")
            .is_none()
    );
    let open = store
        .findings(Some(breakglass_broker::store::FindingState::Open), 10)
        .await
        .expect("lists");
    assert_eq!(
        open.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        vec![second.id.as_str()]
    );
    let removed = json!([{"kind": "Deployment", "name": "api"}]);
    assert!(
        store
            .record_removal(&second, &removed, NOW + 11)
            .await
            .expect("records")
            .is_some()
    );
    assert!(
        store
            .record_removal(&second, &removed, NOW + 12)
            .await
            .expect("records")
            .is_none()
    );
}

fn deployment_ref(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: "prod".into(),
        name: name.into(),
    }
}

/// Who holds each of the objects named, in order (None: nobody).
async fn holders(store: &Store, names: &[&str]) -> Vec<Option<String>> {
    let mut found = Vec::new();
    for name in names {
        let row = sqlx::query(
            "SELECT request_id FROM object_holds WHERE target = 'dev-cluster' AND name = $1",
        )
        .bind(*name)
        .fetch_optional(store.pool())
        .await
        .expect("holds");
        found.push(row.map(|r| r.try_get("request_id").expect("request_id")));
    }
    found
}

/// One breakglass per object: a request that meets one object held by another takes none of
/// its objects (not even those listed before or after it), and holding again what it already
/// holds is no conflict with itself.
async fn a_request_meeting_a_held_object_takes_none_of_its_objects(store: Store) {
    let first = request_in(&store, State::Pending, NOW + 60_000).await;
    let second = request_in(&store, State::Pending, NOW + 60_000).await;
    let read = |id: String| {
        let store = store.clone();
        async move { store.request(&id).await.expect("read").expect("exists") }
    };
    let (first, second) = (read(first).await, read(second).await);

    let mut tx = store.begin().await.expect("begin");
    let holder = Store::hold_objects(&mut tx, &first, &[deployment_ref("api")])
        .await
        .expect("hold");
    assert_eq!(holder, None, "nobody held it");
    tx.commit().await.expect("commit");

    let mut tx = store.begin().await.expect("begin");
    let wanted = [
        deployment_ref("web"),
        deployment_ref("api"),
        deployment_ref("db"),
    ];
    let holder = Store::hold_objects(&mut tx, &second, &wanted)
        .await
        .expect("hold");
    assert_eq!(
        holder.as_deref(),
        Some(first.id.as_str()),
        "names the holder"
    );
    tx.commit().await.expect("commit");
    assert_eq!(
        holders(&store, &["web", "api", "db"]).await,
        vec![None, Some(first.id.clone()), None],
        "the second request took nothing"
    );

    let mut tx = store.begin().await.expect("begin");
    let holder = Store::hold_objects(&mut tx, &first, &[deployment_ref("api")])
        .await
        .expect("hold again");
    assert_eq!(holder, None, "its own hold is no conflict");
    tx.commit().await.expect("commit");
}
