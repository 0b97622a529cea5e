//! A dev environment with a second target, `strict-cluster`, whose policy is the one the issue
//! describes for production where it differs from `dev-cluster`'s: token automounting refused,
//! a service account allowlist, a narrower registry, one approval from each of two groups.

use std::time::Duration;

use breakglass_broker::config::{Credentials, TargetConfig, TargetKind};
use breakglass_broker::dev;
use breakglass_broker::domain::ApprovalRule;
use breakglass_broker::domain::policy::{ImagePolicy, PodPolicy, default_kinds};
use serde_json::{Value, json};

use crate::common::TestEnv;

pub const STRICT: &str = "strict-cluster";

/// An image the strict target accepts: its registry, pinned by digest.
pub const STRICT_IMAGE: &str = "us-docker.pkg.dev/acme/hotfix/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

/// The dev personas have no `sre` or `security` group, so the strict target's two groups are
/// stand-ins: `approvers` (bob, carol, erin) and `oncall` (alice, erin). Erin is in both, as
/// someone in `sre` and `security` would be.
pub fn strict_target() -> TargetConfig {
    TargetConfig {
        name: STRICT.into(),
        kind: TargetKind::Kubernetes,
        credentials: Credentials::Kubeconfig,
        kubeconfig: None,
        context: None,
        project: None,
        location: None,
        cluster: None,
        endpoint: None,
        ca_file: None,
        container_api: None,
        region: None,
        services: Vec::new(),
        service_accounts: Vec::new(),
        run_api: None,
        namespaces: vec!["prod".into()],
        max_duration: Duration::from_secs(3600),
        approval_window: Duration::from_secs(30 * 60),
        approvals: vec![
            ApprovalRule {
                group: "approvers".into(),
                count: 1,
            },
            ApprovalRule {
                group: "oncall".into(),
                count: 1,
            },
        ],
        images: ImagePolicy {
            registries: vec!["us-docker.pkg.dev/acme".into()],
            require_digest: true,
        },
        pods: PodPolicy {
            service_accounts: vec!["default".into(), "api-runner".into()],
            allow_automount_token: false,
            allowed_capabilities: vec!["NET_BIND_SERVICE".into()],
        },
        kinds: default_kinds(),
        ticket_pattern: "^(INC|CHG)-[0-9]+$".into(),
        max_objects: 3,
        max_manifest_bytes: 64 * 1024,
        max_extensions: 2,
        require_review: false,
        on_unbrokered: Default::default(),
        audit_logs: false,
        logging_api: None,
    }
}

/// The dev environment plus `strict-cluster`, on the same simulated cluster.
pub async fn start_with_strict_target() -> TestEnv {
    TestEnv::start_with(|options| dev::start_with_targets(options, vec![strict_target()])).await
}

/// A Deployment the strict target accepts as it is.
pub fn strict_deployment(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      automountServiceAccountToken: false\n      containers:\n      - name: {name}\n        image: {STRICT_IMAGE}\n"
    )
}

/// A request body for the strict target.
pub fn strict_request(manifest: &str) -> Value {
    json!({
        "target": STRICT,
        "namespace": "prod",
        "manifest": manifest,
        "ticket": "INC-7",
        "justification": "payments API down since the last release; hotfix built",
        "duration_minutes": 30,
    })
}
