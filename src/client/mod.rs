//! The command line client: `request`, `approve`, `reject`, `status`, `list`, `close` and
//! `extend` against a running broker's JSON API, for people at a terminal and for scripts.
//!
//! Exit codes: 0 done; 1 the broker refused or could not be reached (its message on one line),
//! or a `--wait` ended in a failure, or an approval was declined at the prompt; 2 a usage
//! error (what was typed cannot be sent).

mod api;
mod show;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use url::Url;

use api::Api;
pub use api::{ClientError, TOKEN_ENV};

/// How often `--wait` asks the broker again.
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Human,
    Json,
}

/// Where the broker is, how to get a token, and how to print.
#[derive(Debug, Args)]
pub struct Connection {
    /// The broker's URL, e.g. https://breakglass.example.com.
    #[arg(long, env = "BREAKGLASS_BROKER")]
    broker: Url,
    /// A command that prints an ID token for the broker, run through `sh -c`, e.g.
    /// "gcloud auth print-identity-token --audiences=CLIENT_ID". Without it the token comes
    /// from BREAKGLASS_TOKEN.
    #[arg(long)]
    token_command: Option<String>,
    /// `human` to read, `json` (the API's own JSON) for scripts.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// File a breakglass request: a manifest, or a workload and the new images of its
    /// containers.
    Request {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        target: String,
        /// Left out for Cloud Run, whose services have no namespace.
        #[arg(long, default_value = "")]
        namespace: String,
        /// The manifest file (`-` for standard input).
        #[arg(long, conflicts_with_all = ["workload", "image"], required_unless_present = "workload")]
        manifest: Option<PathBuf>,
        /// The workload whose images change, as KIND/NAME (e.g. Deployment/api).
        #[arg(long, value_parser = workload, requires = "image")]
        workload: Option<(String, String)>,
        /// With --workload: CONTAINER=IMAGE, once per container that changes.
        #[arg(long, value_parser = container_image, requires = "workload")]
        image: Vec<(String, String)>,
        #[arg(long)]
        ticket: String,
        #[arg(long)]
        justification: String,
        /// How long the breakglass runs once applied, e.g. 30m or 2h (whole minutes).
        #[arg(long, value_parser = minutes)]
        duration: u64,
        /// Show progress until the request is active or has ended; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Approve a request: shows what will run and asks before approving exactly that digest.
    Approve {
        id: String,
        #[command(flatten)]
        connection: Connection,
        #[arg(long, default_value = "")]
        comment: String,
        /// Approve what is shown without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Reject a request; rejection is final.
    Reject {
        id: String,
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        comment: String,
    },
    /// Show a request.
    Status {
        id: String,
        #[command(flatten)]
        connection: Connection,
        /// Show progress until the request is active or has ended; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// List the requests you may see, newest first.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Only requests in this state (pending, active, ...).
        #[arg(long)]
        state: Option<String>,
    },
    /// End a breakglass now; the broker undoes it.
    Close {
        id: String,
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        comment: String,
    },
    /// Ask for more time on your active breakglass; approved again, it moves the end with
    /// nothing undone in between.
    Extend {
        id: String,
        #[command(flatten)]
        connection: Connection,
        /// How much longer, e.g. 30m (whole minutes).
        #[arg(long, value_parser = minutes)]
        by: u64,
        #[arg(long)]
        justification: String,
    },
}

fn workload(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((kind.to_owned(), name.to_owned()))
        }
        _ => Err("write KIND/NAME, e.g. Deployment/api".into()),
    }
}

fn container_image(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((container, image)) if !container.is_empty() && !image.is_empty() => {
            Ok((container.to_owned(), image.to_owned()))
        }
        _ => Err("write CONTAINER=IMAGE, e.g. api=us-docker.pkg.dev/acme/api@sha256:...".into()),
    }
}

fn minutes(text: &str) -> Result<u64, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 30m or 2h)"))?;
    let seconds = duration.as_secs();
    if seconds == 0 || seconds % 60 != 0 || duration.subsec_nanos() != 0 {
        return Err("must be a whole number of minutes, at least 1m".into());
    }
    Ok(seconds / 60)
}

/// Runs a client command; the exit code says how it went.
pub async fn run(command: ClientCommand) -> ExitCode {
    match execute(command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", api::one_line(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

fn connect(connection: &Connection) -> Result<Api, ClientError> {
    let token = api::token(connection.token_command.as_deref())?;
    Api::new(connection.broker.clone(), token)
}

fn request_path(id: &str) -> Result<String, ClientError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ClientError::Usage(format!("{id:?} is not a request id")));
    }
    Ok(format!("api/v1/requests/{id}"))
}

/// Prints the result: the JSON itself, or the human line or summary.
fn print(output: Output, value: &Value, human: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Human => println!("{}", api::printable(&human(value))),
    }
}

async fn execute(command: ClientCommand) -> Result<ExitCode, ClientError> {
    match command {
        ClientCommand::Request {
            connection,
            target,
            namespace,
            manifest,
            workload,
            image,
            ticket,
            justification,
            duration,
            wait,
        } => {
            let mut body = json!({
                "target": target,
                "namespace": namespace,
                "ticket": ticket,
                "justification": justification,
                "duration_minutes": duration,
            });
            match (manifest, workload) {
                (Some(path), _) => body["manifest"] = read_manifest(&path)?.into(),
                (None, Some((kind, name))) => {
                    let images: BTreeMap<String, String> = image.into_iter().collect();
                    body["workload"] = json!({ "kind": kind, "name": name });
                    body["images"] = json!(images);
                }
                (None, None) => {
                    return Err(ClientError::Usage(
                        "give --manifest FILE, or --workload KIND/NAME with --image CONTAINER=IMAGE".into(),
                    ));
                }
            }
            let api = connect(&connection)?;
            let filed = api.post("api/v1/requests", body).await?;
            if wait {
                let id = filed.get("id").and_then(Value::as_str).unwrap_or_default();
                if connection.output == Output::Human {
                    eprintln!("filed request {id}");
                }
                return follow(&api, id, connection.output).await;
            }
            print(connection.output, &filed, |r| {
                format!(
                    "{}\n\nApprovers see it at {}requests/{}",
                    show::summary(r),
                    connection.broker,
                    show_id(r)
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Approve {
            id,
            connection,
            comment,
            yes,
        } => {
            let path = request_path(&id)?;
            let api = connect(&connection)?;
            let request = api.get(&path).await?;
            let digest = request
                .get("digest")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            // What will run goes to standard error: standard output is the result.
            eprintln!("{}", api::printable(&show::summary(&request)));
            if !yes && !confirm(&format!("Approve digest {digest}? [y/N] "))? {
                return Err(ClientError::Failed("not approved".into()));
            }
            let approved = api
                .post(
                    &format!("{path}/approve"),
                    json!({ "digest": digest, "comment": comment }),
                )
                .await?;
            print(connection.output, &approved, |r| {
                format!("approved {}; now {}", show_id(r), show::progress(r))
            });
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Reject {
            id,
            connection,
            comment,
        } => {
            say_with_comment(&id, &connection, "reject", &comment, |r| {
                format!("rejected {}", show_id(r))
            })
            .await
        }
        ClientCommand::Status {
            id,
            connection,
            wait,
        } => {
            let path = request_path(&id)?;
            let api = connect(&connection)?;
            if wait {
                return follow(&api, &id, connection.output).await;
            }
            let request = api.get(&path).await?;
            print(connection.output, &request, show::summary);
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::List { connection, state } => {
            let api = connect(&connection)?;
            let path = match state.as_deref() {
                Some(state) => {
                    let query: String = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("state", state)
                        .finish();
                    format!("api/v1/requests?{query}")
                }
                None => "api/v1/requests".to_owned(),
            };
            let list = api.get(&path).await?;
            print(connection.output, &list, |l| {
                show::table(l.as_array().map(Vec::as_slice).unwrap_or_default())
            });
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Close {
            id,
            connection,
            comment,
        } => {
            say_with_comment(&id, &connection, "close", &comment, |r| {
                format!("closing {}: the broker is undoing it", show_id(r))
            })
            .await
        }
        ClientCommand::Extend {
            id,
            connection,
            by,
            justification,
        } => {
            let path = request_path(&id)?;
            let api = connect(&connection)?;
            let extension = api
                .post(
                    &format!("{path}/extend"),
                    json!({ "minutes": by, "justification": justification }),
                )
                .await?;
            print(connection.output, &extension, show::summary);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `POST .../{verb}` `{comment}` on request `id`, and what the broker answered, printed.
async fn say_with_comment(
    id: &str,
    connection: &Connection,
    verb: &str,
    comment: &str,
    human: impl FnOnce(&Value) -> String,
) -> Result<ExitCode, ClientError> {
    let path = request_path(id)?;
    let api = connect(connection)?;
    let answer = api
        .post(&format!("{path}/{verb}"), json!({ "comment": comment }))
        .await?;
    print(connection.output, &answer, human);
    Ok(ExitCode::SUCCESS)
}

fn show_id(request: &Value) -> &str {
    request.get("id").and_then(Value::as_str).unwrap_or("")
}

fn read_manifest(path: &PathBuf) -> Result<String, ClientError> {
    let read = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| {
        ClientError::Usage(format!("cannot read the manifest {}: {e}", path.display()))
    })
}

/// Asks on standard error, reads one line of standard input: only `y` or `yes` agrees.
fn confirm(question: &str) -> Result<bool, ClientError> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| ClientError::Failed(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Shows each change of state until the request is active or has ended; the exit code says
/// whether it failed.
async fn follow(api: &Api, id: &str, output: Output) -> Result<ExitCode, ClientError> {
    let path = request_path(id)?;
    let mut last = String::new();
    loop {
        let request = api.get(&path).await?;
        let line = show::progress(&request);
        if line != last && output == Output::Human {
            eprintln!("{}", api::printable(&line));
            last = line;
        }
        let state = request.get("state").and_then(Value::as_str).unwrap_or("");
        if let Some(ok) = show::settled(state) {
            print(output, &request, show::summary);
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
