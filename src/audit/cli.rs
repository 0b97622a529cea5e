//! `breakglass-broker audit ...`: the auditor's tools on the command line.
//!
//! Exit codes of `audit verify`: 0 the chain is intact (and agrees with every checkpoint
//! given), 1 it is not (the first bad event is named on stderr), 2 it could not be checked
//! (no database, unreadable checkpoints file). A script can tell "tampered" from "try again".

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::checkpoint::read_checkpoints;
use super::verify::verify_store;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole audit history: name the first event that was edited, deleted or
    /// reordered and exit 1, or print a one-line summary and exit 0.
    Verify {
        /// The broker's database (sqlite:... or postgres://...); opened read-only.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Log lines (JSON, one per line, as the broker writes them or as Cloud Logging
        /// exports them) holding checkpoints; the chain must agree with every one.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
}

/// Runs the command and says how it went in the exit code.
pub async fn run(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify {
            database_url,
            checkpoints,
        } => verify(&database_url, checkpoints).await,
    }
}

const BROKEN: u8 = 1;
const CANNOT_CHECK: u8 = 2;

async fn verify(database_url: &str, checkpoints: Option<PathBuf>) -> ExitCode {
    let checkpoints = match checkpoints {
        None => Vec::new(),
        Some(path) => {
            let read = File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|file| read_checkpoints(BufReader::new(file)).map_err(|e| e.to_string()));
            match read {
                Ok(found) => {
                    if found.is_empty() {
                        eprintln!(
                            "warning: {} holds no checkpoint lines; checking the chain alone",
                            path.display()
                        );
                    }
                    found
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return ExitCode::from(CANNOT_CHECK);
                }
            }
        }
    };
    let store = match Store::open_for_audit(database_url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: opening the database: {e:#}");
            return ExitCode::from(CANNOT_CHECK);
        }
    };
    match verify_store(&store, &checkpoints).await {
        Ok(report) if report.is_intact() => {
            println!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            eprintln!("{}", report.summary());
            ExitCode::from(BROKEN)
        }
        Err(e) => {
            eprintln!("error: reading the audit history: {e}");
            ExitCode::from(CANNOT_CHECK)
        }
    }
}
