//! Time from the last approval's HTTP response to the object existing in the simulated
//! cluster, over 100 requests, against the real dev components on loopback.
//!
//! The broker (with its dev issuer and simulated cluster) runs on a runtime of its own; the
//! client side (HTTP calls, then watching the simulated cluster) runs on another, and waits
//! between looks at the cluster by sleeping its thread for [`POLL`], so the measurement never
//! competes with the broker for a CPU. Each sample is therefore late by at most one `POLL`
//! plus the sleep's overshoot.
//!
//! Run: `cargo bench --bench apply_latency` (set `REQUESTS=N` for another count; CI runs
//! `REQUESTS=5` in the dev profile from `scripts/test`, as a smoke test of the path).

use std::time::{Duration, Instant};

use breakglass_broker::clock::Clock;
use breakglass_broker::dev::sim_cluster::ObjectKey;
use breakglass_broker::dev::{self, DevOptions};
use serde_json::{Value, json};

const IMAGE: &str = "us-docker.pkg.dev/acme/hotfix/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";
/// How long the client sleeps between looks at the simulated cluster.
const POLL: Duration = Duration::from_micros(200);
/// How long one request may take to appear, generous for a busy debug build in CI.
const DEADLINE: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    anyhow::ensure!(count > 0, "REQUESTS must be at least 1");
    anyhow::ensure!(
        count <= 120,
        "REQUESTS must be at most 120: two requesters may file 60 a minute each"
    );
    // The broker's runtime: `dev::start` spawns the servers and the worker onto it, and its
    // worker threads keep running them after `block_on` returns.
    let broker_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("broker")
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let env = broker_runtime.block_on(dev::start(DevOptions {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_owned(),
        clock: Clock::system(),
        decision_max_age: dev::DECISION_MAX_AGE,
    }))?;
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let samples = client_runtime.block_on(measure(&env, count))?;
    drop(broker_runtime);
    report(count, samples);
    Ok(())
}

async fn measure(env: &dev::DevEnv, count: usize) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::new();
    let token = |persona: &'static str| {
        let http = http.clone();
        let issuer = env.issuer.clone();
        async move {
            let body: Value = http
                .get(format!("{issuer}/token?persona={persona}"))
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(body["id_token"].as_str().unwrap_or_default().to_owned())
        }
    };
    // Two requesters in turn: each person may file 60 requests a minute ([limits]).
    let requesters = [token("alice").await?, token("erin").await?];
    let (bob, carol) = (token("bob").await?, token("carol").await?);
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("bench-{i}");
        let manifest = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: \"{IMAGE}\"}}]}}\n"
        );
        let filed: Value = http
            .post(format!("{}/api/v1/requests", env.base_url))
            .bearer_auth(&requesters[i % requesters.len()])
            .json(&json!({"target": "dev-cluster", "namespace": "prod", "manifest": manifest, "ticket": "INC-1", "justification": "benchmarking the apply path", "duration_minutes": 60}))
            .send()
            .await?
            .json()
            .await?;
        let id = filed["id"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(!id.is_empty(), "filing failed: {filed}");
        let digest = filed["digest"].clone();
        for approver in [&bob, &carol] {
            let response = http
                .post(format!("{}/api/v1/requests/{id}/approve", env.base_url))
                .bearer_auth(approver)
                .json(&json!({"digest": digest}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "approve failed: {}",
                response.text().await?
            );
        }
        let answered = Instant::now();
        let key = ObjectKey::new("apps/v1", "Deployment", "prod", &name);
        // Blocking this runtime's only thread is the point: nothing else of the client runs
        // meanwhile, and the sleep leaves the CPU to the broker's threads.
        while env.sim.object(&key).is_none() {
            anyhow::ensure!(
                answered.elapsed() < DEADLINE,
                "request {id} was never applied"
            );
            std::thread::sleep(POLL);
        }
        samples.push(answered.elapsed());
    }
    Ok(samples)
}

fn report(count: usize, mut samples: Vec<Duration>) {
    samples.sort();
    let pick =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "apply latency over {count} requests (last approval response -> object in cluster): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}
