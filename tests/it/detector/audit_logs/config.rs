//! `check-config` takes `audit_logs = true` on GKE targets that name their cluster.

use breakglass_broker::config::Config;

fn config_with(target: &str) -> anyhow::Result<Config> {
    Config::parse(&format!(
        r#"public_url = "https://breakglass.example.com"
database_url = "sqlite://broker.db"

[oidc]
issuer = "https://accounts.google.com"
client_id = "breakglass"

[roles]
requesters = ["oncall"]

[[targets]]
name = "prod-gke"
namespaces = ["payments"]
max_duration = "4h"
approvals = [{{ group = "sre", count = 1 }}]
images = {{ registries = ["us-docker.pkg.dev/acme/"] }}
ticket_pattern = "^INC-[0-9]+$"
{target}
"#
    ))
}

#[test]
fn check_config_takes_audit_logs_on_gke_targets_that_name_their_cluster_and_nowhere_else() {
    let by_api = "kind = \"gke\"\ncredentials = \"google\"\nproject = \"acme-prod\"\nlocation = \"us-central1\"\ncluster = \"prod\"\naudit_logs = true";
    let config = config_with(by_api).expect("a GKE target found through the GKE API");
    assert!(config.targets[0].audit_logs);
    assert_eq!(
        config.targets[0].logging_api(),
        "https://logging.googleapis.com"
    );
    let by_kubeconfig = "kind = \"gke\"\ncredentials = \"kubeconfig\"\nkubeconfig = \"/etc/k\"\nproject = \"acme-prod\"\nlocation = \"us-central1\"\ncluster = \"prod\"\naudit_logs = true\nlogging_api = \"http://127.0.0.1:8089\"";
    config_with(by_kubeconfig).expect("a GKE target reached by kubeconfig names its cluster");
    assert!(
        !config_with("kind = \"gke\"\ncredentials = \"in-cluster\"")
            .expect("off by default")
            .targets[0]
            .audit_logs
    );

    for (target, expected) in [
        (
            "kind = \"kubernetes\"\ncredentials = \"in-cluster\"\naudit_logs = true",
            "audit_logs = true reads a GKE cluster's Cloud Audit Logs: it needs kind = \"gke\"",
        ),
        (
            "kind = \"gke\"\ncredentials = \"in-cluster\"\nproject = \"acme-prod\"\naudit_logs = true",
            "audit_logs = true needs location",
        ),
        (
            "kind = \"gke\"\ncredentials = \"in-cluster\"\nproject = \"acme-prod\"",
            "project is only read with kind = \"gke\" and credentials = \"google\"",
        ),
        (
            "kind = \"gke\"\ncredentials = \"in-cluster\"\nlogging_api = \"https://logging.example.com\"",
            "logging_api is only read with audit_logs = true",
        ),
        (
            &format!("{by_api}\nlogging_api = \"http://logging.example.com\""),
            "must be https (plain http only on loopback",
        ),
    ] {
        let error = format!("{:#}", config_with(target).expect_err(target));
        assert!(error.contains(expected), "{target}\n-> {error}");
    }
}
