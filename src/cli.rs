//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    },
    /// Run the broker from a configuration file.
    Serve {
        #[arg(long, env = "BREAKGLASS_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and say what is wrong with it.
    CheckConfig { file: PathBuf },
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev { listen, data_dir } => {
            init_logging(false);
            run_dev(listen, data_dir).await
        }
        Command::Serve { config } => {
            init_logging(true);
            run_serve(config).await
        }
        Command::CheckConfig { file } => check_config(file),
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
        builder.json().flatten_event(true).init();
    } else {
        builder.compact().init();
    }
}

async fn run_dev(listen: SocketAddr, data_dir: PathBuf) -> anyhow::Result<()> {
    let env = dev::start(dev::DevOptions {
        listen,
        data_dir,
        clock: Clock::system(),
    })
    .await?;
    println!("{}", dev::banner(&env));
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

async fn run_serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let listen = config.listen;
    let mut broker = Broker::build(config, Clock::system()).await?;
    broker.start_worker();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "breakglass-broker serving");
    app::serve(listener, broker.router()).await?;
    Ok(())
}

fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    println!(
        "{}: ok ({} targets: {})",
        path.display(),
        config.targets.len(),
        config
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
