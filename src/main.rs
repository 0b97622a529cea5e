//! The `breakglass-broker` command: parses the command line and hands over to the library.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    breakglass_broker::cli::main().await
}
