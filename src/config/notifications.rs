//! `[[notifications]]`: where the broker announces what happens to requests. The URL of a
//! Slack incoming webhook and the secret of a Standard Webhooks endpoint are secrets: they come
//! from the environment (or a mounted file), never from the configuration file.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::human_duration;
use crate::domain::notice::{self, EventType};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationKind {
    Slack,
    Webhook,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    pub name: String,
    pub kind: NotificationKind,
    /// The endpoint, when it is no secret (a webhook receiver of one's own).
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable that holds the endpoint (a Slack webhook URL is a secret).
    #[serde(default)]
    pub url_env: Option<String>,
    /// For `kind = "webhook"`: the environment variable, or the file, that holds the
    /// `whsec_...` signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Only requests on these targets; empty: every target.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Only these events; empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
    /// How long before a breakglass ends `request.expiring` is sent.
    #[serde(default = "default_remind_before", deserialize_with = "human_duration")]
    pub remind_before: Duration,
    /// Loaded at start-up from `url_env` (or `url`).
    #[serde(skip)]
    pub endpoint: Option<url::Url>,
    /// Loaded at start-up from `secret_env` or `secret_file`: the decoded key bytes.
    #[serde(skip)]
    pub secret: Option<Vec<u8>>,
}

fn default_remind_before() -> Duration {
    Duration::from_secs(10 * 60)
}

impl std::fmt::Debug for NotificationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("url_env", &self.url_env)
            .field("secret_env", &self.secret_env)
            .field("secret_file", &self.secret_file)
            .field("targets", &self.targets)
            .field("events", &self.events)
            .field("remind_before", &self.remind_before)
            .field("endpoint", &self.endpoint.as_ref().map(|_| "[redacted]"))
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl NotificationConfig {
    /// Whether this endpoint wants `event` about a request on `target`.
    pub fn wants(&self, event: EventType, target: &str) -> bool {
        (self.targets.is_empty() || self.targets.iter().any(|t| t == target))
            && (self.events.is_empty() || self.events.iter().any(|e| e == event.as_str()))
    }

    /// A fingerprint of everything that makes this endpoint what it is, the resolved URL and
    /// secret included: an endpoint disabled by a 410 comes back when this changes.
    pub fn config_hash(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.name.as_str(),
            self.kind_name(),
            self.endpoint.as_ref().map_or("", url::Url::as_str),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.update(self.secret.as_deref().unwrap_or_default());
        hash.update([0]);
        hash.update(self.targets.join(",").as_bytes());
        hash.update([0]);
        hash.update(self.events.join(",").as_bytes());
        hex::encode(hash.finalize())
    }

    /// Where its messages go: a fingerprint of its kind and resolved URL (never the URL, which
    /// may be a secret). A message is written for one destination and sent only there, so
    /// that a later endpoint of the same name with another URL does not get it.
    pub fn destination(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.kind_name().as_bytes());
        hash.update([0]);
        hash.update(
            self.endpoint
                .as_ref()
                .map_or("", url::Url::as_str)
                .as_bytes(),
        );
        hex::encode(hash.finalize())
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            NotificationKind::Slack => "slack",
            NotificationKind::Webhook => "webhook",
        }
    }

    /// What is wrong with the file's keys, each a sentence an operator can act on.
    pub(super) fn problems(&self, targets: &[&str], problem: &mut impl FnMut(String)) {
        match (&self.url, &self.url_env) {
            (None, None) => problem("needs url_env (or url, when the URL is no secret)".into()),
            (Some(_), Some(_)) => problem("has both url and url_env; keep one".into()),
            (Some(url), None) => {
                match check_url(url) {
                    // A password in the file would sit beside everything else in it.
                    Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
                        problem(
                            "url holds a user name or password; secrets go only through the environment: give the whole URL with url_env".into(),
                        );
                    }
                    Ok(_) => {}
                    Err(e) => problem(format!("url {e}")),
                }
                if self.kind == NotificationKind::Slack {
                    problem(
                        "url: a Slack incoming-webhook URL is a secret; give it with url_env"
                            .into(),
                    );
                }
            }
            (None, Some(_)) => {}
        }
        match (self.kind, &self.secret_env, &self.secret_file) {
            (NotificationKind::Webhook, None, None) => problem(
                "kind \"webhook\" needs secret_env (the whsec_... signing secret)".into(),
            ),
            (NotificationKind::Webhook, Some(_), Some(_)) => {
                problem("has both secret_env and secret_file; keep one".into())
            }
            (NotificationKind::Slack, Some(_), _) | (NotificationKind::Slack, _, Some(_)) => {
                problem("secret_env and secret_file are for kind \"webhook\"; Slack messages are not signed".into())
            }
            _ => {}
        }
        for target in &self.targets {
            if !targets.contains(&target.as_str()) {
                problem(format!("targets: {target:?} is not a configured target"));
            }
        }
        for event in &self.events {
            if EventType::parse(event).is_none() {
                let known: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
                problem(format!(
                    "events: {event:?} is not an event (they are {})",
                    known.join(", ")
                ));
            }
        }
        if self.remind_before < Duration::from_secs(60)
            || self.remind_before > Duration::from_secs(24 * 3600)
        {
            problem(format!(
                "remind_before {} must be between 1m and 24h",
                humantime::format_duration(self.remind_before)
            ));
        }
    }

    /// Reads the URL and the secret from the environment or their files; what cannot be read
    /// is a problem.
    pub(super) fn load_secrets(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
        problem: &mut impl FnMut(String),
    ) {
        let url = match (&self.url, &self.url_env) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(var)) => {
                let value = env(var);
                if value.is_none() {
                    problem(format!(
                        "url_env: the environment variable {var} is not set"
                    ));
                }
                value
            }
            (None, None) => None,
        };
        if let Some(url) = url {
            match check_url(url.trim()) {
                Ok(url) => self.endpoint = Some(url),
                // The value itself is a secret: only say what is wrong with it.
                Err(e) => problem(format!("the URL from url_env {e}")),
            }
        }
        let secret = match (&self.secret_env, &self.secret_file) {
            (Some(var), _) => {
                let value = env(var);
                if value.is_none() {
                    problem(format!(
                        "secret_env: the environment variable {var} is not set"
                    ));
                }
                value.map(|v| (format!("secret_env {var}"), v))
            }
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(value) => Some((format!("secret_file {}", path.display()), value)),
                Err(e) => {
                    problem(format!("secret_file {}: {e}", path.display()));
                    None
                }
            },
            (None, None) => None,
        };
        if let Some((source, value)) = secret {
            match notice::parse_secret(&value) {
                Ok(bytes) => self.secret = Some(bytes),
                Err(e) => problem(format!("{source}: the secret {e}")),
            }
        }
    }
}

/// An https URL, or http to a loopback address (tests, a relay on the same host).
fn check_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|_| "is not a URL".to_owned())?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("must be https (plain http only to a loopback address)".into()),
        _ => Err("must be an https URL".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_neither_the_url_from_the_environment_nor_the_secret() {
        let mut endpoint: NotificationConfig = toml::from_str(
            "name = \"siem\"\nkind = \"webhook\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_SECRET\"",
        )
        .expect("parses");
        let env = |var: &str| match var {
            "HOOK_URL" => Some("https://siem.example.com/hooks/token-in-path".to_owned()),
            "HOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            _ => None,
        };
        let mut problems = Vec::new();
        endpoint.load_secrets(&env, &mut |p| problems.push(p));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(endpoint.endpoint.is_some() && endpoint.secret.is_some());
        let shown = format!("{endpoint:?}");
        assert!(!shown.contains("token-in-path"), "{shown}");
        assert!(!shown.contains("MfKQ9r8"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn the_configuration_hash_changes_with_the_url_and_the_secret() {
        let mut endpoint: NotificationConfig =
            toml::from_str("name = \"siem\"\nkind = \"webhook\"\nurl = \"https://a.example/h\"")
                .expect("parses");
        endpoint.endpoint = url::Url::parse("https://a.example/h").ok();
        let first = endpoint.config_hash();
        assert_eq!(first, endpoint.clone().config_hash());
        endpoint.endpoint = url::Url::parse("https://b.example/h").ok();
        let second = endpoint.config_hash();
        assert_ne!(first, second);
        endpoint.secret = Some(vec![1; 24]);
        assert_ne!(second, endpoint.config_hash());
    }

    #[test]
    fn the_destination_changes_with_the_url_but_not_with_the_secret_or_the_filters() {
        let mut endpoint: NotificationConfig =
            toml::from_str("name = \"siem\"\nkind = \"webhook\"\nurl = \"https://a.example/h\"")
                .expect("parses");
        endpoint.endpoint = url::Url::parse("https://a.example/h").ok();
        let first = endpoint.destination();
        endpoint.secret = Some(vec![1; 24]);
        endpoint.events = vec!["request.created".into()];
        assert_eq!(first, endpoint.destination());
        endpoint.endpoint = url::Url::parse("https://b.example/h").ok();
        assert_ne!(first, endpoint.destination());
        assert!(!endpoint.destination().contains("example"));
    }

    #[test]
    fn a_url_in_the_file_with_a_user_name_or_password_is_refused() {
        for url in [
            "https://user:pw@siem.example.com/hook",
            "https://user@siem.example.com/hook",
            "https://:pw@siem.example.com/hook",
        ] {
            let endpoint: NotificationConfig = toml::from_str(&format!(
                "name = \"siem\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_env = \"S\""
            ))
            .expect("parses");
            let mut problems = Vec::new();
            endpoint.problems(&[], &mut |p| problems.push(p));
            assert_eq!(problems.len(), 1, "{url}: {problems:?}");
            assert!(
                problems[0].contains("user name or password"),
                "{problems:?}"
            );
            assert!(
                !problems[0].contains("pw"),
                "the secret is not repeated: {problems:?}"
            );
        }
    }

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        assert!(check_url("https://hooks.slack.com/services/T/B/x").is_ok());
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("http://[::1]:9/hook").is_ok());
        assert!(check_url("http://localhost:9/hook").is_ok());
        assert!(check_url("http://siem.example.com/hook").is_err());
        assert!(check_url("ftp://siem.example.com/hook").is_err());
        assert!(check_url("not a url").is_err());
    }
}
