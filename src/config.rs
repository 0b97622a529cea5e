//! The configuration file: targets, policy and identity. Secrets come from the environment or
//! files named here, never from the file itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use regex::Regex;
use serde::{Deserialize, Deserializer};

use crate::domain::ApprovalRule;
use crate::domain::manifest::Limits;
use crate::domain::policy::{AllowedKind, ImagePolicy, PodPolicy, Policy, default_kinds};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where people reach the broker; cookies are `Secure` when this is https.
    pub public_url: url::Url,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://path` or `postgres://...`; `DATABASE_URL` overrides it.
    pub database_url: String,
    pub oidc: OidcConfig,
    #[serde(default)]
    pub roles: Roles,
    pub targets: Vec<TargetConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    /// Name of the environment variable that holds the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Secret loaded at start-up from `client_secret_env`; never read from the file.
    #[serde(skip)]
    pub client_secret: Option<String>,
}

fn default_groups_claim() -> String {
    "groups".into()
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret_env", &self.client_secret_env)
            .field("groups_claim", &self.groups_claim)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    #[serde(default)]
    pub requesters: Vec<String>,
    #[serde(default)]
    pub auditors: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Gke,
    Kubernetes,
    CloudRun,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credentials {
    Google,
    Kubeconfig,
    InCluster,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub kind: TargetKind,
    pub credentials: Credentials,
    /// For `credentials = "kubeconfig"`: the file, and optionally the context in it.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub context: Option<String>,
    pub namespaces: Vec<String>,
    #[serde(deserialize_with = "human_duration")]
    pub max_duration: Duration,
    #[serde(default = "default_window", deserialize_with = "human_duration")]
    pub approval_window: Duration,
    pub approvals: Vec<ApprovalRule>,
    #[serde(default)]
    pub images: ImagePolicy,
    #[serde(default)]
    pub pods: PodPolicy,
    #[serde(default = "default_kinds")]
    pub kinds: Vec<AllowedKind>,
    pub ticket_pattern: String,
    #[serde(default = "default_max_objects")]
    pub max_objects: usize,
    #[serde(default = "default_max_manifest_bytes")]
    pub max_manifest_bytes: usize,
}

fn default_window() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max_objects() -> usize {
    20
}
fn default_max_manifest_bytes() -> usize {
    256 * 1024
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("{text:?}: {e} (write e.g. \"30m\" or \"4h\")"))
    })
}

impl TargetConfig {
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let anchored = format!(
            "^(?:{})$",
            self.ticket_pattern
                .trim_start_matches('^')
                .trim_end_matches('$')
        );
        Ok(Policy {
            target: self.name.clone(),
            namespaces: self.namespaces.clone(),
            kinds: self.kinds.clone(),
            images: self.images.clone(),
            pods: self.pods.clone(),
            max_duration: self.max_duration,
            ticket_pattern: Regex::new(&anchored).with_context(|| {
                format!(
                    "target {}: ticket_pattern {:?} is not a valid regular expression",
                    self.name, self.ticket_pattern
                )
            })?,
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_manifest_bytes,
            max_objects: self.max_objects,
            ..Limits::default()
        }
    }
}

impl Config {
    /// Reads and checks a configuration file, then loads the secrets it names.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config = Config::parse(&text).with_context(|| format!("in {}", path.display()))?;
        if let Ok(url) = std::env::var("DATABASE_URL") {
            config.database_url = url;
        }
        if let Some(var) = &config.oidc.client_secret_env {
            config.oidc.client_secret = std::env::var(var).ok();
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Everything that makes a configuration unusable, found before the broker starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.targets.is_empty() {
            bail!("no [[targets]]: the broker has nowhere to apply anything");
        }
        for (i, target) in self.targets.iter().enumerate() {
            let name = &target.name;
            if self.targets[..i].iter().any(|t| &t.name == name) {
                bail!("target {name} is defined twice");
            }
            if target.namespaces.is_empty() {
                bail!("target {name}: namespaces is empty");
            }
            if target.approvals.is_empty() || target.approvals.iter().any(|r| r.count == 0) {
                bail!(
                    "target {name}: approvals must name at least one group with a count of 1 or more"
                );
            }
            if target.max_duration.is_zero() {
                bail!("target {name}: max_duration must be more than zero");
            }
            if target.kind == TargetKind::CloudRun {
                bail!("target {name}: kind \"cloud-run\" is not supported by this version");
            }
            match (target.credentials, &target.kubeconfig) {
                (Credentials::Kubeconfig, None) => {
                    bail!("target {name}: credentials = \"kubeconfig\" needs kubeconfig = \"path\"")
                }
                (Credentials::Google, _) => bail!(
                    "target {name}: credentials = \"google\" is not supported by this version; use kubeconfig or in-cluster"
                ),
                _ => {}
            }
            target.policy()?;
        }
        Ok(())
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }
}
