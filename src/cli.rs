//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{self, Broker};
use crate::clock::Clock;
use crate::config::Config;
use crate::dev;

#[derive(Parser)]
#[command(
    name = "breakglass-broker",
    version,
    about = "Approval-gated breakglass for GKE Binary Authorization"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on loopback: broker, development OIDC issuer, simulated cluster.
    Dev {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "./.breakglass-dev")]
        data_dir: PathBuf,
        /// How recent a sign-in a decision from the browser needs (at least 1m).
        #[arg(long, default_value = "15m", value_parser = decision_max_age)]
        decision_max_age: std::time::Duration,
    },
    /// Run the broker from a configuration file.
    Serve {
        #[arg(long, env = "BREAKGLASS_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and say what is wrong with it.
    CheckConfig { file: PathBuf },
    /// The auditor's tools: `audit verify` checks the audit history's hash chain.
    Audit {
        #[command(subcommand)]
        command: crate::audit::cli::AuditCommand,
    },
    /// Run the simulated Kubernetes API server on its own (loopback only), for several
    /// brokers to share. Prints its URL. The write token comes from --write-token-file, or
    /// the BREAKGLASS_SIM_WRITE_TOKEN environment variable, or is made up (then only the
    /// --kubeconfig written here can write).
    SimCluster {
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        #[arg(long)]
        write_token_file: Option<PathBuf>,
        /// Write a kubeconfig with the write token here, for brokers.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Write a kubeconfig without the token here, for people (reads only).
        #[arg(long)]
        read_kubeconfig: Option<PathBuf>,
    },
    /// Run the development OIDC issuer on its own (loopback only), for several brokers to
    /// share. Its issuer URL is http://LISTEN/dev/idp, as in `dev`; it prints it.
    DevIdp {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
    /// The client commands (request, approve, reject, status, list, close, extend), against a
    /// running broker. The ID token comes from BREAKGLASS_TOKEN or --token-command.
    #[command(flatten)]
    Client(Box<crate::client::ClientCommand>),
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev {
            listen,
            data_dir,
            decision_max_age,
        } => {
            init_logging(false);
            run_dev(listen, data_dir, decision_max_age).await
        }
        Command::Serve { config } => {
            init_logging(true);
            run_serve(config).await
        }
        Command::CheckConfig { file } => check_config(file),
        Command::Audit { command } => return crate::audit::cli::run(command).await,
        Command::Client(command) => return crate::client::run(*command).await,
        Command::SimCluster {
            listen,
            write_token_file,
            kubeconfig,
            read_kubeconfig,
        } => {
            init_logging(false);
            run_sim_cluster(listen, write_token_file, kubeconfig, read_kubeconfig).await
        }
        Command::DevIdp { listen } => {
            init_logging(false);
            dev::standalone::run_dev_idp(listen).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,kube=warn,tower_http=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // Cloud Logging's shape: `severity`, `message`, fields beside them (src/logging.rs).
        builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(crate::logging::CloudLogging)
            .init();
    } else {
        builder.compact().init();
    }
}

/// `--decision-max-age`: a duration of at least a minute, as `[oidc] decision_max_age`.
fn decision_max_age(text: &str) -> Result<std::time::Duration, String> {
    let age = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if age < std::time::Duration::from_secs(60) {
        return Err("must be at least 1m".into());
    }
    Ok(age)
}

async fn run_dev(
    listen: SocketAddr,
    data_dir: PathBuf,
    decision_max_age: std::time::Duration,
) -> anyhow::Result<()> {
    let env = dev::start(dev::DevOptions {
        listen,
        data_dir,
        clock: Clock::system(),
        decision_max_age,
    })
    .await?;
    println!("{}", dev::banner(&env));
    app::shutdown_signal().await;
    Ok(())
}

async fn run_serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    let mut broker = Broker::build(config, Clock::system()).await?;
    broker.start_worker();
    if let Some(address) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding metrics_listen {address}"))?;
        tracing::info!(listen = %listener.local_addr()?, "metrics serving");
        let router = broker.metrics_router();
        tokio::spawn(async move {
            if let Err(e) = app::serve(listener, router).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // The bound address, not the configured one: with port 0 this is how to find the broker.
    let listen = listener.local_addr()?;
    tracing::info!(%listen, "breakglass-broker serving");
    let store = broker.state.store.clone();
    app::serve(listener, broker.router()).await?;
    // What the last changes wrote goes into the chain (and the log) before the process ends;
    // whatever is left waits in the journal for the next pass of any replica.
    let _ = tokio::time::timeout(crate::store::PASS_LIMIT, store.chain_committed()).await;
    Ok(())
}

/// The environment variable `sim-cluster` takes its write token from.
const SIM_WRITE_TOKEN_ENV: &str = "BREAKGLASS_SIM_WRITE_TOKEN";

async fn run_sim_cluster(
    listen: SocketAddr,
    write_token_file: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    read_kubeconfig: Option<PathBuf>,
) -> anyhow::Result<()> {
    let write_token = match (write_token_file, std::env::var(SIM_WRITE_TOKEN_ENV)) {
        (Some(path), _) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading the write token from {}", path.display()))?,
        (None, Ok(token)) => token,
        (None, Err(_)) => {
            if kubeconfig.is_none() {
                eprintln!(
                    "note: no write token given and no --kubeconfig to hold the one made up, so nothing can write to this cluster"
                );
            }
            uuid::Uuid::new_v4().simple().to_string()
        }
    };
    dev::standalone::run_sim_cluster(dev::standalone::SimClusterOptions {
        listen,
        write_token,
        kubeconfig,
        read_kubeconfig,
    })
    .await
}

fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    println!(
        "{}: ok ({} targets: {}; {} notification endpoints)",
        path.display(),
        config.targets.len(),
        config
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        config.notifications.len()
    );
    Ok(())
}
