//! The simulated cluster's failure knob, which the crash and lease tests stand on: a write
//! committed before its answer is held, failures limited to some methods, the first writes let
//! through (exactly, when they race), holds that clearing ends, and counts of what it did.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::{Failure, ObjectKey, SimCluster, SimClusterConfig};
use reqwest::StatusCode;
use serde_json::json;

const TOKEN: &str = "knob-write-token";
const ATTESTED_IMAGE: &str = "us-docker.pkg.dev/acme/release/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

struct Sim {
    cluster: SimCluster,
    url: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sim {
    async fn start() -> Sim {
        breakglass_broker::app::install_crypto();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let cluster = SimCluster::new(SimClusterConfig {
            write_token: TOKEN.to_owned(),
            attested_prefixes: vec!["us-docker.pkg.dev/acme/release/".to_owned()],
            namespaces: vec!["prod".to_owned()],
        });
        let task = tokio::spawn(cluster.clone().serve(listener));
        Sim {
            cluster,
            url,
            http: reqwest::Client::new(),
            task,
        }
    }

    fn path(&self, name: &str) -> String {
        format!(
            "{}/apis/apps/v1/namespaces/prod/deployments/{name}",
            self.url
        )
    }

    /// A server-side apply of a plain Deployment, as the broker makes one.
    fn apply(&self, name: &str) -> reqwest::RequestBuilder {
        let body = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name, "namespace": "prod" },
            "spec": {
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": { "app": name } },
                    "spec": { "containers": [{ "name": name, "image": ATTESTED_IMAGE }] },
                },
            },
        });
        self.http
            .patch(format!("{}?fieldManager=knob", self.path(name)))
            .bearer_auth(TOKEN)
            .header("content-type", "application/apply-patch+yaml")
            .body(body.to_string())
    }

    fn applies(&self, name: &str) -> u64 {
        self.cluster
            .write_count(&ObjectKey::new("apps/v1", "Deployment", "prod", name))
            .applies
    }

    async fn wait_for_held(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.cluster.failure_state().held < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never held {count}: {:?}",
                self.cluster.failure_state()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_commit_stores_the_write_then_holds_its_answer_until_cleared_and_fails_it() {
    let sim = Sim::start().await;
    sim.cluster.set_failure_mode(Some(Failure {
        status: Some(503),
        delay_ms: 600_000,
        after_commit: true,
        methods: Some(vec!["patch".to_owned()]),
        pass_first: 1,
        ..Failure::default()
    }));

    let first = sim.apply("first").send().await.expect("answers");
    assert_eq!(
        first.status(),
        StatusCode::CREATED,
        "the first write passes"
    );
    let held = tokio::spawn(sim.apply("held").send());
    sim.wait_for_held(1).await;
    assert_eq!(sim.applies("held"), 1, "stored before its answer");
    assert!(!held.is_finished(), "its answer is held");
    let read = sim
        .http
        .get(sim.path("held"))
        .send()
        .await
        .expect("answers");
    assert_eq!(read.status(), StatusCode::OK, "other methods are not held");
    let deleted = sim
        .http
        .delete(sim.path("first"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(deleted.status(), StatusCode::OK, "other writes neither");

    sim.cluster.set_failure_mode(None);
    let answer = tokio::time::timeout(Duration::from_secs(60), held)
        .await
        .expect("clearing ends the hold")
        .expect("task")
        .expect("answers");
    assert_eq!(
        answer.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the answer was decided when the write arrived"
    );
    let state = sim.cluster.failure_state();
    assert_eq!((state.held, state.affected, state.failed), (0, 1, 1));
    assert_eq!((sim.applies("first"), sim.applies("held")), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_writes_that_arrive_together_exactly_pass_first_get_through() {
    const WRITES: usize = 8;
    const PASS: u32 = 3;
    let sim = Sim::start().await;
    sim.cluster.set_failure_mode(Some(Failure {
        status: Some(503),
        writes_only: true,
        pass_first: PASS,
        ..Failure::default()
    }));
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(WRITES));
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..WRITES {
        let request = sim.apply(&format!("race-{i}"));
        let start = start.clone();
        writes.spawn(async move {
            start.wait().await;
            request.send().await.expect("answers").status()
        });
    }
    let mut passed = 0;
    while let Some(status) = writes.join_next().await {
        match status.expect("task") {
            StatusCode::CREATED => passed += 1,
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(passed, PASS);
    let state = sim.cluster.failure_state();
    assert_eq!(
        (state.affected, state.failed),
        (
            WRITES as u64 - u64::from(PASS),
            WRITES as u64 - u64::from(PASS)
        )
    );
}
