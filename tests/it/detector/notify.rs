//! A finding is announced like a state change: `breakglass.unbrokered`, written in the
//! finding's own transaction, delivered once to each endpoint that wants it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use breakglass_broker::config::NotificationConfig;
use breakglass_broker::dev;
use serde_json::{Value, json};

use super::{LABEL, a_few_scans, deployment_body, labelled_deployment_with_pods, pod_template};
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

#[tokio::test]
async fn a_finding_in_slack_names_the_workload_and_opens_the_alerts() {
    // A Slack-shaped receiver on loopback that keeps every message it gets.
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = got.clone();
    let app = axum::Router::new().route(
        "/services/T/B/x",
        post(move |body: String| {
            let kept = kept.clone();
            async move {
                if let Ok(value) = serde_json::from_str::<Value>(&body) {
                    kept.lock().expect("lock").push(value);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut endpoint: NotificationConfig = toml::from_str(
        "name = \"alerts-slack\"\nkind = \"slack\"\nurl_env = \"UNUSED_URL\"\nevents = [\"breakglass.unbrokered\"]\n",
    )
    .expect("an endpoint");
    endpoint.endpoint = Some(
        format!("http://{receiver}/services/T/B/x")
            .parse()
            .expect("url"),
    );
    let env = TestEnv::start_with(|options| dev::start_notifying(options, vec![endpoint])).await;

    // Cluster-supplied text that would break out of a code span, written under a field
    // manager named like a mention and a link.
    env.env.sim.set_admission_policy(false);
    let image = "x:1` <!channel> <https://evil.example/approve|Approve INC-1 now> `";
    let body = deployment_body(
        "backtick",
        pod_template(
            json!({ "app": "backtick", LABEL: "true" }),
            json!({}),
            image,
        ),
    );
    let response = env
        .http
        .post(format!(
            "{}/apis/apps/v1/namespaces/prod/deployments",
            env.env.cluster_url
        ))
        .query(&[(
            "fieldManager",
            "<!here> <https://evil.example|security-team>",
        )])
        .bearer_auth(&env.env.deployer.token)
        .json(&body)
        .send()
        .await
        .expect("cluster answers");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let deployment: Value = response.json().await.expect("the Deployment");
    let started = Instant::now();
    let message = loop {
        if let Some(message) = got.lock().expect("lock").first() {
            break message.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing announced the finding"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Label/value pairs: the labels the broker's markup, the values plain text, none empty.
    let fields: Vec<(String, String)> = message["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .flat_map(|b| b["fields"].as_array().cloned().unwrap_or_default())
        .collect::<Vec<Value>>()
        .chunks(2)
        .map(|pair| {
            assert_eq!(pair[0]["type"], "mrkdwn", "{message}");
            assert_eq!(pair[1]["type"], "plain_text", "{message}");
            (
                pair[0]["text"].as_str().unwrap_or("").to_owned(),
                pair[1]["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    for (label, value) in [
        ("*Target*", "dev-cluster"),
        ("*Namespace*", "prod"),
        ("*Kind*", "Deployment"),
        ("*Name*", "backtick"),
        ("*UID*", uid),
    ] {
        assert!(
            fields.iter().any(|(l, v)| l == label && v == value),
            "{label} {value} in {fields:?}"
        );
    }
    for absent in ["*Ticket*", "*Requester*", "*State*"] {
        assert!(!fields.iter().any(|(l, _)| l == absent), "{fields:?}");
    }
    // The images and the writers: as the cluster has them, in plain text.
    let plain: Vec<&str> = message["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter(|b| b["text"]["type"] == "plain_text")
        .filter_map(|b| b["text"]["text"].as_str())
        .collect();
    assert!(plain.contains(&image), "{message}");
    assert!(
        plain
            .iter()
            .any(|t| t.contains("<!here> <https://evil.example|security-team>")),
        "{message}"
    );
    for block in message["blocks"].as_array().expect("blocks") {
        if block["text"]["type"] == "mrkdwn" {
            assert!(
                !block["text"]["text"].to_string().contains("evil"),
                "{block}"
            );
        }
    }
    let button = &message["blocks"]
        .as_array()
        .and_then(|b| b.last())
        .expect("a block")["elements"][0];
    assert_eq!(button["text"]["text"], "Open the alerts");
    assert!(
        button["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/alerts")),
        "{button}"
    );
    let text = message["text"].as_str().expect("text");
    assert!(
        text.contains("Deployment/backtick") && !text.contains("<!"),
        "{text}"
    );
    assert_eq!(message["mrkdwn"], false);
}
