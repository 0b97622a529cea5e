//! `/metrics` as Prometheus reads it: the text parses with the Prometheus client's own
//! OpenMetrics parser, and what it says moves with what the broker does.

use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};
use crate::python::python_with;

const PARSER: &str = "prometheus-client==0.21.1";

/// One sample of a scrape.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Value,
    value: f64,
}

/// Scrapes `/metrics` and parses it with the Prometheus client's parser.
async fn scrape(env: &TestEnv) -> Vec<Sample> {
    let response = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.expect("text");
    let lines = tokio::task::spawn_blocking(move || {
        let python = python_with("python-prometheus", PARSER);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics_parse.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the parser starts");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let output = child.wait_with_output().expect("the parser ends");
        assert!(
            output.status.success(),
            "the parser refused the text:\n{}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .expect("parsed");
    lines
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            Sample {
                name: v["name"].as_str().unwrap_or_default().to_owned(),
                labels: v["labels"].clone(),
                value: v["value"].as_f64().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include all of `labels` (0 if none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k] == *v))
        .map_or(0.0, |s| s.value)
}

#[tokio::test]
async fn the_metrics_parse_as_prometheus_reads_them_and_move_when_a_request_is_filed_and_applied() {
    let env = TestEnv::start().await;
    let filed = [
        ("route", "/api/v1/requests"),
        ("method", "POST"),
        ("status", "201"),
    ];
    let before = scrape(&env).await;
    assert_eq!(
        value(&before, "breakglass_http_requests_total", &filed),
        0.0
    );
    assert_eq!(
        value(&before, "breakglass_requests", &[("state", "pending")]),
        0.0
    );

    let (id, digest) = env.file_ok(&deployment("metered", HOTFIX_IMAGE), 30).await;
    let after = scrape(&env).await;
    assert_eq!(value(&after, "breakglass_http_requests_total", &filed), 1.0);
    assert_eq!(
        value(&after, "breakglass_requests", &[("state", "pending")]),
        1.0
    );
    assert!(
        value(
            &after,
            "breakglass_http_request_duration_seconds_count",
            &[("route", "/api/v1/requests"), ("method", "POST")]
        ) >= 1.0
    );
    // Route templates, never paths: no request id becomes a label.
    assert!(after.iter().all(|s| !s.labels.to_string().contains(&id)));

    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    env.wait_for_state(&id, "active").await;
    // The lifecycle event reaches the metrics just after the commit, and its audit events
    // the chain just after that.
    let mut applied = 0.0;
    let mut waiting = f64::NAN;
    for _ in 0..100 {
        let samples = scrape(&env).await;
        applied = value(
            &samples,
            "breakglass_applies_total",
            &[("outcome", "applied")],
        );
        waiting = value(&samples, "breakglass_audit_journal_waiting", &[]);
        if applied == 1.0 && waiting == 0.0 {
            assert_eq!(
                value(&samples, "breakglass_apply_latency_seconds_count", &[]),
                1.0
            );
            assert_eq!(
                value(&samples, "breakglass_requests", &[("state", "active")]),
                1.0
            );
            assert_eq!(value(&samples, "breakglass_worker_lag_seconds", &[]), 0.0);
            assert_eq!(
                value(&samples, "breakglass_audit_journal_oldest_seconds", &[]),
                0.0
            );
            assert!(
                value(
                    &samples,
                    "breakglass_database_pool_connections",
                    &[("connections", "idle")]
                ) >= 0.0
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(applied, 1.0, "the apply is counted");
    assert_eq!(waiting, 0.0, "the journal drains into the chain");
}
