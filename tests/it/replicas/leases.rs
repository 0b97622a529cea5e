//! Leases at the worker level, with brokers in this process on a shared manual clock so that
//! the test, not the wall clock, decides when a lease would run out: the heartbeat keeps the
//! lease through an apply slower than the lease, and a worker whose lease may have run out (3 s
//! before its end, by its own clock) stops calling the cluster. Takeover after a crash is in
//! `crashes.rs`, with real processes and real time.

use std::time::Duration;

use breakglass_broker::clock::Clock;
use breakglass_broker::dev::sim_cluster::Failure;

use super::{Infra, deployments, lease_of, pg};
use crate::store::FreshPostgres;

/// The broker's lease (15 s), renewal period (5 s) and stop margin (3 s), as the README gives them.
const LEASE: Duration = Duration::from_secs(15);
const MARGIN: Duration = Duration::from_secs(3);

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).expect("small")
}

/// Writes are held, before they are served, until the failure is cleared.
fn hold_writes(after_commit: bool) -> Failure {
    Failure {
        delay_ms: 600_000,
        writes_only: true,
        after_commit,
        ..Failure::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_keeps_the_lease_through_an_apply_slower_than_the_lease_and_no_other_replica_takes_over()
 {
    let infra = Infra::start().await;
    let database = FreshPostgres::create().await;
    let config = infra.config("replica", &database.url);
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let (manifest, names) = deployments("slow", 1);
    let mut db = pg(&database.url).await;

    let holder = infra.broker_in_process(&config, clock.clone()).await;
    infra.set_failure(Some(hold_writes(false))).await;
    let id = infra.file_and_approve(&holder.url, &manifest, 60).await;
    infra.wait_for_held(1, "the write").await;
    let (owner, _) = lease_of(&mut db, &id).await;
    let owner = owner.expect("the holder's lease");
    // A second replica on the same clock, which would take the work over if the lease ran out.
    let other = infra.broker_in_process(&config, clock.clone()).await;

    // Twice the lease goes by while the write is held, in steps of half a renewal period.
    let mut elapsed = Duration::ZERO;
    while elapsed < LEASE * 2 {
        clock.advance(Duration::from_millis(2_500));
        elapsed += Duration::from_millis(2_500);
        // The last renewal is at most one period (5 s) old: the lease runs 10 s more at least.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (now_owner, until) = lease_of(&mut db, &id).await;
            assert_eq!(
                now_owner.as_deref(),
                Some(owner.as_str()),
                "after {elapsed:?} the holder still holds the lease"
            );
            if until.expect("a lease") >= clock.now() + millis(LEASE) - 5_000 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "after {elapsed:?} the heartbeat did not renew the lease: it runs out at {until:?}, now is {}",
                clock.now()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            infra.failure_state().await.held,
            1,
            "after {elapsed:?} nobody else writes"
        );
    }
    assert_eq!(infra.write_counts(&names).await, [(0, 0, 0)]);

    infra.set_failure(None).await;
    infra
        .wait_for_states(
            &other.url,
            &std::collections::HashMap::from([(id.clone(), "active")]),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        infra.write_counts(&names).await,
        [(1, 0, 1)],
        "applied once"
    );
    let actions = infra.audit_actions(&holder.url, &id).await;
    assert_eq!(
        (
            super::count(&actions, "request.applying"),
            super::count(&actions, "request.applied")
        ),
        (1, 1),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_may_have_run_out_makes_no_further_write_and_the_work_resumes_later() {
    let infra = Infra::start().await;
    let database = FreshPostgres::create().await;
    let config = infra.config("replica", &database.url);
    let clock = Clock::manual(chrono::Utc::now().timestamp_millis());
    let (manifest, names) = deployments("margin", 2);
    let mut db = pg(&database.url).await;

    let broker = infra.broker_in_process(&config, clock.clone()).await;
    infra.set_failure(Some(hold_writes(true))).await;
    let id = infra.file_and_approve(&broker.url, &manifest, 60).await;
    infra
        .wait_for_writes(&names, &[(1, 0, 1), (0, 0, 0)], "the first write")
        .await;
    infra.wait_for_held(1, "the first write's answer").await;

    // Renewals stall: the request's row is locked, as by a database that does not answer.
    let mut locker = pg(&database.url).await;
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    let (_, until): (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT lease_owner, lease_until FROM requests WHERE id = $1 FOR UPDATE")
            .bind(&id)
            .fetch_one(&mut locker)
            .await
            .expect("lock the row");
    let until = until.expect("a lease");
    // Into the last 3 s of the lease, by the worker's clock: still its own, but it may not be
    // by the time a write lands. The heartbeat wakes and waits for the row.
    let into_margin = until - millis(MARGIN) + 1_000 - clock.now();
    clock.advance(Duration::from_millis(
        u64::try_from(into_margin).expect("ahead"),
    ));
    assert!(clock.now() < until, "the lease has not run out");
    let name = database
        .url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&name)
        .fetch_one(&mut db)
        .await
        .expect("activity");
        if waiting >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the heartbeat never tried to renew"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The first write's answer arrives: the worker records it and must stop there.
    infra.set_failure(None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let recorded: Option<String> = sqlx::query_scalar(
            "SELECT applied_version FROM applied_objects WHERE request_id = $1 AND position = 0",
        )
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .expect("applied object");
        if recorded.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first write's answer was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next write would follow at once; give a busy machine ample time to make it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        infra.write_counts(&names).await,
        [(1, 0, 1), (0, 0, 0)],
        "no write once the lease may have run out"
    );
    assert_eq!(infra.state_of(&broker.url, &id).await, "approved");

    // The database answers again and the lease runs out: the work resumes and writes only what
    // is missing.
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    clock.advance(LEASE * 2);
    infra
        .wait_for_states(
            &broker.url,
            &std::collections::HashMap::from([(id.clone(), "active")]),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(infra.write_counts(&names).await, [(1, 0, 1), (1, 0, 1)]);
    let actions = infra.audit_actions(&broker.url, &id).await;
    assert_eq!(
        (
            super::count(&actions, "request.applying"),
            super::count(&actions, "request.applied")
        ),
        (1, 1),
        "{actions:?}"
    );
}
