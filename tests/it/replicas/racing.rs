//! Many requests racing over three replicas: each applied once and undone once.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::task::JoinSet;

use super::{Infra, count};
use crate::store::FreshPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_apply_and_undo_each_of_fifty_racing_requests_exactly_once() {
    const TOTAL: usize = 50;
    /// These run for a minute and expire, with all three workers waking for the deadline;
    /// the others are closed early by their requester.
    const EXPIRING: usize = 5;
    let infra = Infra::start().await;
    let database = FreshPostgres::create().await;
    let config = infra.config("replica", &database.url);
    // Started together, so they also race to migrate the fresh database.
    let (a, b, c) = tokio::join!(
        infra.broker(&config, "replica-a"),
        infra.broker(&config, "replica-b"),
        infra.broker(&config, "replica-c"),
    );
    let replicas: Vec<String> = [&a, &b, &c].iter().map(|b| b.url.clone()).collect();
    let infra = std::sync::Arc::new(infra);

    // Each request is filed on one replica and its two approvals race on the two others; a
    // dozen requests at a time, enough to overlap everywhere without drowning a CI machine.
    let mut filing = JoinSet::new();
    let at_once = std::sync::Arc::new(tokio::sync::Semaphore::new(12));
    for i in 0..TOTAL {
        let infra = infra.clone();
        let replicas = replicas.clone();
        let at_once = at_once.clone();
        filing.spawn(async move {
            let _turn = at_once.acquire().await.expect("semaphore");
            let minutes = if i < EXPIRING { 1 } else { 60 };
            let (id, digest) = infra
                .file(&replicas[i % 3], &format!("race-{i}"), minutes)
                .await;
            let (bob, carol) = tokio::join!(
                infra.approve(&replicas[(i + 1) % 3], "bob", &id, &digest),
                infra.approve(&replicas[(i + 2) % 3], "carol", &id, &digest),
            );
            assert_eq!(bob.0, StatusCode::OK, "{}", bob.1);
            assert_eq!(carol.0, StatusCode::OK, "{}", carol.1);
            (i, id)
        });
    }
    let mut ids = vec![String::new(); TOTAL];
    while let Some(done) = filing.join_next().await {
        let (i, id) = done.expect("filing task");
        ids[i] = id;
    }
    let all_active: HashMap<String, &str> = ids.iter().map(|id| (id.clone(), "active")).collect();
    // A deadline for a busy two-core CI machine running other tests too; this normally takes
    // a few seconds. What is asserted is the count of writes below, not the speed.
    infra
        .wait_for_states(&replicas[0], &all_active, Duration::from_secs(180))
        .await;

    // The requester closes the others, half of them twice at once on two replicas.
    let mut closing = JoinSet::new();
    for (i, id) in ids.iter().enumerate().skip(EXPIRING) {
        let infra = infra.clone();
        let replicas = replicas.clone();
        let id = id.clone();
        closing.spawn(async move {
            if i % 2 == 0 {
                let (status, body) = infra.close(&replicas[i % 3], &id).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            } else {
                let (first, second) = tokio::join!(
                    infra.close(&replicas[i % 3], &id),
                    infra.close(&replicas[(i + 1) % 3], &id),
                );
                let mut statuses = [first.0, second.0];
                statuses.sort();
                assert_eq!(
                    statuses,
                    [StatusCode::OK, StatusCode::CONFLICT],
                    "one close wins: {} / {}",
                    first.1,
                    second.1
                );
            }
        });
    }
    while let Some(done) = closing.join_next().await {
        done.expect("closing task");
    }
    let ended: HashMap<String, &str> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), if i < EXPIRING { "expired" } else { "closed" }))
        .collect();
    infra
        .wait_for_states(&replicas[1], &ended, Duration::from_secs(300))
        .await;

    let writes = infra.writes().await;
    assert_eq!(writes.len(), TOTAL, "one object per request: {writes:?}");
    for i in 0..TOTAL {
        let written = writes[&format!("race-{i}")];
        assert_eq!(
            (written.applied(), written.deletes, written.total()),
            (1, 1, 2),
            "race-{i} was applied once and undone once"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let actions = infra.audit_actions(&replicas[i % 3], id).await;
        let end = if i < EXPIRING {
            "request.expired"
        } else {
            "request.closed"
        };
        for (action, times) in [
            ("request.approved", 2),
            ("request.fully_approved", 1),
            ("request.applying", 1),
            ("request.applied", 1),
            (end, 1),
        ] {
            assert_eq!(count(&actions, action), times, "{action} in {actions:?}");
        }
    }
    for broker in [a, b, c] {
        let mut proc = broker.proc;
        assert!(proc.is_running(), "{} is still up", proc.name);
    }
}
