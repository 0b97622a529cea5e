//! A property of the end, over random interleavings of the broker's apply with what people
//! holding deploy rights do meanwhile (scale, a normal deploy that replaces the template, an
//! image change that keeps the mark, a delete, a second request on the same object), ended by
//! expiry or by a close: once the request has ended, no object in the namespace carries a
//! breakglass mark or a broker stamp, and the broker wrote no object it did not record.
//!
//! Each case runs the real broker against the simulated cluster, so cases are few;
//! `END_PROPTEST_CASES` asks for more.

use std::time::Duration;

use breakglass_broker::dev::sim_cluster::ObjectKey;
use breakglass_broker::domain::{BREAKGLASS_ANNOTATION, BREAKGLASS_LABEL, BROKER_PREFIX};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};
use crate::flow::deployer;

const ATTESTED: &str = "us-docker.pkg.dev/acme/release/api@sha256:4444444444444444444444444444444444444444444444444444444444444444";
const OTHER: &str = "us-docker.pkg.dev/acme/release/api@sha256:5555555555555555555555555555555555555555555555555555555555555555";

/// What someone with deploy rights does while the breakglass runs.
#[derive(Clone, Debug)]
enum Foreign {
    /// A merge patch of `spec.replicas`, as `kubectl scale` does.
    Scale(u8),
    /// A normal deploy that replaces the pod template (attested image, no mark).
    Redeploy,
    /// An image change by merge patch: the broker's mark on the template stays.
    ChangeImage,
    Delete,
    /// Someone files a second request for the same object.
    SecondRequest,
}

fn foreign() -> impl Strategy<Value = Foreign> {
    prop_oneof![
        (1u8..6).prop_map(Foreign::Scale),
        Just(Foreign::Redeploy),
        Just(Foreign::ChangeImage),
        Just(Foreign::Delete),
        Just(Foreign::SecondRequest),
    ]
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", "prod", name)
}

fn manifest(name: &str, image: &str) -> Value {
    serde_saphyr::from_str(&deployment(name, image)).expect("manifest")
}

fn has_mark(meta: &Value) -> bool {
    ["labels", "annotations"].iter().any(|field| {
        meta.get(*field)
            .and_then(Value::as_object)
            .is_some_and(|m| {
                m.keys().any(|k| {
                    k == BREAKGLASS_LABEL
                        || k == BREAKGLASS_ANNOTATION
                        || k.starts_with(BROKER_PREFIX)
                })
            })
    })
}

async fn run(existed: bool, during: Vec<Foreign>, close: bool) {
    let env = TestEnv::start().await;
    let api = deployer(&env).await;
    // A bystander the broker must never write, and perhaps the object as it ran before.
    api.patch(
        "bystander",
        &PatchParams::apply("team").force(),
        &Patch::Apply(&manifest("bystander", ATTESTED)),
    )
    .await
    .expect("bystander");
    if existed {
        api.patch(
            "target",
            &PatchParams::apply("team").force(),
            &Patch::Apply(&manifest("target", ATTESTED)),
        )
        .await
        .expect("existing object");
    }
    let bystander_writes = env.env.sim.write_count(&key("bystander"));
    let id = env.activate("target", 30).await;

    for step in &during {
        match step {
            Foreign::Scale(replicas) => {
                let patch = json!({ "spec": { "replicas": replicas } });
                let _ = api
                    .patch("target", &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
            Foreign::Redeploy => {
                if let Ok(live) = api.get("target").await {
                    let mut body = serde_json::to_value(&live).expect("json");
                    body["spec"]["template"] =
                        manifest("target", ATTESTED)["spec"]["template"].clone();
                    let body: DynamicObject = serde_json::from_value(body).expect("object");
                    let params = PostParams {
                        field_manager: Some("ci".into()),
                        ..Default::default()
                    };
                    let _ = api.replace("target", &params, &body).await;
                }
            }
            Foreign::ChangeImage => {
                // A merge patch changes only what exists: an object someone makes anew under
                // the name after a delete is not the broker's to end (the admission policy
                // refuses it, and the detector reports it).
                let patch = json!({ "spec": { "template": { "spec": {
                    "containers": [{ "name": "target", "image": OTHER }]
                } } } });
                let _ = api
                    .patch("target", &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
            Foreign::Delete => {
                let _ = api.delete("target", &Default::default()).await;
            }
            Foreign::SecondRequest => {
                let (status, body) = env
                    .file("erin", &deployment("target", HOTFIX_IMAGE), 30)
                    .await;
                assert_eq!(
                    status,
                    StatusCode::CONFLICT,
                    "one breakglass per object: {body}"
                );
            }
        }
    }

    if close {
        let (status, body) = env
            .post("alice", &format!("/api/v1/requests/{id}/close"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    } else {
        env.clock.advance(Duration::from_secs(31 * 60));
    }
    let ended = crate::end::ended(&env, &id, "active").await;

    let expected = if close { "closed" } else { "expired" };
    assert_eq!(ended["state"], expected, "{ended}");
    for write in env.env.sim.writes() {
        if let Some(object) = env.env.sim.object(&write.key) {
            assert!(
                !has_mark(&object["metadata"])
                    && !has_mark(&object["spec"]["template"]["metadata"]),
                "{:?} still carries a mark after the end: {object}",
                write.key
            );
        }
    }
    assert_eq!(
        env.env.sim.write_count(&key("bystander")),
        bystander_writes,
        "the broker wrote an object it did not record"
    );
    if existed && !during.iter().any(|s| matches!(s, Foreign::Delete)) {
        let left = env
            .env
            .sim
            .object(&key("target"))
            .expect("an object that existed stays");
        let image = &left["spec"]["template"]["spec"]["containers"][0]["image"];
        assert!(image == ATTESTED || image == OTHER, "{left}");
    }
}

fn cases() -> u32 {
    std::env::var("END_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn no_breakglass_mark_outlives_its_request_and_nothing_unrecorded_is_written(
        existed in any::<bool>(),
        during in prop::collection::vec(foreign(), 0..4),
        close in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(existed, during, close));
    }
}
