//! The simulator as an unmodified kubectl sees it.
//!
//! kubectl never sends credentials over plain HTTP (client-go drops the user's
//! token unless the transport is TLS), so everything here is an anonymous read.

use std::error::Error;
use std::path::Path;

use breakglass_broker::dev::sim_cluster::kubeconfig;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

use super::{
    ATTESTED, BREAKGLASS, Sim, TOKEN, TestResult, UNATTESTED, apply, deployment, deployment_key,
};

/// Runs the real kubectl against the simulator with a throwaway kubeconfig, cache and HOME.
async fn kubectl(sim: &Sim, dir: &Path, args: &[&str]) -> Result<String, Box<dyn Error>> {
    let config = dir.join("kubeconfig");
    std::fs::write(&config, kubeconfig(&sim.url, None))?;
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&config)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env("HOME", dir)
        .output()
        .await?;
    let stdout = String::from_utf8(output.stdout)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("kubectl {args:?} failed: {stderr}\n{stdout}").into());
    }
    Ok(stdout)
}

#[tokio::test]
async fn kubectl_lists_only_breakglass_deployments_by_label() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    apply(
        &api,
        &deployment("steady-api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    apply(&api, &deployment("hotfix-api", UNATTESTED, true)?).await?;
    let dir = tempfile::tempdir()?;

    let label = format!("{BREAKGLASS}=true");
    let filtered = kubectl(
        &sim,
        dir.path(),
        &["get", "deployments", "-n", "prod", "-l", &label],
    )
    .await?;
    let short = kubectl(&sim, dir.path(), &["get", "deploy", "-n", "prod"]).await?;

    assert!(filtered.starts_with("NAME"), "{filtered}");
    assert!(filtered.contains("hotfix-api"), "{filtered}");
    assert!(!filtered.contains("steady-api"), "{filtered}");
    assert!(
        short.contains("hotfix-api") && short.contains("steady-api"),
        "{short}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_json_and_yaml_output_round_trip_the_stored_object() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    apply(&api, &deployment("api", UNATTESTED, true)?).await?;
    let dir = tempfile::tempdir()?;

    let json_out = kubectl(
        &sim,
        dir.path(),
        &["get", "deploy", "api", "-n", "prod", "-o", "json"],
    )
    .await?;
    let yaml_out = kubectl(
        &sim,
        dir.path(),
        &["get", "deploy", "api", "-n", "prod", "-o", "yaml"],
    )
    .await?;
    let printed: Value = serde_json::from_str(&json_out)?;

    let mut stored = sim
        .cluster
        .object(&deployment_key("api"))
        .ok_or("object should exist")?;
    // kubectl leaves managedFields out unless asked with --show-managed-fields.
    stored["metadata"]
        .as_object_mut()
        .ok_or("metadata")?
        .remove("managedFields");
    assert_eq!(printed, stored);
    assert!(yaml_out.contains("kind: Deployment"), "{yaml_out}");
    assert!(
        yaml_out.contains(&format!("image: {UNATTESTED}")),
        "{yaml_out}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_get_pods_across_namespaces_prints_each_namespace() -> TestResult {
    let sim = Sim::start().await?;
    let client = sim.client(Some(TOKEN)).await?;
    let pods = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Pod"));
    for namespace in ["default", "prod"] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &pods);
        let pod: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("{namespace}-pod") },
            "spec": { "containers": [{ "name": "c", "image": format!("{ATTESTED}c:1") }] },
        }))?;
        api.create(&PostParams::default(), &pod).await?;
    }
    let dir = tempfile::tempdir()?;

    let out = kubectl(&sim, dir.path(), &["get", "pods", "-A"]).await?;

    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.first().map(|r| r[..2].to_vec()),
        Some(vec!["NAMESPACE", "NAME"]),
        "{out}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&["default", "default-pod"])),
        "{out}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with(&["prod", "prod-pod"])),
        "{out}"
    );
    Ok(())
}

/// `kubectl get pods -n prod` with `args` (a watch), its output read line by line as it comes.
async fn kubectl_watching(
    sim: &Sim,
    dir: &Path,
    args: &[&str],
) -> Result<
    (
        tokio::process::Child,
        tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ),
    Box<dyn Error>,
> {
    use tokio::io::AsyncBufReadExt;
    let config = dir.join("kubeconfig");
    std::fs::write(&config, kubeconfig(&sim.url, None))?;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&config)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["get", "pods", "-n", "prod"])
        .args(args)
        .env("HOME", dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("kubectl's output")?;
    Ok((child, tokio::io::BufReader::new(stdout).lines()))
}

/// Reads lines until one starts with `name`; returns every line read, that one last.
async fn lines_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    name: &str,
) -> Result<Vec<String>, Box<dyn Error>> {
    let mut read = Vec::new();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| format!("no line for {name} within 10 s: {read:?}"))??
            .ok_or_else(|| format!("kubectl ended before printing {name}: {read:?}"))?;
        let found = line.starts_with(name);
        read.push(line);
        if found {
            return Ok(read);
        }
    }
}

async fn create_pod(sim: &Sim, name: &str) -> TestResult {
    let client = sim.client(Some(TOKEN)).await?;
    let pods = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Pod"));
    let api: Api<DynamicObject> = Api::namespaced_with(client, "prod", &pods);
    let pod: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name },
        "spec": { "containers": [{ "name": "c", "image": format!("{ATTESTED}c:1") }] },
    }))?;
    api.create(&PostParams::default(), &pod).await?;
    Ok(())
}

/// Waits until kubectl's watch has reached the simulator (its list came first).
async fn watch_started(sim: &Sim) -> TestResult {
    let start = std::time::Instant::now();
    while sim.cluster.reads().get("pods").map_or(0, |r| r.watches) == 0 {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return Err("kubectl never started its watch".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_get_pods_watch_prints_what_exists_then_a_pod_created_while_it_watches()
-> TestResult {
    let sim = Sim::start().await?;
    create_pod(&sim, "before").await?;
    let dir = tempfile::tempdir()?;
    let (mut kubectl, mut lines) = kubectl_watching(&sim, dir.path(), &["-w"]).await?;

    let listed = lines_until(&mut lines, "before").await?;
    watch_started(&sim).await?;
    create_pod(&sim, "after").await?;
    let watched = lines_until(&mut lines, "after").await?;
    kubectl.kill().await?;

    assert!(listed[0].starts_with("NAME"), "{listed:?}");
    assert_eq!(watched.len(), 1, "only the new pod: {watched:?}");
    assert_eq!(sim.cluster.reads()["pods"].lists, 1);
    Ok(())
}

#[tokio::test]
async fn kubectl_get_pods_watch_only_prints_only_what_changes() -> TestResult {
    let sim = Sim::start().await?;
    create_pod(&sim, "before").await?;
    let dir = tempfile::tempdir()?;
    let (mut kubectl, mut lines) = kubectl_watching(&sim, dir.path(), &["--watch-only"]).await?;

    watch_started(&sim).await?;
    create_pod(&sim, "after").await?;
    let printed = lines_until(&mut lines, "after").await?;
    kubectl.kill().await?;

    assert!(printed[0].starts_with("NAME"), "{printed:?}");
    assert!(
        printed.iter().all(|l| !l.starts_with("before")),
        "{printed:?}"
    );
    Ok(())
}
