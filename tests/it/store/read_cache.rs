//! The read cache behind the request page, the API's read of a request and page sessions:
//! whatever a replica writes shows in its own views at once, what another replica writes shows
//! within the cache's time to live, and decisions never read it.

use std::time::{Duration, Instant};

use breakglass_broker::clock::Millis;
use breakglass_broker::domain::{AuditAction, State};
use breakglass_broker::store::{
    DELIVERED, NewMessage, READ_CACHE_TTL, RequestPage, RequestRead, Session, Store,
};

use super::{NOW, TestDb, approval, event, request_in};

const EVENTS: i64 = 200;

async fn page(store: &Store, id: &str) -> std::sync::Arc<RequestPage> {
    store
        .request_page(id, EVENTS)
        .await
        .expect("page read")
        .expect("the request exists")
}

async fn read(store: &Store, id: &str) -> std::sync::Arc<RequestRead> {
    store
        .request_read(id)
        .await
        .expect("API read")
        .expect("the request exists")
}

fn session(expires_at: Millis) -> Session {
    Session {
        issuer: "https://issuer.example".into(),
        subject: "bob".into(),
        name: "bob".into(),
        groups: vec!["approvers".into()],
        csrf_token: "csrf".into(),
        signed_in_at: NOW,
        expires_at,
    }
}

/// Each kind of write, in a transaction or straight on the pool, right after the views were
/// read (and so cached): the next view shows it.
async fn every_write_of_this_replica_shows_in_its_views_at_once(store: Store) {
    let id = request_in(&store, State::Pending, NOW + 60_000).await;
    assert!(page(&store, &id).await.approvals.is_empty());
    assert!(read(&store, &id).await.approvals.is_empty());

    // A decision with its audit event and its notification, in one transaction.
    let mut tx = store.begin().await.expect("begin");
    assert!(
        Store::insert_approval(&mut tx, &id, &approval("bob"))
            .await
            .expect("approval")
    );
    Store::append_audit(&mut tx, event(&id, AuditAction::Approved))
        .await
        .expect("audit");
    Store::insert_message(
        &mut tx,
        &NewMessage {
            id: "m1",
            endpoint: "slack",
            destination: "d1",
            event_type: "request.approved",
            seq: 1,
            request_id: Some(&id),
            body: "{}",
            created_at: NOW,
            due_at: NOW,
        },
    )
    .await
    .expect("message");
    // Not yet committed: views still show the request as it was.
    assert!(page(&store, &id).await.approvals.is_empty());
    tx.commit().await.expect("commit");
    let shown = page(&store, &id).await;
    assert_eq!(shown.approvals.len(), 1);
    assert!(
        shown.events.iter().any(|e| e.action == "request.approved"),
        "the decision's event is on the page"
    );
    assert_eq!(shown.messages.len(), 1);
    let api = read(&store, &id).await;
    assert_eq!(api.approvals.len(), 1);
    assert_eq!(api.messages.len(), 1);

    // A state change in a transaction.
    let mut tx = store.begin().await.expect("begin");
    Store::set_state(&mut tx, &id, State::Approved, NOW)
        .await
        .expect("state");
    tx.commit().await.expect("commit");
    assert_eq!(page(&store, &id).await.request.state, State::Approved);
    assert_eq!(read(&store, &id).await.request.state, State::Approved);

    // A transaction rolled back changes nothing, and shows nothing.
    let mut tx = store.begin().await.expect("begin");
    Store::record_error(&mut tx, &id, "never committed")
        .await
        .expect("error");
    drop(tx);
    assert_eq!(read(&store, &id).await.request.last_error, None);

    // Writes on the pool: the worker's lease and its retry...
    assert!(
        store
            .claim(&id, State::Approved, "worker-1", NOW, NOW + 30_000)
            .await
            .expect("claim")
            .is_some()
    );
    assert_eq!(
        read(&store, &id).await.request.lease_owner.as_deref(),
        Some("worker-1")
    );
    store
        .record_retry(&id, "worker-1", "the cluster did not answer", NOW + 1_000)
        .await
        .expect("retry");
    let api = read(&store, &id).await;
    assert_eq!(
        api.request.last_error.as_deref(),
        Some("the cluster did not answer")
    );
    assert_eq!(api.request.lease_owner, None);

    // ...the notifier's delivery...
    let claimed = store
        .claim_message("slack", "d1", "notifier-1", NOW, NOW + 30_000)
        .await
        .expect("claim message")
        .expect("the message is due");
    assert_eq!(page(&store, &id).await.messages[0].done_at, None);
    assert!(
        store
            .finish_message(&claimed.id, "notifier-1", NOW, DELIVERED, None)
            .await
            .expect("finish")
    );
    assert_eq!(
        page(&store, &id).await.messages[0].outcome.as_deref(),
        Some(DELIVERED)
    );
    assert_eq!(
        read(&store, &id).await.messages[0].outcome.as_deref(),
        Some(DELIVERED)
    );

    // ...and a look at the cluster.
    assert!(page(&store, &id).await.look.is_none());
    assert!(
        store
            .claim_look(&id, NOW, NOW - 10_000)
            .await
            .expect("claim look")
    );
    store
        .save_look(&id, NOW, r#"[{"admitted":true}]"#)
        .await
        .expect("save look");
    assert_eq!(
        page(&store, &id).await.look,
        Some((NOW, r#"[{"admitted":true}]"#.to_owned()))
    );
}

/// A session shows pages until it is deleted on this replica, and never past its expiry.
async fn a_session_ended_on_this_replica_shows_no_page_at_once(store: Store) {
    let expires_at = NOW + 60_000;
    assert!(
        store
            .session_for_view("hash-1", NOW)
            .await
            .expect("read")
            .is_none()
    );
    // Signing in (an insert) is seen although "no such session" was just read.
    store
        .insert_session("hash-1", &session(expires_at), NOW)
        .await
        .expect("insert");
    let shown = store
        .session_for_view("hash-1", NOW)
        .await
        .expect("read")
        .expect("the new session");
    assert_eq!(shown.subject, "bob");
    // Past its expiry it is refused even while the cache holds it.
    assert!(
        store
            .session_for_view("hash-1", expires_at)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .session_for_view("hash-1", NOW)
            .await
            .expect("read")
            .is_some()
    );
    store.delete_session("hash-1").await.expect("delete");
    assert!(
        store
            .session_for_view("hash-1", NOW)
            .await
            .expect("read")
            .is_none(),
        "signed out on this replica: gone at once"
    );
}

/// Two stores on one database, as two replicas: what one writes shows in the other's views
/// within the time to live, and the other's decisions (its uncached reads) see it at once.
async fn another_replicas_write_shows_within_the_time_to_live(url: String, here: Store) {
    let there = Store::connect(&url).await.expect("a second replica");
    let id = request_in(&here, State::Pending, NOW + 60_000).await;
    here.insert_session("hash-2", &session(NOW + 60_000), NOW)
        .await
        .expect("session");
    assert!(read(&here, &id).await.approvals.is_empty());
    assert!(page(&here, &id).await.approvals.is_empty());
    assert!(
        here.session_for_view("hash-2", NOW)
            .await
            .expect("read")
            .is_some()
    );

    let mut tx = there.begin().await.expect("begin");
    Store::insert_approval(&mut tx, &id, &approval("carol"))
        .await
        .expect("approval");
    tx.commit().await.expect("commit");
    there
        .delete_session("hash-2")
        .await
        .expect("sign out there");
    let written = Instant::now();

    // What decides reads the database: the approval and the sign-out are there already.
    assert_eq!(here.approvals(&id).await.expect("approvals").len(), 1);
    assert!(here.session("hash-2", NOW).await.expect("read").is_none());

    // Views catch up within the time to live (plus a busy machine's margin).
    let bound = READ_CACHE_TTL + Duration::from_millis(750);
    loop {
        let caught_up = read(&here, &id).await.approvals.len() == 1
            && page(&here, &id).await.approvals.len() == 1
            && here
                .session_for_view("hash-2", NOW)
                .await
                .expect("read")
                .is_none();
        if caught_up {
            break;
        }
        assert!(
            written.elapsed() < bound,
            "views still stale {:?} after another replica wrote",
            written.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    there.pool().close().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_of_this_replica_shows_in_its_views_at_once() {
        let db = super::TestDb::sqlite().await;
        super::every_write_of_this_replica_shows_in_its_views_at_once(db.store.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_ended_on_this_replica_shows_no_page_at_once() {
        let db = super::TestDb::sqlite().await;
        super::a_session_ended_on_this_replica_shows_no_page_at_once(db.store.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_replicas_write_shows_within_the_time_to_live() {
        let db = super::TestDb::sqlite().await;
        super::another_replicas_write_shows_within_the_time_to_live(
            db.url.clone(),
            db.store.clone(),
        )
        .await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_of_this_replica_shows_in_its_views_at_once() {
        let db = super::TestDb::postgres().await;
        super::every_write_of_this_replica_shows_in_its_views_at_once(db.store.clone()).await;
        db.store.pool().close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_ended_on_this_replica_shows_no_page_at_once() {
        let db = super::TestDb::postgres().await;
        super::a_session_ended_on_this_replica_shows_no_page_at_once(db.store.clone()).await;
        db.store.pool().close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_replicas_write_shows_within_the_time_to_live() {
        let db = super::TestDb::postgres().await;
        super::another_replicas_write_shows_within_the_time_to_live(
            db.url.clone(),
            db.store.clone(),
        )
        .await;
        db.store.pool().close().await;
    }
}
