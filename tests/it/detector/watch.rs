//! The detector watches Kubernetes targets rather than listing them again and again: no list
//! while nothing changes, a write still found within five seconds, a watch that fell behind
//! the cluster's history lists again, and the backstop lists in full on its interval.

use std::collections::BTreeMap;

use breakglass_broker::dev::sim_cluster::{ReadCount, SimCluster};

use super::*;

/// The kinds the detector follows, by the names the simulated cluster counts reads under.
const KINDS: [&str; 7] = [
    "pods",
    "deployments.apps",
    "replicasets.apps",
    "statefulsets.apps",
    "daemonsets.apps",
    "jobs.batch",
    "cronjobs.batch",
];

fn reads(sim: &SimCluster) -> BTreeMap<&'static str, ReadCount> {
    let all = sim.reads();
    KINDS
        .iter()
        .map(|kind| (*kind, all.get(*kind).copied().unwrap_or_default()))
        .collect()
}

/// Waits until every kind has been listed and is being watched (a watch starts only after
/// its list is done) by at least `watchers` detectors.
async fn watching(sim: &SimCluster, watchers: u64) {
    let start = Instant::now();
    loop {
        let now = reads(sim);
        if now
            .values()
            .all(|r| r.lists >= watchers && r.watches >= watchers)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the detector is not watching every kind: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detector_lists_nothing_while_the_cluster_is_quiet_and_still_finds_a_write_within_five_seconds()
 {
    let env = TestEnv::start().await;
    env.env.sim.set_admission_policy(false);
    watching(&env.env.sim, 1).await;
    let before = reads(&env.env.sim);

    // Listing every second, as a poll would, is seven lists a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet = reads(&env.env.sim);
    let (status, deployment) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("watched"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let (finding, took) = finding_for(&env, uid, Duration::from_secs(5)).await;

    assert_eq!(
        quiet, before,
        "no list and no new watch while nothing changed"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(finding["name"], "watched");
    assert_eq!(
        reads(&env.env.sim),
        before,
        "found through the watch, without a list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_resumes_after_the_clusters_history_moved_past_it_lists_again_and_finds_a_write()
 {
    let env = TestEnv::start().await;
    env.env.sim.set_admission_policy(false);
    watching(&env.env.sim, 1).await;
    let before = reads(&env.env.sim);
    // Pods that are no breakglass: after them, the last version the Deployment watch saw is
    // older than anything the cluster keeps.
    env.env.sim.set_watch_history(3);
    for n in 0..5 {
        let (status, pod) = deploy(
            &env,
            "/api/v1/namespaces/default/pods",
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": format!("plain-{n}") },
                "spec": { "containers": [{ "name": "app", "image": ATTESTED }] },
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{pod}");
    }

    // As when the API server restarts: every watch resumes from the last version it saw.
    env.env.sim.end_watches();
    let (status, deployment) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("after-410"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let (_, took) = finding_for(&env, uid, Duration::from_secs(5)).await;

    let after = reads(&env.env.sim);
    let deployments = "deployments.apps";
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        after[deployments].expired_watches > before[deployments].expired_watches,
        "the Deployment watch was answered 410: {after:?}"
    );
    assert!(
        after[deployments].lists > before[deployments].lists,
        "and listed again: {after:?}"
    );
    assert_eq!(
        after["pods"].expired_watches, before["pods"].expired_watches,
        "the Pod watch had seen the newest version and resumed without a list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watch_lists_its_kind_in_full_again_at_the_backstop_interval() {
    let env = TestEnv::start().await;
    watching(&env.env.sim, 1).await;
    let before = reads(&env.env.sim);
    let detector = Detector::new(
        env.env.broker.state.store.clone(),
        env.clock.clone(),
        env.env.broker.state.lifecycle.targets.clone(),
    );
    let running = tokio::spawn(detector.run_relisting_every(Duration::from_secs(1)));

    // Its first list, and at least two more a second apart.
    let start = Instant::now();
    loop {
        let now = reads(&env.env.sim);
        if now
            .iter()
            .all(|(kind, r)| r.lists >= before[kind].lists + 3)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "no list at the backstop: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_broker_may_not_read_across_the_cluster_it_watches_each_namespace_and_a_blind_replica_ends_nothing()
 {
    let env = TestEnv::start().await;
    env.env.sim.set_admission_policy(false);
    watching(&env.env.sim, 1).await;
    // From now on the broker may read only in the target's namespaces. The broker's own
    // detector, whose watches cannot resume across the cluster, is blind from here on.
    env.env.sim.set_cluster_wide_reads(false);
    env.env.sim.end_watches();
    let replica = Detector::new(
        env.env.broker.state.store.clone(),
        env.clock.clone(),
        env.env.broker.state.lifecycle.targets.clone(),
    );
    let running = tokio::spawn(replica.run());

    let deployment = labelled_deployment_with_pods(&env, "namespaced").await;
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let (finding, took) = finding_for(&env, uid, Duration::from_secs(5)).await;
    // Long enough for the blind detector to have evaluated its picture, which lacks it.
    a_few_scans().await;
    let all = alerts(&env, "").await;
    running.abort();

    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(finding["namespace"], "prod");
    assert_eq!(all.len(), 1, "one finding: {all:?}");
    assert!(
        all[0]["gone_at"].is_null(),
        "a detector that cannot see the cluster must not end it: {all:?}"
    );
}
