//! Google's own Python client for Cloud Run (`google-cloud-run` from PyPI, REST transport,
//! anonymous credentials, endpoint pointed at the simulation) reads, lists and updates the
//! simulated services: the simulation speaks what Google's client expects.
//!
//! The client is installed by the test itself into a virtual environment under the target
//! directory (kept between runs), so it runs on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::python::run;

use breakglass_broker::dev::{RUN_PROJECT, RUN_REGION, RUN_RELEASE_IMAGE, RUN_SERVICE};
use serde_json::Value;

use crate::common::TestEnv;

/// The client version the simulation was checked against.
const CLIENT: &str = "google-cloud-run==0.16.2";

/// A virtual environment with the client installed.
fn python_with_client() -> PathBuf {
    crate::python::python_with("python-cloud-run", CLIENT)
}

#[tokio::test]
async fn googles_python_client_reads_lists_and_updates_the_simulated_services() {
    let env = TestEnv::start().await;
    let python = tokio::task::spawn_blocking(python_with_client)
        .await
        .expect("install");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cloud_run_client.py");
    let endpoint = env.env.run_url.clone();
    let token = crate::cloud_run::metadata_token(&env).await;
    let output = tokio::task::spawn_blocking(move || {
        run(Command::new(python)
            .arg(script)
            .args([
                &endpoint,
                RUN_PROJECT,
                RUN_REGION,
                RUN_SERVICE,
                RUN_RELEASE_IMAGE,
            ])
            .env("SIM_RUN_TOKEN", token))
    })
    .await
    .expect("the client runs");
    let read: Value = serde_json::from_str(output.trim()).expect("one JSON line");
    let name = env.env.run.service_name(RUN_SERVICE);
    assert_eq!(read["name"], name.as_str());
    assert_eq!(read["image"], RUN_RELEASE_IMAGE);
    assert_eq!(read["listed"], serde_json::json!([name]));
    let live = env.env.run.service(RUN_SERVICE).expect("checkout");
    assert_eq!(live["labels"]["touched-by"], "python", "the update landed");
    assert_eq!(live["generation"], read["updated_generation"].to_string());
}
