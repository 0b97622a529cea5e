//! How long the dashboard takes with 1,000 pending and 100 active requests, for an approver
//! who signed in through the dev issuer, measured from outside over loopback HTTP.
//!
//! The requests are written straight through the store (filing 1,100 through the API would
//! meet the per-person filing limit); everything else is the real dev broker.
//!
//! Run: `cargo bench --bench dashboard` (`PENDING=N ACTIVE=N SAMPLES=N` change the sizes).
//! Fails when the p99 is over 50 ms.

use std::time::{Duration, Instant};

use breakglass_broker::clock::Clock;
use breakglass_broker::dev::{self, DevOptions};
use breakglass_broker::store::{NewRequest, Store};

const GOAL: Duration = Duration::from_millis(50);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let (pending, active, samples) = (
        env_number("PENDING", 1000),
        env_number("ACTIVE", 100),
        env_number("SAMPLES", 50).max(1),
    );
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
    let store = env.broker.state.store.clone();
    broker_runtime.block_on(seed(&store, &env.issuer, pending, active))?;
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut times = client_runtime.block_on(measure(&env, samples))?;
    drop(broker_runtime);
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "dashboard with {pending} pending and {active} active requests, {samples} views as bob: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 <= {} ms)",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1]),
        GOAL.as_millis()
    );
    anyhow::ensure!(at(0.99) <= GOAL, "the dashboard's p99 is over {GOAL:?}");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Writes `pending` pending and `active` active requests of alice's on dev-cluster.
async fn seed(store: &Store, issuer: &str, pending: usize, active: usize) -> anyhow::Result<()> {
    let now = Clock::system().now();
    let mut tx = store.begin().await?;
    for i in 0..pending + active {
        let new = NewRequest {
            id: uuid::Uuid::now_v7().to_string(),
            target: dev::TARGET.into(),
            namespace: "prod".into(),
            ticket: format!("INC-{i}"),
            justification: "bench: checkout is down".into(),
            requester_issuer: issuer.into(),
            requester_subject: "alice".into(),
            requester_name: "alice".into(),
            manifest: "kind: Deployment".into(),
            objects: "[]".into(),
            duration_seconds: 3600,
            digest: format!("{i:064x}"),
            created_at: now,
            decide_by: now + 30 * 60_000,
            extends: None,
        };
        Store::insert_request(&mut tx, &new).await?;
        if i >= pending {
            Store::set_active(&mut tx, &new.id, now, now + 3_600_000).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Signs bob in through the dev issuer's page, then times `samples` views of `/`.
async fn measure(env: &dev::DevEnv, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let location = |r: &reqwest::Response| -> anyhow::Result<String> {
        Ok(r.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow::anyhow!("no redirect ({})", r.status()))?
            .to_owned())
    };
    let start = client
        .get(format!("{}/auth/login?next=/", env.base_url))
        .send()
        .await?;
    let authorize = url::Url::parse(&location(&start)?)?;
    client.get(authorize.clone()).send().await?;
    let mut form: Vec<(String, String)> = authorize
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("persona".into(), "bob".into()));
    let chosen = client
        .post(format!("{}/authorize", env.issuer))
        .form(&form)
        .send()
        .await?;
    let done = client.get(location(&chosen)?).send().await?;
    anyhow::ensure!(done.status().is_redirection(), "sign-in: {}", done.status());
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + 5 {
        let began = Instant::now();
        let page = client.get(format!("{}/", env.base_url)).send().await?;
        anyhow::ensure!(page.status().is_success(), "dashboard: {}", page.status());
        let html = page.text().await?;
        let took = began.elapsed();
        anyhow::ensure!(html.contains("INC-"), "the dashboard lists no request");
        // The first views warm the connections and caches.
        if i >= 5 {
            times.push(took);
        }
    }
    Ok(times)
}
