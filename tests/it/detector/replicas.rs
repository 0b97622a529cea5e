//! Several detectors on one database, and a restart: one finding per object and episode.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_database_record_one_finding_and_a_restart_finds_it_again_without_a_duplicate()
 {
    let env = TestEnv::start().await;
    let url = format!(
        "sqlite://{}?mode=rwc",
        env.dir.path().join("broker.db").display()
    );
    let targets = env.env.broker.state.lifecycle.targets.clone();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = Store::connect(&url).await.expect("the same database");
        let detector = Detector::new(store, env.clock.clone(), targets.clone());
        replicas.push(tokio::spawn(detector.run()));
    }
    env.env.sim.set_admission_policy(false);
    let deployment = labelled_deployment_with_pods(&env, "miner").await;
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    finding_for(&env, uid, Duration::from_secs(5)).await;
    a_few_scans().await;
    assert_eq!(alerts(&env, "").await.len(), 1);
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 1);
    for replica in replicas {
        replica.abort();
    }
    // A fresh process on the same database: it sees the object again and adds nothing.
    let restarted = Detector::new(
        Store::connect(&url).await.expect("store"),
        env.clock.clone(),
        targets.clone(),
    );
    env.clock.advance(Duration::from_secs(60));
    let entry = targets.get("dev-cluster").expect("target");
    let report = restarted.scan(entry).await.expect("scans");
    assert_eq!(report.seen, 1);
    assert!(report.new.is_empty());
    let all = alerts(&env, "").await;
    assert_eq!(all.len(), 1);
    assert_eq!(audit_count(&env, "breakglass.unbrokered").await, 1);
    assert_eq!(
        all[0]["last_seen"],
        breakglass_broker::clock::rfc3339(env.clock.now())
    );
    // Gone, then back: a new episode, a new finding.
    let deleted = env
        .http
        .delete(format!(
            "{}/apis/apps/v1/namespaces/prod/deployments/miner",
            env.env.cluster_url
        ))
        .bearer_auth(&env.env.deployer.token)
        .send()
        .await
        .expect("answers");
    assert_eq!(deleted.status(), StatusCode::OK);
    assert!(restarted.scan(entry).await.expect("scans").new.is_empty());
    let (status, again) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("miner"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(again["metadata"]["uid"], uid);
    let report = restarted.scan(entry).await.expect("scans");
    assert!(report.new.len() <= 1);
    finding_for(
        &env,
        again["metadata"]["uid"].as_str().expect("uid"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(alerts(&env, "").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgresql_scanning_at_once_record_one_finding_per_object() {
    let env = TestEnv::start().await;
    let database = crate::store::FreshPostgres::create().await;
    let targets = env.env.broker.state.lifecycle.targets.clone();
    let entry = targets.get("dev-cluster").expect("target").clone();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let store = Store::connect(&database.url).await.expect("postgres");
        replicas.push(Detector::new(store, env.clock.clone(), targets.clone()));
    }
    env.env.sim.set_admission_policy(false);
    labelled_deployment_with_pods(&env, "miner").await;
    let (status, other) = deploy(
        &env,
        "/apis/apps/v1/namespaces/default/deployments",
        &labelled("miner"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    // Every replica scans at the same moment, three rounds.
    let mut new = 0;
    for _ in 0..3 {
        let scans = replicas.iter().map(|r| {
            let (r, entry) = (r.clone(), entry.clone());
            tokio::spawn(async move { r.scan(&entry).await.expect("scans") })
        });
        for scan in futures_util::future::join_all(scans).await {
            let report = scan.expect("joins");
            assert_eq!(report.seen, 2);
            new += report.new.len();
        }
    }
    assert_eq!(new, 2, "each object recorded once, by one replica");
    let store = Store::connect(&database.url).await.expect("postgres");
    let findings = store.findings(None, 10).await.expect("lists");
    assert_eq!(findings.len(), 2);
    let namespaces: std::collections::BTreeSet<&str> =
        findings.iter().map(|f| f.namespace.as_str()).collect();
    assert_eq!(namespaces, ["default", "prod"].into());
    // The replicas' events take their place in the chain just after their commits.
    store.chain_committed().await;
    let events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'breakglass.unbrokered'",
    )
    .fetch_one(store.pool())
    .await
    .expect("counts");
    assert_eq!(events, 2);
    store.pool().close().await;
}
