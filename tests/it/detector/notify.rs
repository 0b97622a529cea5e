//! A finding is announced like a state change: `breakglass.unbrokered`, written in the
//! finding's own transaction, delivered once to each endpoint that wants it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use breakglass_broker::config::NotificationConfig;
use breakglass_broker::dev;
use serde_json::Value;

use super::{a_few_scans, labelled_deployment_with_pods};
use crate::common::TestEnv;

#[tokio::test]
async fn a_finding_is_announced_once_as_breakglass_unbrokered() {
    // A webhook receiver on loopback that keeps every body it gets.
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let kept = kept.clone();
            async move {
                if let Ok(value) = serde_json::from_str::<Value>(&body) {
                    kept.lock().expect("lock").push(value);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let url = format!("http://{receiver}/hook");
    let mut endpoint: NotificationConfig = toml::from_str(&format!(
        "name = \"siem\"\nkind = \"webhook\"\nurl = \"{url}\"\n\
         secret_env = \"UNUSED_SECRET\"\nevents = [\"breakglass.unbrokered\"]\n"
    ))
    .expect("an endpoint");
    // What loading the configuration does with `url` and the secret.
    endpoint.endpoint = Some(url.parse().expect("url"));
    endpoint.secret = Some(vec![7; 32]);
    let env = TestEnv::start_with(|options| dev::start_notifying(options, vec![endpoint])).await;

    env.env.sim.set_admission_policy(false);
    let deployment = labelled_deployment_with_pods(&env, "miner").await;
    let started = Instant::now();
    let announced = loop {
        let bodies = got.lock().expect("lock").clone();
        if let Some(body) = bodies.first() {
            break body.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing announced the finding"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(announced["type"], "breakglass.unbrokered", "{announced}");
    let data = &announced["data"];
    assert_eq!(
        (&data["kind"], &data["name"], &data["uid"]),
        (
            &Value::from("Deployment"),
            &Value::from("miner"),
            &deployment["metadata"]["uid"]
        ),
        "{announced}"
    );
    assert!(
        data["url"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/alerts"),
        "{announced}"
    );
    a_few_scans().await;
    assert_eq!(
        got.lock().expect("lock").len(),
        1,
        "one finding, one message, however many scans see it"
    );
}
