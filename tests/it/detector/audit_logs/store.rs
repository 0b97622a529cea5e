//! What the reader keeps in the database, the same on SQLite and PostgreSQL: its cursor, which
//! requests were live when a write was made, and one finding per object from the log.

use breakglass_broker::workers::detect::announce;

use super::*;

/// A request filed at `created_at` whose one object the broker wrote as `uid`, in `state`
/// (ended at `ended_at` when final).
async fn applied(store: &Store, uid: &str, created_at: i64, state: &str, ended_at: i64) {
    use breakglass_broker::domain::State;
    use breakglass_broker::store::{AppliedObject, NewRequest};
    use breakglass_broker::targets::Written;
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = store.begin().await.expect("begin");
    Store::insert_request(
        &mut tx,
        &NewRequest {
            id: id.clone(),
            target: GKE.into(),
            namespace: "prod".into(),
            ticket: "INC-1".into(),
            justification: "payments API is down".into(),
            requester_issuer: "https://issuer.example".into(),
            requester_subject: "alice".into(),
            requester_name: "alice".into(),
            manifest: "kind: Deployment".into(),
            objects: "[]".into(),
            duration_seconds: 3600,
            digest: "d1g3st".into(),
            created_at,
            decide_by: created_at + 1_800_000,
            extends: None,
        },
    )
    .await
    .expect("filed");
    let object = AppliedObject {
        position: 0,
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: "prod".into(),
        name: uid.into(),
        before_apply: None,
        applied_version: None,
        applied_uid: None,
    };
    Store::insert_applied_object(&mut tx, &id, &object)
        .await
        .expect("recorded");
    let state = State::parse(state).expect("a state");
    Store::set_state(&mut tx, &id, state, ended_at)
        .await
        .expect("moved");
    tx.commit().await.expect("commit");
    let written = Written {
        version: "1".into(),
        uid: Some(uid.into()),
    };
    store
        .record_applied_version(&id, 0, &written)
        .await
        .expect("uid recorded");
}

async fn the_reader_keeps_its_cursor_and_reports_an_object_once(store: Store) {
    use breakglass_broker::domain::unbrokered::{Reason, Suspect};
    const AT: i64 = 1_900_000_000_000;
    assert_eq!(store.audit_log_cursor(GKE).await.expect("reads"), None);
    store.set_audit_log_cursor(GKE, AT, AT).await.expect("kept");
    store
        .set_audit_log_cursor(GKE, AT + 5, AT)
        .await
        .expect("moved");
    assert_eq!(
        store.audit_log_cursor(GKE).await.expect("reads"),
        Some(AT + 5)
    );
    assert_eq!(store.audit_log_cursor("other").await.expect("reads"), None);

    // A request live at the write, one that ended before it, one filed after it.
    applied(&store, "live", AT - 10, "active", AT - 10).await;
    applied(&store, "ended-after", AT - 10, "expired", AT + 10).await;
    applied(&store, "ended-before", AT - 10, "closed", AT - 5).await;
    applied(&store, "filed-after", AT + 1, "active", AT + 1).await;
    let uids: Vec<String> = [
        "live",
        "ended-after",
        "ended-before",
        "filed-after",
        "nobody",
    ]
    .map(String::from)
    .into();
    let live = store.applied_live_at(&uids, AT).await.expect("reads");
    let mut live: Vec<&str> = live.iter().map(String::as_str).collect();
    live.sort_unstable();
    assert_eq!(live, ["ended-after", "live"]);

    let suspect = Suspect {
        api_version: "v1".into(),
        kind: "Pod".into(),
        namespace: "prod".into(),
        name: "miner".into(),
        uid: "p1".into(),
        resource_version: String::new(),
        reasons: vec![Reason::SeenOnlyInAuditLogs {
            insert_id: "e1".into(),
        }],
        images: vec![EVIL.into()],
        writers: vec![DEPLOYER.into()],
        members: Vec::new(),
    };
    assert!(!store.has_finding(GKE, "p1").await.expect("reads"));
    let first = store
        .record_first_sighting(GKE, &suspect, AT, announce(None))
        .await
        .expect("records");
    assert!(first.is_some());
    assert!(store.has_finding(GKE, "p1").await.expect("reads"));
    // Its episode ends (the detector no longer sees it); the log's entry is read again.
    store.end_episodes(GKE, &[], AT + 1).await.expect("ends");
    let again = store
        .record_first_sighting(GKE, &suspect, AT + 2, announce(None))
        .await
        .expect("records");
    assert!(again.is_none(), "one finding per object from the log");
    let member = breakglass_broker::domain::unbrokered::Member {
        kind: "Pod".into(),
        name: "miner-a1".into(),
        uid: "p2".into(),
    };
    store
        .add_finding_members(GKE, "p1", std::slice::from_ref(&member))
        .await
        .expect("adds");
    store
        .add_finding_members(GKE, "p1", &[member])
        .await
        .expect("adds nothing new");
    let findings = store.findings(None, 10).await.expect("lists");
    assert_eq!(findings.len(), 1);
    assert_eq!(
        findings[0].members,
        json!([{ "kind": "Pod", "name": "miner-a1", "uid": "p2" }])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_keeps_its_cursor_and_reports_an_object_once_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    the_reader_keeps_its_cursor_and_reports_an_object_once(
        Store::connect(&url).await.expect("sqlite"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_keeps_its_cursor_and_reports_an_object_once_on_postgresql() {
    let database = crate::store::FreshPostgres::create().await;
    let store = Store::connect(&database.url).await.expect("postgres");
    the_reader_keeps_its_cursor_and_reports_an_object_once(store.clone()).await;
    store.pool().close().await;
}
