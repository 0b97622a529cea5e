//! `breakglass-broker check-config FILE`, run as the operator runs it: the real binary on files
//! in a temporary directory. A good file passes; each bad one fails with a message that says
//! what to change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_breakglass-broker");

/// The shipped example, which the README points operators at.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml")
}

fn check_config(file: &Path) -> Output {
    Command::new(BINARY)
        .arg("check-config")
        .arg(file)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs")
}

/// A configuration with one target, `prod-gke`; `target` lines replace or extend its fields.
fn config_with(target: &str) -> String {
    format!(
        r#"public_url = "https://breakglass.example.com"
database_url = "sqlite://broker.db"

[oidc]
issuer = "https://accounts.google.com"
client_id = "breakglass"

[roles]
requesters = ["oncall"]

[[targets]]
name = "prod-gke"
kind = "gke"
credentials = "in-cluster"
{target}
"#
    )
}

/// The target fields every case starts from, each on its own line so that a case can drop one.
const GOOD_TARGET: [&str; 6] = [
    r#"namespaces = ["payments"]"#,
    r#"max_duration = "4h""#,
    r#"approvals = [{ group = "sre", count = 1 }, { group = "security", count = 1 }]"#,
    r#"images = { registries = ["us-docker.pkg.dev/acme/"] }"#,
    r#"ticket_pattern = "^(INC|CHG)-[0-9]+$""#,
    "",
];

/// The good target with the line starting with `field` replaced by `line` (or `line` added).
fn target_with(field: &str, line: &str) -> String {
    let mut lines: Vec<String> = GOOD_TARGET
        .iter()
        .filter(|l| field.is_empty() || !l.starts_with(field))
        .map(|l| (*l).to_owned())
        .collect();
    lines.push(line.to_owned());
    lines.join("\n")
}

#[test]
fn the_shipped_example_configuration_passes_check_config() {
    let output = check_config(&example());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ok (3 targets: prod-gke, staging, prod-run; 0 notification endpoints)"),
        "{stdout}"
    );
}

#[test]
fn check_config_names_every_mistake_in_words_an_operator_can_act_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let two_targets = format!(
        "{}\n[[targets]]\nname = \"prod-gke\"\nkind = \"gke\"\ncredentials = \"in-cluster\"\n{}",
        config_with(&target_with("", "")),
        target_with("", "")
    );
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key in a target",
            config_with(&target_with("", "max_durration = \"4h\"")),
            vec!["line 21", "unknown field `max_durration`"],
        ),
        (
            "unknown top-level key",
            format!("colour = \"blue\"\n{}", config_with(&target_with("", ""))),
            vec!["line 1", "unknown field `colour`"],
        ),
        (
            "a session shorter than five minutes",
            config_with(&target_with("", "")).replace(
                "client_id = \"breakglass\"",
                "client_id = \"breakglass\"\nsession_max_age = \"1m\"",
            ),
            vec!["oidc.session_max_age 1m must be between 5m and 7d"],
        ),
        (
            "decisions on a sign-in older than the session may be",
            config_with(&target_with("", "")).replace(
                "client_id = \"breakglass\"",
                "client_id = \"breakglass\"\ndecision_max_age = \"30s\"",
            ),
            vec![
                "line ",
                "oidc.decision_max_age 30s must be at least 1m and at most oidc.session_max_age (8h)",
            ],
        ),
        (
            "a decision_max_age that is not a duration",
            config_with(&target_with("", "")).replace(
                "client_id = \"breakglass\"",
                "client_id = \"breakglass\"\ndecision_max_age = \"soon\"",
            ),
            vec!["line ", "\"soon\"", "write e.g. \"30m\" or \"4h\""],
        ),
        (
            "a rate limit of zero",
            format!(
                "{}\n[limits]\nfilings_per_minute = 0\n",
                config_with(&target_with("", ""))
            ),
            vec!["filings_per_minute", "nonzero"],
        ),
        (
            "not TOML at all",
            "public_url = \"https://x\nthis is not toml".to_owned(),
            vec!["TOML parse error at line"],
        ),
        (
            "bad duration",
            config_with(&target_with("max_duration", "max_duration = \"4 hourz\"")),
            vec!["\"4 hourz\"", "write e.g. \"30m\" or \"4h\""],
        ),
        (
            "zero duration",
            config_with(&target_with("max_duration", "max_duration = \"0s\"")),
            vec!["line 12: target prod-gke: max_duration is 0s; it must be at least 1 minute"],
        ),
        (
            "implausibly long duration",
            config_with(&target_with("max_duration", "max_duration = \"30days\"")),
            vec!["target prod-gke: max_duration is 30days; it must be at most 7days"],
        ),
        (
            "too many extensions",
            config_with(&target_with("", "max_extensions = 11")),
            vec!["target prod-gke: max_extensions is 11; it must be between 0 and 10"],
        ),
        (
            "bad regular expression",
            config_with(&target_with(
                "ticket_pattern",
                "ticket_pattern = \"^(INC-[0-9]+$\"",
            )),
            vec![
                "target prod-gke: ticket_pattern \"^(INC-[0-9]+$\" is not a valid regular expression",
            ],
        ),
        (
            "ticket pattern that accepts no ticket at all",
            config_with(&target_with("ticket_pattern", "ticket_pattern = \".*\"")),
            vec!["target prod-gke: ticket_pattern \".*\" matches an empty ticket"],
        ),
        (
            "no targets",
            config_with("").replace(
                "[[targets]]\nname = \"prod-gke\"\nkind = \"gke\"\ncredentials = \"in-cluster\"\n",
                "",
            ),
            vec!["no [[targets]]: the broker has nowhere to apply anything"],
        ),
        (
            "the same target twice",
            two_targets,
            vec!["target prod-gke is defined twice"],
        ),
        (
            "approval count of 0",
            config_with(&target_with(
                "approvals",
                "approvals = [{ group = \"sre\", count = 0 }]",
            )),
            vec!["target prod-gke: approvals: count for group \"sre\" is 0; it must be 1 or more"],
        ),
        (
            "approval count nobody can meet",
            config_with(&target_with(
                "approvals",
                "approvals = [{ group = \"sre\", count = 50 }]",
            )),
            vec!["approvals: count for group \"sre\" is 50; at most 10 is plausible"],
        ),
        (
            "no approvals",
            config_with(&target_with("approvals", "approvals = []")),
            vec!["target prod-gke: approvals is empty"],
        ),
        (
            "one group in two rules",
            config_with(&target_with(
                "approvals",
                "approvals = [{ group = \"sre\", count = 1 }, { group = \"sre\", count = 1 }]",
            )),
            vec!["approvals: group \"sre\" appears twice"],
        ),
        (
            "approval rule with an unknown key",
            config_with(&target_with(
                "approvals",
                "approvals = [{ group = \"sre\", count = 1, of = 3 }]",
            )),
            vec!["unknown field `of`"],
        ),
        (
            "no namespaces",
            config_with(&target_with("namespaces", "namespaces = []")),
            vec!["target prod-gke: namespaces is empty"],
        ),
        (
            "invalid namespace",
            config_with(&target_with("namespaces", "namespaces = [\"Payments\"]")),
            vec!["namespaces: \"Payments\" is not a valid namespace name"],
        ),
        (
            "no registries",
            config_with(&target_with("images", "images = { require_digest = true }")),
            vec!["target prod-gke: images.registries is empty"],
        ),
        (
            "registry with a scheme",
            config_with(&target_with(
                "images",
                "images = { registries = [\"https://us-docker.pkg.dev/acme/\"] }",
            )),
            vec![
                "images.registries: \"https://us-docker.pkg.dev/acme/\" must be a registry and path prefix",
            ],
        ),
        (
            "every capability allowed",
            config_with(&target_with(
                "",
                "pods = { allowed_capabilities = [\"ALL\"] }",
            )),
            vec!["pods.allowed_capabilities: \"ALL\" would allow every capability"],
        ),
        (
            "no service accounts",
            config_with(&target_with("", "pods = { service_accounts = [] }")),
            vec!["pods.service_accounts is empty"],
        ),
        (
            "a kind the broker cannot check",
            config_with(&target_with(
                "",
                "kinds = [{ api_version = \"v1\", kind = \"Secret\" }]",
            )),
            vec!["kinds: \"Secret\" is not a kind the broker can check"],
        ),
        (
            "a kind in the wrong version",
            config_with(&target_with(
                "",
                "kinds = [{ api_version = \"extensions/v1beta1\", kind = \"Deployment\" }]",
            )),
            vec!["kinds: Deployment must have api_version \"apps/v1\", not \"extensions/v1beta1\""],
        ),
        (
            "manifest limit above the request limit",
            config_with(&target_with("", "max_manifest_bytes = 10485760")),
            vec!["max_manifest_bytes is 10485760; it must be between 1024 and 524288"],
        ),
        (
            "kubeconfig credentials without a file",
            config_with(&target_with("", "")).replace(
                "credentials = \"in-cluster\"",
                "credentials = \"kubeconfig\"",
            ),
            vec!["credentials = \"kubeconfig\" needs kubeconfig = \"path\""],
        ),
        (
            "nobody may file",
            config_with(&target_with("", ""))
                .replace("requesters = [\"oncall\"]", "requesters = []"),
            vec!["roles.requesters is empty"],
        ),
        (
            "several mistakes at once, all listed",
            config_with(&target_with(
                "approvals",
                "approvals = [{ group = \"sre\", count = 0 }]\nnamespaces = []",
            ))
            .replace("namespaces = [\"payments\"]\n", ""),
            vec![
                "2 problems:",
                "target prod-gke: namespaces is empty",
                "target prod-gke: approvals: count for group \"sre\" is 0",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (name, text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("case-{i}.toml"));
        std::fs::write(&file, text).expect("write the case");
        let output = check_config(&file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            failures.push(format!("{name}: accepted\n{text}"));
            continue;
        }
        if !stderr.contains(&file.display().to_string()) {
            failures.push(format!(
                "{name}: the error does not name the file: {stderr}"
            ));
        }
        for e in expected {
            if !stderr.contains(e) {
                failures.push(format!("{name}: stderr lacks {e:?}:\n{stderr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(cases.len() >= 20);
}

#[test]
fn check_config_on_a_missing_file_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = check_config(&dir.path().join("nope.toml"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("reading") && stderr.contains("nope.toml"),
        "{stderr}"
    );
}
