//! Google's own Python client for Cloud Run (`google-cloud-run` from PyPI, REST transport,
//! anonymous credentials, endpoint pointed at the simulation) reads, lists and updates the
//! simulated services: the simulation speaks what Google's client expects.
//!
//! The client is installed by the test itself into a virtual environment under the target
//! directory (kept between runs), so it runs on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use breakglass_broker::dev::{RUN_PROJECT, RUN_REGION, RUN_RELEASE_IMAGE, RUN_SERVICE};
use serde_json::Value;

use crate::common::TestEnv;

/// The client version the simulation was checked against.
const CLIENT: &str = "google-cloud-run==0.16.2";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A virtual environment with the client installed; made once, then reused.
fn python_with_client() -> PathBuf {
    let venv = target_dir().join("python-cloud-run");
    let python = venv.join("bin").join("python");
    let marker = venv.join(CLIENT);
    if !marker.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            CLIENT,
        ]));
        std::fs::write(&marker, "installed\n").expect("marker");
    }
    python
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
