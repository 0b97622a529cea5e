//! The broker's JSON API as the command line speaks it: a bearer token from the environment
//! or from a command, and every refusal as the server's own message on one line.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use url::Url;

/// The environment variable the ID token is read from.
pub const TOKEN_ENV: &str = "BREAKGLASS_TOKEN";

/// Why a command did not do what was asked: `Usage` for what the person typed (exit 2),
/// `Failed` for what the broker or the network answered (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            ClientError::Failed(_) => 1,
        }
    }
}

/// The ID token: the output of `token_command` when given, else `BREAKGLASS_TOKEN`. Never a
/// flag's value, which would sit in the shell history and in every process listing.
pub fn token(token_command: Option<&str>) -> Result<String, ClientError> {
    let token = match token_command {
        Some(command) => run_token_command(command)?,
        None => std::env::var(TOKEN_ENV).unwrap_or_default(),
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(match token_command {
            Some(_) => ClientError::Failed("the token command printed no token".into()),
            None => ClientError::Usage(format!(
                "no ID token: set {TOKEN_ENV} or give --token-command (for example \"gcloud auth print-identity-token --audiences=CLIENT_ID\")"
            )),
        });
    }
    if token.chars().any(char::is_whitespace) {
        return Err(ClientError::Failed(
            "the token is not one word; an ID token has no spaces or line breaks".into(),
        ));
    }
    Ok(token)
}

/// Runs the command through the shell (so it may carry its own arguments) and takes its
/// standard output; what it prints on standard error is shown only if it fails.
fn run_token_command(command: &str) -> Result<String, ClientError> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ClientError::Failed(format!("cannot run the token command: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(ClientError::Failed(format!(
            "the token command failed ({}){}{first}",
            output.status,
            if first.is_empty() { "" } else { ": " }
        )));
    }
    String::from_utf8(output.stdout).map_err(|_| {
        ClientError::Failed("the token command printed something that is not text".into())
    })
}

/// A connection to one broker with one token.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Api {
    pub fn new(mut base: Url, token: String) -> Result<Api, ClientError> {
        // A broker served under a path (https://host/breakglass) keeps it: API paths are
        // joined onto the base as a directory.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Usage(format!(
                "--broker must be an http(s) URL, not {base}"
            )));
        }
        // The ID token travels with every call: in the clear only to this machine.
        let loopback = match base.host() {
            Some(url::Host::Domain(name)) => name == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if base.scheme() == "http" && !loopback {
            return Err(ClientError::Usage(format!(
                "--broker {base} is plain http to another machine, which would send your ID token in the clear; use https"
            )));
        }
        // HTTPS to a real broker needs a TLS provider; the library installs none by itself.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Failed(format!("cannot set up HTTP: {e}")))?;
        Ok(Api { http, base, token })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Usage(format!("bad broker URL {}: {e}", self.base)))?;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            ClientError::Failed(format!(
                "cannot reach the broker at {}: {}",
                self.base,
                without_url(&e)
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            ClientError::Failed(format!(
                "the broker's answer was cut short: {}",
                without_url(&e)
            ))
        })?;
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return value.ok_or_else(|| {
                ClientError::Failed(format!(
                    "the broker answered {status} with something that is not JSON"
                ))
            });
        }
        let message = value
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the broker answered {status}"));
        Err(ClientError::Failed(one_line(&message)))
    }
}

/// reqwest's error, without the URL it repeats (already said once).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    text
}

/// A message on one line, however the server wrapped it.
pub fn one_line(message: &str) -> String {
    printable(&message.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// What the broker sent, safe for a terminal: line breaks stay, every other control
/// character (escape sequences, bell) and every invisible formatting one (bidirectional
/// overrides, zero-width) becomes `?`, so that text a requester wrote cannot redraw what an
/// approver reads before approving.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => c,
            c if c.is_control()
                || matches!(c,
                    '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
                    | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}') =>
            {
                '?'
            }
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_in_the_clear_only_to_this_machine() {
        let api = |url: &str| Api::new(Url::parse(url).expect("url"), "t".into()).is_ok();
        assert!(api("http://127.0.0.1:8080"));
        assert!(api("http://localhost:8080"));
        assert!(api("https://breakglass.example.com"));
        assert!(!api("http://breakglass.example.com"));
        assert!(!api("http://10.0.0.5:8080"));
    }

    #[test]
    fn what_reaches_the_terminal_cannot_carry_escape_sequences_or_direction_overrides() {
        assert_eq!(
            printable("ok\u{1b}[2J\u{7}fake\u{202E}txt\nnext"),
            "ok?[2J?fake?txt\nnext"
        );
        assert_eq!(one_line("a\u{1b}]0;x\u{7} b"), "a?]0;x? b");
    }

    #[test]
    fn a_broker_under_a_path_keeps_it() {
        let api = Api::new(
            Url::parse("https://example.com/breakglass").expect("url"),
            "t".into(),
        )
        .expect("api");
        assert_eq!(
            api.base.join("api/v1/requests").ok().map(String::from),
            Some("https://example.com/breakglass/api/v1/requests".to_owned())
        );
        assert_eq!(
            Api::new(Url::parse("ftp://example.com").expect("url"), "t".into())
                .err()
                .map(|e| e.exit_code()),
            Some(2)
        );
    }

    #[test]
    fn a_message_with_line_breaks_reads_on_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }

    #[test]
    fn the_token_command_gives_the_token_and_its_failure_is_named() {
        assert_eq!(
            token(Some("echo '  abc.def.ghi  '")).ok(),
            Some("abc.def.ghi".to_owned())
        );
        let failed = token(Some("echo nope >&2; exit 3")).expect_err("fails");
        assert_eq!(failed.exit_code(), 1);
        assert!(failed.to_string().contains("nope"), "{failed}");
        assert!(token(Some("true")).is_err());
        assert!(token(Some("echo two words")).is_err());
    }
}
