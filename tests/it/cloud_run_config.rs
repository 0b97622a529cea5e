//! `check-config` on Cloud Run targets, run as the operator runs it: a good one passes, and a
//! bad one is told every key to fix.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_breakglass-broker");

fn config(target: &str) -> String {
    format!(
        r#"public_url = "https://breakglass.example.com"
database_url = "sqlite://broker.db"

[oidc]
issuer = "https://accounts.google.com"
client_id = "breakglass"

[roles]
requesters = ["oncall"]

[[targets]]
name = "prod-run"
kind = "cloud-run"
max_duration = "4h"
approvals = [{{ group = "sre", count = 1 }}]
images = {{ registries = ["us-docker.pkg.dev/acme/"] }}
ticket_pattern = "^INC-[0-9]+$"
{target}
"#
    )
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, text).expect("written");
    let output = Command::new(BINARY)
        .arg("check-config")
        .arg(&file)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn a_cloud_run_target_with_its_keys_passes_check_config() {
    let (ok, output) = check(&config(
        r#"credentials = "google"
project = "acme-prod"
region = "us-central1"
services = ["checkout", "cart"]
service_accounts = ["checkout@acme-prod.iam.gserviceaccount.com"]"#,
    ));
    assert!(ok, "{output}");
    assert!(output.contains("ok (1 target"), "{output}");
}

#[test]
fn a_cloud_run_target_is_told_every_missing_or_wrong_key() {
    let (ok, output) = check(&config(
        r#"credentials = "kubeconfig"
kubeconfig = "/etc/kubeconfig"
namespaces = ["prod"]
region = "central"
services = ["Checkout", "cart", "cart"]
service_accounts = ["default"]
run_api = "ftp://run.example.com""#,
    ));
    assert!(!ok, "{output}");
    for expected in [
        "target prod-run: kind \"cloud-run\" needs credentials = \"google\"",
        "kubeconfig is for Kubernetes targets; a Cloud Run target has none",
        "namespaces: Cloud Run services have no namespace; remove the key",
        "project is missing",
        "region \"central\" is not a region name such as \"us-central1\"",
        "services: \"Checkout\" is not a Cloud Run service name",
        "services: \"cart\" is listed twice",
        "service_accounts: \"default\" is not a service account email",
        "run_api ftp://run.example.com/ must be an http(s) URL",
    ] {
        assert!(output.contains(expected), "{expected:?} in {output}");
    }
    let (ok, output) = check(&config("credentials = \"google\""));
    assert!(!ok);
    for expected in [
        "project is missing",
        "region is missing",
        "services is empty",
        "service_accounts is empty",
    ] {
        assert!(output.contains(expected), "{expected:?} in {output}");
    }
}
