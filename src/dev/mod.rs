//! `dev` mode: the broker, a development OIDC issuer and a simulated cluster in one process,
//! each reached over loopback HTTP exactly as production reaches the real ones.

pub mod deployer;
pub mod gke_cluster;
pub mod google;
pub mod host;
pub mod idp;
pub mod sim_cluster;
pub mod sim_logging;
pub mod sim_run;
pub mod standalone;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::app::Broker;
use crate::clock::Clock;
use crate::config::{Config, Credentials, OidcConfig, Roles, TargetConfig, TargetKind};
use crate::domain::ApprovalRule;
use crate::domain::policy::{ImagePolicy, PodPolicy, default_kinds};
use idp::DevIdp;
use sim_cluster::{SimCluster, SimClusterConfig};
use sim_run::{SimRun, SimRunConfig};

/// The images the simulated Binary Authorization treats as attested.
pub const ATTESTED_PREFIX: &str = "us-docker.pkg.dev/acme/release/";
pub const TARGET: &str = "dev-cluster";
/// The Cloud Run target, its simulated project and region, and its one service.
pub const RUN_TARGET: &str = "dev-run";
pub const RUN_PROJECT: &str = "dev-project";
pub const RUN_REGION: &str = "us-central1";
pub const RUN_SERVICE: &str = "checkout";
/// The runtime service account `checkout` runs as, the one dev-run allows.
pub const RUN_SERVICE_ACCOUNT: &str = "checkout@dev-project.iam.gserviceaccount.com";
/// The attested image `checkout` starts with.
pub const RUN_RELEASE_IMAGE: &str = "us-docker.pkg.dev/acme/release/checkout@sha256:1111111111111111111111111111111111111111111111111111111111111111";

pub struct DevOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub clock: Clock,
    /// `[oidc] decision_max_age`: how recent a sign-in browser decisions need.
    pub decision_max_age: Duration,
}

/// `[oidc] decision_max_age` unless told otherwise.
pub const DECISION_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// A running dev environment; dropping it does not stop the servers (they run on the runtime).
pub struct DevEnv {
    pub base_url: String,
    pub issuer: String,
    pub cluster_url: String,
    /// The simulated Cloud Run Admin API's root (paths start with `/v2/`).
    pub run_url: String,
    pub run: SimRun,
    /// The read-only kubeconfig for people (anonymous reads).
    pub kubeconfig: PathBuf,
    pub sim: SimCluster,
    /// `deployer@example.com`'s token and kubeconfig for the simulated cluster.
    pub deployer: deployer::Deployer,
    /// The simulated metadata server, GKE API and HTTPS cluster behind `dev-gke`.
    pub gke: gke_cluster::DevGke,
    /// The simulated Cloud Logging API's root (`POST /v2/entries:list`), with `dev-gke`'s
    /// Admin Activity audit log.
    pub logging_url: String,
    pub logging: sim_logging::SimLogging,
    pub idp: DevIdp,
    pub broker: Broker,
}

/// Refuses anything but loopback: dev mode has a token-minting issuer and must never be exposed.
pub fn check_loopback(listen: &SocketAddr) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!(
            "dev mode only listens on loopback (127.0.0.1 or ::1), not {}",
            listen.ip()
        );
    }
    Ok(())
}

pub async fn start(options: DevOptions) -> anyhow::Result<DevEnv> {
    start_with_targets(options, Vec::new()).await
}

/// `start`, with more targets beside `dev-cluster` (for tests of other policies). Each one
/// applies to the same simulated cluster with the broker's credentials.
pub async fn start_with_targets(
    options: DevOptions,
    extra_targets: Vec<TargetConfig>,
) -> anyhow::Result<DevEnv> {
    start_inner(options, extra_targets, false, Vec::new()).await
}

/// `start`, announcing to these notification endpoints (their URLs and secrets already
/// loaded): how tests show what the pages say about notifications.
pub async fn start_notifying(
    options: DevOptions,
    notifications: Vec<crate::config::NotificationConfig>,
) -> anyhow::Result<DevEnv> {
    start_inner(options, Vec::new(), false, notifications).await
}

/// `start` with the simulated metadata server down (503) from the first moment, before the
/// broker's credentials ask it for a token: how tests show an outage of the broker's Google
/// identity. `env.gke.metadata.set_down(false)` brings it back.
pub async fn start_with_metadata_down(options: DevOptions) -> anyhow::Result<DevEnv> {
    start_inner(options, Vec::new(), true, Vec::new()).await
}

async fn start_inner(
    options: DevOptions,
    extra_targets: Vec<TargetConfig>,
    metadata_down: bool,
    notifications: Vec<crate::config::NotificationConfig>,
) -> anyhow::Result<DevEnv> {
    check_loopback(&options.listen)?;
    crate::app::install_crypto();
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {}", options.listen))?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let issuer = format!("{base_url}/dev/idp");

    let write_token = uuid::Uuid::new_v4().simple().to_string();
    let sim = SimCluster::new(SimClusterConfig {
        write_token: write_token.clone(),
        attested_prefixes: vec![ATTESTED_PREFIX.to_owned()],
        namespaces: vec!["default".into(), "prod".into()],
    });
    let sim_listener = TcpListener::bind((addr.ip(), 0)).await?;
    let cluster_url = format!("http://{}", sim_listener.local_addr()?);
    tokio::spawn(sim.clone().serve(sim_listener));
    let deployer = deployer::start(&sim, addr.ip(), &options.data_dir).await?;

    let gke = gke_cluster::start(addr.ip()).await?;
    gke.metadata.set_down(metadata_down);
    // The deployer may deploy on the GKE cluster too, with the same token of their own.
    gke.sim.add_writer(&deployer.token, deployer::DEPLOYER);
    let logging = sim_logging::SimLogging::new(
        gke.metadata.clone(),
        vec![sim_logging::ClusterLog {
            sim: gke.sim.clone(),
            project: gke_cluster::PROJECT.into(),
            location: gke_cluster::LOCATION.into(),
            cluster: gke_cluster::GKE_TARGET.into(),
        }],
    );
    let logging_listener = TcpListener::bind((addr.ip(), 0)).await?;
    let logging_url = format!("http://{}", logging_listener.local_addr()?);
    let logging_router = logging.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(logging_listener, logging_router).await {
            tracing::error!(error = %e, "the simulated Logging API stopped");
        }
    });
    // The simulated Cloud Run takes only tokens the simulated metadata server issued.
    let metadata = gke.metadata.clone();
    let run = SimRun::new(SimRunConfig {
        project: RUN_PROJECT.into(),
        region: RUN_REGION.into(),
        attested_prefixes: vec![ATTESTED_PREFIX.to_owned()],
        authorize: std::sync::Arc::new(move |token: &str| {
            (metadata.check(token) == google::TokenCheck::Valid)
                .then(|| google::SERVICE_ACCOUNT.to_owned())
        }),
    });
    run.seed(RUN_SERVICE, RUN_RELEASE_IMAGE, RUN_SERVICE_ACCOUNT);
    let run_listener = TcpListener::bind((addr.ip(), 0)).await?;
    let run_url = format!("http://{}", run_listener.local_addr()?);
    tokio::spawn(run.clone().serve(run_listener));
    let kubeconfig = options.data_dir.join("kubeconfig");
    write_file(
        &kubeconfig,
        &gke_cluster::people_kubeconfig(&cluster_url, &gke.cluster_url, &gke.ca_pem),
    )?;
    let broker_kubeconfig = options.data_dir.join("broker-kubeconfig");
    write_file(
        &broker_kubeconfig,
        &sim_cluster::kubeconfig(&cluster_url, Some(&write_token)),
    )?;

    let mut config = dev_config(&base_url, &issuer, &options.data_dir, &broker_kubeconfig)?;
    config.oidc.decision_max_age = options.decision_max_age;
    config.notifications = notifications;
    let run_api: url::Url = run_url.parse()?;
    config
        .targets
        .push(dev_gke_target(&gke.api_url, logging_url.parse()?));
    config.targets.push(dev_run_target(&run_url)?);
    config
        .targets
        .extend(extra_targets.into_iter().map(|target| match target.kind {
            TargetKind::CloudRun => TargetConfig {
                run_api: Some(run_api.clone()),
                ..target
            },
            _ => TargetConfig {
                credentials: Credentials::Kubeconfig,
                kubeconfig: Some(broker_kubeconfig.clone()),
                context: None,
                ..target
            },
        }));
    let idp = DevIdp::new(&issuer, options.clock.clone())?;
    // The broker's real google-cloud-auth code, pointed at the simulated metadata server
    // without touching the process environment (GCE_METADATA_HOST, if set, still wins).
    let google = crate::google::GoogleAuth::metadata_server(&gke.metadata_url)?;
    config.validate()?;
    let store = crate::store::Store::connect(&config.database_url)
        .await
        .context("opening the database")?;
    let targets = crate::targets::Registry::connect_with(&config.targets, Some(google)).await?;
    let mut broker = Broker::with_targets(config, options.clock, store, targets).await?;
    broker.start_worker();
    let everything = broker
        .router()
        .merge(broker.metrics_router())
        .nest_service("/dev/idp", idp.router());
    // The refusal of other names gets the security headers too.
    let router = crate::web::with_security_headers(
        axum::Router::new().fallback_service(tower::Layer::layer(&host::LoopbackOnly, everything)),
    );
    tokio::spawn(async move {
        if let Err(e) = crate::app::serve(listener, router).await {
            tracing::error!(error = %e, "dev server stopped");
        }
    });
    Ok(DevEnv {
        base_url,
        issuer,
        cluster_url,
        run_url,
        run,
        kubeconfig,
        sim,
        deployer,
        gke,
        logging_url,
        logging,
        idp,
        broker,
    })
}

/// The configuration dev mode runs with, through the same types a configuration file fills.
fn dev_config(
    base_url: &str,
    issuer: &str,
    data_dir: &Path,
    kubeconfig: &Path,
) -> anyhow::Result<Config> {
    let database = data_dir.join("broker.db");
    Ok(Config {
        limits: crate::config::RateLimits::default(),
        notifications: Vec::new(),
        public_url: base_url.parse()?,
        listen: base_url.trim_start_matches("http://").parse()?,
        metrics_listen: None,
        database_url: format!("sqlite://{}?mode=rwc", database.display()),
        database_connections: crate::config::default_database_connections(),
        oidc: OidcConfig {
            issuer: issuer.to_owned(),
            client_id: idp::CLIENT_ID.to_owned(),
            client_secret_env: None,
            groups_claim: "groups".into(),
            allowed_domains: Vec::new(),
            required_groups: Vec::new(),
            session_max_age: Duration::from_secs(8 * 3600),
            decision_max_age: DECISION_MAX_AGE,
            client_secret: None,
        },
        roles: Roles {
            requesters: vec!["oncall".into()],
            auditors: vec!["auditors".into()],
        },
        targets: vec![dev_target(kubeconfig)],
    })
}

/// The `dev-cluster` target: the policy the demo and the tests run with, reached through the
/// broker's kubeconfig for the simulated cluster.
pub fn dev_target(kubeconfig: &Path) -> TargetConfig {
    TargetConfig {
        name: TARGET.into(),
        kind: TargetKind::Kubernetes,
        credentials: Credentials::Kubeconfig,
        kubeconfig: Some(kubeconfig.to_owned()),
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
        namespaces: vec!["default".into(), "prod".into()],
        max_duration: Duration::from_secs(4 * 3600),
        approval_window: Duration::from_secs(30 * 60),
        approvals: vec![ApprovalRule {
            group: "approvers".into(),
            count: 2,
        }],
        images: ImagePolicy {
            registries: vec!["us-docker.pkg.dev/".into()],
            require_digest: true,
        },
        pods: PodPolicy {
            allow_automount_token: true,
            ..PodPolicy::default()
        },
        kinds: default_kinds(),
        ticket_pattern: "^[A-Z][A-Z0-9]*-[0-9]+$".into(),
        max_objects: 20,
        max_manifest_bytes: 256 * 1024,
        max_extensions: 2,
        require_review: false,
        on_unbrokered: Default::default(),
        audit_logs: false,
        logging_api: None,
    }
}

/// The `dev-gke` target: `dev-cluster`'s policy, on the simulated GKE cluster, reached with
/// the broker's Google identity through the simulated GKE API at `container_api`, its Cloud
/// Audit Logs read through the simulated Logging API at `logging_api`.
pub fn dev_gke_target(container_api: &str, logging_api: url::Url) -> TargetConfig {
    TargetConfig {
        name: gke_cluster::GKE_TARGET.into(),
        kind: TargetKind::Gke,
        credentials: Credentials::Google,
        kubeconfig: None,
        project: Some(gke_cluster::PROJECT.into()),
        location: Some(gke_cluster::LOCATION.into()),
        cluster: Some(gke_cluster::GKE_TARGET.into()),
        container_api: Some(container_api.to_owned()),
        audit_logs: true,
        logging_api: Some(logging_api),
        ..dev_target(Path::new("unused"))
    }
}

/// The `dev-run` target: the simulated Cloud Run's `checkout`, under the same rules as
/// `dev-cluster` (images from us-docker.pkg.dev/ by digest, 2 approvals from approvers).
pub fn dev_run_target(run_url: &str) -> anyhow::Result<TargetConfig> {
    Ok(TargetConfig {
        name: RUN_TARGET.into(),
        kind: TargetKind::CloudRun,
        credentials: Credentials::Google,
        kubeconfig: None,
        context: None,
        project: Some(RUN_PROJECT.into()),
        region: Some(RUN_REGION.into()),
        services: vec![RUN_SERVICE.into()],
        service_accounts: vec![RUN_SERVICE_ACCOUNT.into()],
        run_api: Some(run_url.parse()?),
        namespaces: Vec::new(),
        ..dev_target(Path::new(""))
    })
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// What `dev` prints on start: where everything is and who you can be.
pub fn banner(env: &DevEnv) -> String {
    let personas: Vec<String> = idp::PERSONAS
        .iter()
        .map(|(name, groups)| {
            format!(
                "  {name:<8} {}",
                if groups.is_empty() {
                    "(no groups)".to_owned()
                } else {
                    groups.join(", ")
                }
            )
        })
        .collect();
    format!(
        "breakglass-broker dev mode\n\n\
         broker:            {base}\n\
         OIDC issuer:       {issuer}  (token for scripts: {issuer}/token?persona=alice)\n\
         simulated cluster: {cluster}\n\
         simulated GKE cluster: {gke_cluster}  (HTTPS, its own CA; kubectl --context dev-gke)\n\
         simulated GKE API: {gke_api}  (clusters.get; paths start with /v1/)\n\
         simulated metadata server: {metadata}  (GCE_METADATA_HOST={metadata_host})\n\
         simulated Cloud Run: {run}\n\
         simulated Cloud Logging: {logging}  (entries:list; dev-gke's Admin Activity audit log)\n\
         kubeconfig:        {kubeconfig}\n\
         deployer's kubeconfig: {deployer}  (deployer@example.com, may deploy in default and prod; not the broker)\n\n\
         personas:\n{personas}\n\n\
         target {TARGET}: namespaces default, prod; 2 approvals from approvers; images from us-docker.pkg.dev/ by digest\n\
         target dev-gke: the same policy, on the simulated GKE cluster, with the broker's Google identity; its Cloud Audit Logs are read too\n\
         target {RUN_TARGET}: Cloud Run service {RUN_SERVICE} in {RUN_PROJECT}/{RUN_REGION}; the same rules, with the broker's Google identity\n",
        base = env.base_url,
        issuer = env.issuer,
        cluster = env.cluster_url,
        gke_cluster = env.gke.cluster_url,
        gke_api = env.gke.api_url,
        metadata = env.gke.metadata_url,
        metadata_host = env.gke.metadata_url.trim_start_matches("http://"),
        run = env.run_url,
        logging = env.logging_url,
        kubeconfig = env.kubeconfig.display(),
        deployer = env.deployer.kubeconfig.display(),
        personas = personas.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_mode_refuses_anything_but_loopback() {
        assert!(check_loopback(&"127.0.0.1:8080".parse().expect("addr")).is_ok());
        assert!(check_loopback(&"[::1]:8080".parse().expect("addr")).is_ok());
        let err = check_loopback(&"0.0.0.0:8080".parse().expect("addr")).expect_err("refused");
        assert!(err.to_string().contains("loopback"));
        assert!(check_loopback(&"10.1.2.3:8080".parse().expect("addr")).is_err());
    }
}
