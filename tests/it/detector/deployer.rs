//! The deployer's side: kubectl with dev mode's deployer-kubeconfig, and the admission policy.

use super::*;

/// Runs kubectl as the deployer, with dev mode's `deployer-kubeconfig` (HTTPS, a token).
async fn kubectl_as_deployer(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let home = env.dir.path().join("kubectl-home");
    std::fs::create_dir_all(&home).expect("home");
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.env.deployer.kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(args)
        .env("HOME", &home)
        .output()
        .await
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployer_deploys_attested_images_but_the_policy_refuses_their_breakglass() {
    let env = TestEnv::start().await;
    let plain = deployment_body(
        "web",
        pod_template(json!({ "app": "web" }), json!({}), ATTESTED),
    );
    let (status, body) = deploy(&env, "/apis/apps/v1/namespaces/prod/deployments", &plain).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("evil"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may only be set by the breakglass broker"),
        "{message}"
    );
    assert!(message.contains("deployer@example.com"), "{message}");
    // Nobody but the cluster's administrator turns the policy off.
    let refused = env
        .http
        .post(format!("{}/sim/v1/admission-policy", env.env.cluster_url))
        .bearer_auth(&env.env.deployer.token)
        .json(&json!({ "enabled": false }))
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(env.env.sim.admission_policy());
    // The broker's token turns it off, as an administrator would uninstall it.
    let kubeconfig =
        std::fs::read_to_string(env.dir.path().join("broker-kubeconfig")).expect("kubeconfig");
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token")
        .trim_matches('"')
        .to_owned();
    let done = env
        .http
        .post(format!("{}/sim/v1/admission-policy", env.env.cluster_url))
        .bearer_auth(token)
        .json(&json!({ "enabled": false }))
        .send()
        .await
        .expect("answers");
    assert_eq!(done.status(), StatusCode::OK);
    assert!(!env.env.sim.admission_policy());
    let (status, _) = deploy(
        &env,
        "/apis/apps/v1/namespaces/prod/deployments",
        &labelled("evil"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployers_kubectl_writes_with_its_kubeconfig_and_is_refused_breakglass_by_the_policy()
{
    let env = TestEnv::start().await;
    assert!(env.env.deployer.kubeconfig.ends_with("deployer-kubeconfig"));
    let manifests = env.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("dir");
    let plain = manifests.join("web.json");
    let attested = deployment_body(
        "web",
        pod_template(json!({ "app": "web" }), json!({}), ATTESTED),
    );
    std::fs::write(&plain, attested.to_string()).expect("write");
    let (ok, out) = kubectl_as_deployer(
        &env,
        &[
            "-n",
            "prod",
            "create",
            "--validate=false",
            "-f",
            plain.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{out}");
    let stored = env
        .env
        .sim
        .object(&breakglass_broker::dev::sim_cluster::ObjectKey::new(
            "apps/v1",
            "Deployment",
            "prod",
            "web",
        ))
        .expect("created by the deployer");
    assert_eq!(
        stored["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    let evil = manifests.join("evil.json");
    std::fs::write(&evil, labelled("evil").to_string()).expect("write");
    let (ok, out) = kubectl_as_deployer(
        &env,
        &[
            "-n",
            "prod",
            "create",
            "--validate=false",
            "-f",
            evil.to_str().expect("path"),
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("may only be set by the breakglass broker"),
        "{out}"
    );
    env.env.sim.set_admission_policy(false);
    let (ok, out) = kubectl_as_deployer(
        &env,
        &[
            "-n",
            "prod",
            "create",
            "--validate=false",
            "-f",
            evil.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{out}");
}
