//! The command line client, run as the real binary against a dev broker, with tokens from the
//! dev issuer: filing, approving with and without the prompt, waiting, listing, closing, and
//! the one-line errors and exit codes scripts rely on.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::common::{HOTFIX_IMAGE, TestEnv, deployment};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// The binary with the broker's URL and, for `persona`, a token in BREAKGLASS_TOKEN; nothing
/// inherited from the environment the tests run in.
async fn command(env: &TestEnv, persona: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_breakglass-broker"));
    command
        .args(args)
        .env_remove("BREAKGLASS_TOKEN")
        .env_remove("BREAKGLASS_BROKER")
        .env("BREAKGLASS_BROKER", &env.env.base_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(persona) = persona {
        command.env("BREAKGLASS_TOKEN", env.token(persona).await);
    }
    command
}

async fn finish(child: Child) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command ends")
        .expect("the command runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the binary to its end with `stdin` as its input.
async fn cli_with(env: &TestEnv, persona: Option<&str>, args: &[&str], stdin: &str) -> Run {
    let mut child = command(env, persona, args).await.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("write");
    drop(input);
    finish(child).await
}

async fn cli(env: &TestEnv, persona: Option<&str>, args: &[&str]) -> Run {
    cli_with(env, persona, args, "").await
}

fn manifest_file(env: &TestEnv, name: &str) -> String {
    let path = env.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, deployment(name, HOTFIX_IMAGE)).expect("manifest written");
    path.to_string_lossy().into_owned()
}

/// Files a request for `name` through the binary as alice; returns its JSON.
async fn file(env: &TestEnv, name: &str) -> Value {
    let manifest = manifest_file(env, name);
    let run = cli(
        env,
        Some("alice"),
        &[
            "request",
            "--target",
            "dev-cluster",
            "--namespace",
            "prod",
            "--manifest",
            &manifest,
            "--ticket",
            "INC-7",
            "--justification",
            "payments API crashloops; hotfix",
            "--duration",
            "30m",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.json()
}

fn id_of(request: &Value) -> String {
    request["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_request_filed_and_approved_from_the_terminal_becomes_active_and_status_wait_says_so() {
    let env = TestEnv::start().await;
    let filed = file(&env, "cli-api").await;
    assert_eq!(filed["state"], "pending");
    assert_eq!(filed["ticket"], "INC-7");
    let id = id_of(&filed);

    let bob = cli(
        &env,
        Some("bob"),
        &["approve", &id, "--yes", "--comment", "checked"],
    )
    .await;
    assert_eq!(bob.code, 0, "{}", bob.stderr);
    assert!(
        bob.stdout.contains(&format!("approved {id}")),
        "{}",
        bob.stdout
    );
    assert!(
        bob.stderr.contains(HOTFIX_IMAGE),
        "shows what will run: {}",
        bob.stderr
    );
    let carol = cli(
        &env,
        Some("carol"),
        &["approve", &id, "--yes", "--output", "json"],
    )
    .await;
    assert_eq!(carol.code, 0, "{}", carol.stderr);
    assert_eq!(carol.json()["id"], json!(id));

    let status = cli(
        &env,
        Some("alice"),
        &["status", &id, "--wait", "--output", "json"],
    )
    .await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let body = status.json();
    assert_eq!(body["state"], "active", "{body}");
    assert!(body["expires_at"].is_string(), "{body}");
    let (_, approvals) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    let comments: Vec<&str> = approvals["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .filter_map(|a| a["comment"].as_str())
        .collect();
    assert!(comments.contains(&"checked"), "{approvals}");

    let human = cli(&env, Some("dave"), &["status", &id]).await;
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains("[active]"), "{}", human.stdout);
    assert!(
        human.stdout.contains("dev-cluster / prod"),
        "{}",
        human.stdout
    );
}

#[tokio::test]
async fn request_wait_returns_once_the_request_is_active() {
    let env = TestEnv::start().await;
    let manifest = manifest_file(&env, "cli-wait");
    let mut child = command(
        &env,
        Some("alice"),
        &[
            "request",
            "--target",
            "dev-cluster",
            "--namespace",
            "prod",
            "--manifest",
            &manifest,
            "--ticket",
            "INC-8",
            "--justification",
            "payments API crashloops; hotfix",
            "--duration",
            "30m",
            "--wait",
        ],
    )
    .await
    .spawn()
    .expect("spawn");
    drop(child.stdin.take());
    // The request appears; approving it lets the waiting command finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (id, digest) = loop {
        let (_, list) = env.get("dave", "/api/v1/requests?ticket=INC-8").await;
        if let Some(r) = list.as_array().and_then(|l| l.first()) {
            break (id_of(r), r["digest"].as_str().expect("digest").to_owned());
        }
        assert!(tokio::time::Instant::now() < deadline, "never filed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(env.approve("bob", &id, &digest).await.0, StatusCode::OK);
    assert_eq!(env.approve("carol", &id, &digest).await.0, StatusCode::OK);
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("filed request {id}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("pending: waiting for approval"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("[active]"), "{}", run.stdout);
}

#[tokio::test]
async fn approve_asks_first_and_an_answer_of_n_approves_nothing() {
    let env = TestEnv::start().await;
    let filed = file(&env, "cli-declined").await;
    let id = id_of(&filed);
    let digest = filed["digest"].as_str().expect("digest");

    let run = cli_with(&env, Some("bob"), &["approve", &id], "n\n").await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    for shown in [
        HOTFIX_IMAGE,
        digest,
        "2 from approvers",
        "payments API crashloops; hotfix",
        "[y/N]",
    ] {
        assert!(run.stderr.contains(shown), "{shown} in {}", run.stderr);
    }
    assert!(
        run.stderr.ends_with("error: not approved\n"),
        "{}",
        run.stderr
    );
    let (_, body) = env.get("dave", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(body["approvals"], json!([]), "{body}");
}

#[tokio::test]
async fn approve_refuses_when_the_request_changed_after_it_was_shown() {
    let env = TestEnv::start().await;
    let id = id_of(&file(&env, "cli-changed").await);
    let mut child = command(&env, Some("bob"), &["approve", &id])
        .await
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut shown = String::new();
    let mut buffer = [0u8; 4096];
    while !shown.contains("[y/N]") {
        let n = tokio::time::timeout(Duration::from_secs(60), stderr.read(&mut buffer))
            .await
            .expect("the prompt comes")
            .expect("read");
        assert!(n > 0, "ended before asking: {shown}");
        shown.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    let (status, _) = env
        .post("alice", &format!("/api/v1/requests/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(b"y\n").await.expect("answer");
    drop(input);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).await.expect("read");
    let run = finish(child).await;
    assert_eq!(run.code, 1);
    assert_eq!(
        rest.trim_start_matches("\n"),
        "error: cannot approve a request that is cancelled\n"
    );
}

#[tokio::test]
async fn list_shows_pending_requests_and_close_ends_a_breakglass() {
    let env = TestEnv::start().await;
    let pending = id_of(&file(&env, "cli-listed").await);
    let active = env.activate("cli-closed", 30).await;

    let list = cli(&env, Some("dave"), &["list", "--state", "pending"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.starts_with("ID "), "{}", list.stdout);
    assert!(list.stdout.contains(&pending), "{}", list.stdout);
    assert!(!list.stdout.contains(&active), "{}", list.stdout);
    let json = cli(&env, Some("dave"), &["list", "--output", "json"]).await;
    assert_eq!(json.json().as_array().map(Vec::len), Some(2));

    let close = cli(
        &env,
        Some("alice"),
        &["close", &active, "--comment", "fixed"],
    )
    .await;
    assert_eq!(close.code, 0, "{}", close.stderr);
    env.wait_for_state(&active, "closed").await;

    let reject = cli(
        &env,
        Some("bob"),
        &["reject", &pending, "--comment", "wrong image"],
    )
    .await;
    assert_eq!(reject.code, 0, "{}", reject.stderr);
    let waited = cli(&env, Some("alice"), &["status", &pending, "--wait"]).await;
    assert_eq!(
        waited.code, 1,
        "a rejected request is a failed wait: {}",
        waited.stderr
    );
    assert!(waited.stdout.contains("[rejected]"), "{}", waited.stdout);
}

#[tokio::test]
async fn errors_are_one_line_with_exit_1_and_usage_errors_exit_2() {
    let env = TestEnv::start().await;
    let id = id_of(&file(&env, "cli-errors").await);

    let mut bad = command(&env, None, &["status", &id]).await;
    bad.env("BREAKGLASS_TOKEN", "not-a-token");
    let run = finish(bad.spawn().expect("spawn")).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: invalid token"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("not-a-token"),
        "the token is never echoed"
    );

    let refused = cli(&env, Some("mallory"), &["approve", &id, "--yes"]).await;
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1
    );

    let no_token = cli(&env, None, &["status", &id]).await;
    assert_eq!(no_token.code, 2, "{}", no_token.stderr);
    assert!(
        no_token.stderr.contains("BREAKGLASS_TOKEN"),
        "{}",
        no_token.stderr
    );

    let both = cli(
        &env,
        Some("alice"),
        &[
            "request",
            "--target",
            "dev-cluster",
            "--manifest",
            "x.yaml",
            "--workload",
            "Deployment/api",
            "--image",
            "api=img",
            "--ticket",
            "INC-1",
            "--justification",
            "x",
            "--duration",
            "30m",
        ],
    )
    .await;
    assert_eq!(both.code, 2, "{}", both.stderr);
    let bad_image = cli(
        &env,
        Some("alice"),
        &[
            "request",
            "--target",
            "dev-cluster",
            "--workload",
            "Deployment/api",
            "--image",
            "no-equals",
            "--ticket",
            "INC-1",
            "--justification",
            "x",
            "--duration",
            "30m",
        ],
    )
    .await;
    assert_eq!(bad_image.code, 2, "{}", bad_image.stderr);
    assert!(
        bad_image.stderr.contains("CONTAINER=IMAGE"),
        "{}",
        bad_image.stderr
    );

    let manifest = manifest_file(&env, "cli-refused");
    let policy = cli(
        &env,
        Some("alice"),
        &[
            "request",
            "--target",
            "dev-cluster",
            "--namespace",
            "kube-system",
            "--manifest",
            &manifest,
            "--ticket",
            "INC-1",
            "--justification",
            "payments API crashloops; hotfix",
            "--duration",
            "30m",
        ],
    )
    .await;
    assert_eq!(policy.code, 1, "{}", policy.stderr);
    assert_eq!(policy.stderr.lines().count(), 1, "{}", policy.stderr);
    assert!(policy.stderr.contains("kube-system"), "{}", policy.stderr);
}

#[tokio::test]
async fn the_token_comes_from_the_token_command_and_its_failure_is_an_error() {
    let env = TestEnv::start().await;
    let id = id_of(&file(&env, "cli-command").await);
    let token = env.token("dave").await;
    let run = cli(
        &env,
        None,
        &[
            "status",
            &id,
            "--output",
            "json",
            "--token-command",
            &format!("echo {token}"),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["id"], json!(id));
    let failed = cli(&env, None, &["status", &id, "--token-command", "exit 7"]).await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(
        failed.stderr.contains("the token command failed"),
        "{}",
        failed.stderr
    );
}

#[tokio::test]
async fn an_images_only_request_names_the_workload_and_its_new_images() {
    let env = TestEnv::start().await;
    let running: Value = serde_saphyr::from_str(&deployment(
        "cli-images",
        "us-docker.pkg.dev/acme/release/api@sha256:3333333333333333333333333333333333333333333333333333333333333333",
    ))
    .expect("manifest");
    crate::flow::deploy_as(&env, "ci", &running).await;
    let image = format!("cli-images={HOTFIX_IMAGE}");
    let run = cli(
        &env,
        Some("alice"),
        &[
            "request",
            "--target",
            "dev-cluster",
            "--namespace",
            "prod",
            "--workload",
            "Deployment/cli-images",
            "--image",
            &image,
            "--ticket",
            "INC-9",
            "--justification",
            "payments API crashloops; hotfix",
            "--duration",
            "1h",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let filed = run.json();
    assert_eq!(filed["duration_minutes"], 60);
    assert_eq!(
        filed["objects"][0]["spec"]["template"]["spec"]["containers"][0]["image"],
        HOTFIX_IMAGE
    );
}

#[tokio::test]
async fn extend_asks_for_more_time_on_an_active_breakglass() {
    let env = TestEnv::start().await;
    let id = env.activate("cli-extended", 30).await;
    let args = [
        "extend",
        &id,
        "--by",
        "30m",
        "--justification",
        "still mitigating",
        "--output",
        "json",
    ];
    let run = cli(&env, Some("alice"), &args).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let extension = run.json();
    assert_eq!(extension["extends"], json!(id));
    assert_eq!(extension["duration_minutes"], 30);
    let again = cli(&env, Some("alice"), &args).await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("still waits for approval"),
        "{}",
        again.stderr
    );
}
