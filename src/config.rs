//! The configuration file: targets, policy and identity. Secrets come from the environment or
//! files named here, never from the file itself.

/// What `check-config` asks of a Cloud Run target.
mod cloud_run;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use regex::Regex;
use serde::{Deserialize, Deserializer};

/// What `check-config` asks of a target that reads Cloud Audit Logs.
mod audit_logs;
mod gke;
mod lines;
/// `[[notifications]]`: Slack and Standard Webhooks endpoints.
mod notifications;

pub use notifications::{NotificationConfig, NotificationKind};

use crate::domain::ApprovalRule;
use crate::domain::manifest::Limits;
use crate::domain::manifest::{first_line, is_dns_subdomain};
use crate::domain::policy::{
    AllowedKind, CloudRunPolicy, ImagePolicy, KNOWN_KINDS, PodPolicy, Policy, default_kinds,
};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where people reach the broker; cookies are `Secure` when this is https.
    pub public_url: url::Url,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where `serve` answers `GET /metrics` (Prometheus text), apart from the service itself so
    /// that it need not be exposed with it. Off unless set.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `sqlite://path` or `postgres://...`; `DATABASE_URL` overrides it.
    pub database_url: String,
    /// How many connections to PostgreSQL this replica keeps at most (default 8). Every
    /// replica opens its own, so size it to the database's cores across all of them: past a
    /// few busy connections per core the server spends its time switching, and every
    /// decision waits longer. (SQLite, in the process, keeps 8.)
    #[serde(default = "default_database_connections")]
    pub database_connections: std::num::NonZeroU32,
    pub oidc: OidcConfig,
    #[serde(default)]
    pub roles: Roles,
    /// Defaulted so that a file without any gets the clearer "no [[targets]]" message.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub limits: RateLimits,
    /// Where requests are announced; none by default.
    #[serde(default)]
    pub notifications: Vec<NotificationConfig>,
}

/// `[limits]`: how much one person may do per minute, generous, so that an incident never
/// hits them (they bound a script or a stolen token; reads are not limited); and how much
/// cluster work one replica does at once.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default = "default_filings_per_minute")]
    pub filings_per_minute: std::num::NonZeroU32,
    #[serde(default = "default_decisions_per_minute")]
    pub decisions_per_minute: std::num::NonZeroU32,
    /// How many applies one replica runs at once (default 2); the rest wait their turn. A
    /// burst of approvals then finds the database and the CPU free to answer the approvers,
    /// and the cluster's API server is not hit by all the applies at the same moment.
    #[serde(default = "default_applies_at_once")]
    pub applies_at_once: std::num::NonZeroU32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            filings_per_minute: default_filings_per_minute(),
            decisions_per_minute: default_decisions_per_minute(),
            applies_at_once: default_applies_at_once(),
        }
    }
}

fn default_filings_per_minute() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN.saturating_add(59)
}

fn default_decisions_per_minute() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN.saturating_add(299)
}

fn default_applies_at_once() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN.saturating_add(1)
}

pub(crate) fn default_database_connections() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN.saturating_add(crate::store::POSTGRES_CONNECTIONS - 1)
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
    /// Only people of these domains may sign in: the `hd` claim, or the domain of an email
    /// the provider verified. Empty: any.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Only members of one of these groups may sign in. Empty: anyone the issuer knows.
    #[serde(default)]
    pub required_groups: Vec<String>,
    /// How long a browser session lasts, whatever happens in it (at least 5 minutes, at most
    /// a week); the groups it acts with are those of its sign-in.
    #[serde(
        default = "default_session_max_age",
        deserialize_with = "human_duration"
    )]
    pub session_max_age: Duration,
    /// A decision from the browser (approve, reject, end a breakglass) counts only if the
    /// person authenticated at the provider within this long (at least a minute); an older
    /// session signs in again first, with the groups the provider gives now.
    #[serde(
        default = "default_decision_max_age",
        deserialize_with = "human_duration"
    )]
    pub decision_max_age: Duration,
    /// Secret loaded at start-up from `client_secret_env`; never read from the file.
    #[serde(skip)]
    pub client_secret: Option<String>,
}

fn default_session_max_age() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_decision_max_age() -> Duration {
    Duration::from_secs(15 * 60)
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
            .field("allowed_domains", &self.allowed_domains)
            .field("required_groups", &self.required_groups)
            .field("session_max_age", &self.session_max_age)
            .field("decision_max_age", &self.decision_max_age)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

pub use crate::domain::Roles;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Gke,
    Kubernetes,
    CloudRun,
}

/// What the detector does about a breakglass on the target that the broker did not make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnbrokered {
    /// Record a finding and alert.
    #[default]
    Alert,
    /// Also delete the workload with its controller chain (Cloud Run: route traffic away).
    Remove,
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
    /// For `kind = "gke"` with `credentials = "google"`: where the cluster is (see
    /// [`gke`]): `project`, `location`, `cluster` through the GKE API at `container_api`, or
    /// `endpoint` and `ca_file` given here.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub container_api: Option<String>,
    /// For `kind = "cloud-run"` (with `project`): the region of its services, the services a
    /// request may change, the runtime service accounts a revision may run as, and the API
    /// root (Google's unless a simulation's).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub run_api: Option<url::Url>,
    /// Empty (and omitted) for Cloud Run, whose services have no namespace.
    #[serde(default)]
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
    /// How many times one breakglass may be extended (each extension approved again, each
    /// at most `max_duration`).
    #[serde(default = "default_max_extensions")]
    pub max_extensions: u32,
    /// After a breakglass ends, its requester writes a review before filing another on this
    /// target.
    #[serde(default)]
    pub require_review: bool,
    /// `"alert"` (the default) or `"remove"`.
    #[serde(default)]
    pub on_unbrokered: OnUnbrokered,
    /// For `kind = "gke"`: also read the cluster's Cloud Audit Logs for breakglass admissions
    /// the broker did not make (see [`audit_logs`]), through the Logging API at `logging_api`
    /// (Google's unless a simulation's).
    #[serde(default)]
    pub audit_logs: bool,
    #[serde(default)]
    pub logging_api: Option<url::Url>,
}

fn default_window() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max_extensions() -> u32 {
    2
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

/// Most approvals one rule may ask of a group. More is not a policy anyone meets in the middle
/// of an incident; it is a typo that would make every request lapse.
pub const MAX_APPROVALS_PER_RULE: u32 = 10;
/// Longest a breakglass may last, or wait for approval. Longer is a deployment, not breakglass.
pub const MAX_TARGET_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest per-target manifest limit: half the request body limit, leaving room for the JSON
/// escaping of a manifest sent through the API.
pub const MAX_MANIFEST_BYTES: usize = BODY_LIMIT / 2;

/// Largest request body accepted; manifests have their own, smaller, per-target limit.
pub const BODY_LIMIT: usize = 1024 * 1024;

pub const MAX_OBJECTS: usize = 100;
/// The most extensions a target may allow one breakglass: each is a fresh approval, so more
/// would be a standing grant in all but name.
pub const MAX_EXTENSIONS: u32 = 10;

impl TargetConfig {
    /// The policy this target enforces. The ticket pattern always matches the whole ticket,
    /// whether or not the operator wrote `^...$`.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        Ok(Policy {
            target: self.name.clone(),
            namespaces: self.namespaces.clone(),
            kinds: self.kinds.clone(),
            images: self.images.clone(),
            pods: self.pods.clone(),
            cloud_run: (self.kind == TargetKind::CloudRun).then(|| CloudRunPolicy {
                services: self.services.clone(),
                service_accounts: self.service_accounts.clone(),
            }),
            max_duration: self.max_duration,
            ticket_pattern: self.ticket_regex()?,
            ticket_pattern_source: self.ticket_pattern.clone(),
        })
    }

    fn ticket_regex(&self) -> anyhow::Result<Regex> {
        Regex::new(&format!("^(?:{})$", self.ticket_pattern)).map_err(|e| {
            anyhow::anyhow!(
                "ticket_pattern {:?} is not a valid regular expression: {}",
                self.ticket_pattern,
                first_line(&e.to_string())
            )
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_manifest_bytes,
            max_objects: self.max_objects,
            ..Limits::default()
        }
    }

    /// Every problem with this target, each a sentence an operator can act on.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut problem = |text: String| problems.push(text);
        if !is_dns_label(&self.name) {
            problem(format!(
                "name {:?} must be 1 to 63 lower-case letters, digits and '-' (it appears in URLs and audit events)",
                self.name
            ));
        }
        if self.kind == TargetKind::CloudRun {
            cloud_run::problems(self, &mut problem);
        } else {
            if self.namespaces.is_empty() {
                problem("namespaces is empty: name the namespaces breakglass may deploy to".into());
            }
            for (i, namespace) in self.namespaces.iter().enumerate() {
                if !is_dns_label(namespace) {
                    problem(format!(
                        "namespaces: {namespace:?} is not a valid namespace name"
                    ));
                } else if self.namespaces[..i].contains(namespace) {
                    problem(format!("namespaces: {namespace:?} is listed twice"));
                }
            }
        }
        for (field, value) in [
            ("max_duration", self.max_duration),
            ("approval_window", self.approval_window),
        ] {
            if value < Duration::from_secs(60) {
                problem(format!(
                    "{field} is {}; it must be at least 1 minute",
                    humantime::format_duration(value)
                ));
            } else if value > MAX_TARGET_DURATION {
                problem(format!(
                    "{field} is {}; it must be at most {} (breakglass is for emergencies, not for running things)",
                    humantime::format_duration(value),
                    humantime::format_duration(MAX_TARGET_DURATION)
                ));
            }
        }
        if self.approvals.is_empty() {
            problem(
                "approvals is empty: name at least one group, e.g. approvals = [{ group = \"sre\", count = 1 }]"
                    .into(),
            );
        }
        for (i, rule) in self.approvals.iter().enumerate() {
            if rule.group.trim().is_empty() {
                problem(format!("approvals[{i}]: group is empty"));
            } else if self.approvals[..i].iter().any(|r| r.group == rule.group) {
                problem(format!(
                    "approvals: group {:?} appears twice; give it one rule with the count you want",
                    rule.group
                ));
            }
            if rule.count == 0 {
                problem(format!(
                    "approvals: count for group {:?} is 0; it must be 1 or more (the requester never counts, so 0 would let anyone approve their own breakglass)",
                    rule.group
                ));
            } else if rule.count > MAX_APPROVALS_PER_RULE {
                problem(format!(
                    "approvals: count for group {:?} is {}; at most {MAX_APPROVALS_PER_RULE} is plausible in an incident",
                    rule.group, rule.count
                ));
            }
        }
        if self.kind != TargetKind::CloudRun {
            self.kind_problems(&mut problem);
        }
        if self.images.registries.is_empty() {
            problem(
                "images.registries is empty: list the registries breakglass may pull from, e.g. [\"us-docker.pkg.dev/acme/\"]"
                    .into(),
            );
        }
        for registry in &self.images.registries {
            if registry.is_empty()
                || registry.contains("://")
                || registry
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                problem(format!(
                    "images.registries: {registry:?} must be a registry and path prefix such as \"us-docker.pkg.dev/acme/\" (no scheme, no spaces)"
                ));
            }
        }
        if self.pods.service_accounts.is_empty() {
            problem(
                "pods.service_accounts is empty: no pod could run; list at least \"default\""
                    .into(),
            );
        }
        for account in &self.pods.service_accounts {
            if !is_dns_subdomain(account) {
                problem(format!(
                    "pods.service_accounts: {account:?} is not a valid service account name"
                ));
            }
        }
        for capability in &self.pods.allowed_capabilities {
            let bare = capability.trim_start_matches("CAP_");
            if bare == "ALL" {
                problem(
                    "pods.allowed_capabilities: \"ALL\" would allow every capability; list the ones workloads need"
                        .into(),
                );
            } else if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            {
                problem(format!(
                    "pods.allowed_capabilities: {capability:?} is not a capability name such as \"NET_BIND_SERVICE\""
                ));
            }
        }
        match self.ticket_regex() {
            Err(e) => problem(e.to_string()),
            Ok(pattern) if pattern.is_match("") => problem(format!(
                "ticket_pattern {:?} matches an empty ticket; every request must name one",
                self.ticket_pattern
            )),
            Ok(_) => {}
        }
        if !(1..=MAX_OBJECTS).contains(&self.max_objects) {
            problem(format!(
                "max_objects is {}; it must be between 1 and {MAX_OBJECTS}",
                self.max_objects
            ));
        }
        if self.max_extensions > MAX_EXTENSIONS {
            problem(format!(
                "max_extensions is {}; it must be between 0 and {MAX_EXTENSIONS}",
                self.max_extensions
            ));
        }
        if !(1024..=MAX_MANIFEST_BYTES).contains(&self.max_manifest_bytes) {
            problem(format!(
                "max_manifest_bytes is {}; it must be between 1024 and {MAX_MANIFEST_BYTES} (half the request body limit)",
                self.max_manifest_bytes
            ));
        }
        if let (Credentials::Kubeconfig, None, false) = (
            self.credentials,
            &self.kubeconfig,
            self.kind == TargetKind::CloudRun,
        ) {
            problem("credentials = \"kubeconfig\" needs kubeconfig = \"path\"".into())
        }
        self.google_problems(&mut problem);
        self.audit_log_problems(&mut problem);
        problems
    }

    /// A target may accept only kinds the broker knows how to check, each in its one version.
    fn kind_problems(&self, problem: &mut impl FnMut(String)) {
        if self.kinds.is_empty() {
            problem("kinds is empty: nothing could be requested".into());
        }
        let known: Vec<String> = KNOWN_KINDS
            .iter()
            .map(|(api_version, kind)| format!("{kind} ({api_version})"))
            .collect();
        for (i, allowed) in self.kinds.iter().enumerate() {
            match KNOWN_KINDS.iter().find(|(_, kind)| *kind == allowed.kind) {
                None => problem(format!(
                    "kinds: {:?} is not a kind the broker can check (it checks {})",
                    allowed.kind,
                    known.join(", ")
                )),
                Some((api_version, kind)) if *api_version != allowed.api_version => {
                    problem(format!(
                        "kinds: {kind} must have api_version {api_version:?}, not {:?}",
                        allowed.api_version
                    ))
                }
                Some(_) if self.kinds[..i].contains(allowed) => {
                    problem(format!("kinds: {} is listed twice", allowed.kind))
                }
                Some(_) => {}
            }
        }
    }
}

/// An RFC 1123 label, as Kubernetes requires of namespace names.
fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}

/// All the problems at once, or none.
fn report(problems: &[String]) -> anyhow::Result<()> {
    match problems {
        [] => Ok(()),
        [one] => bail!("{one}"),
        many => bail!("{} problems:\n  - {}", many.len(), many.join("\n  - ")),
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
        config.load_notification_secrets(&|var| std::env::var(var).ok())?;
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        let problems: Vec<String> = config
            .problems()
            .iter()
            .map(|p| lines::with_line(text, p))
            .collect();
        report(&problems)?;
        Ok(config)
    }

    /// Everything that makes a configuration unusable, found before the broker starts, and
    /// all of it at once, so that an operator fixes the file in one pass.
    pub fn validate(&self) -> anyhow::Result<()> {
        report(&self.problems())
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.targets.is_empty() {
            problems.push("no [[targets]]: the broker has nowhere to apply anything".to_owned());
        }
        if self.roles.requesters.is_empty() {
            problems.push(
                "roles.requesters is empty: nobody could file a request; name the groups that may"
                    .to_owned(),
            );
        }
        let session = self.oidc.session_max_age;
        if session < Duration::from_secs(5 * 60) || session > Duration::from_secs(7 * 24 * 3600) {
            problems.push(format!(
                "oidc.session_max_age {} must be between 5m and 7d",
                humantime::format_duration(session)
            ));
        }
        let decision = self.oidc.decision_max_age;
        if decision < Duration::from_secs(60) || decision > session {
            problems.push(format!(
                "oidc.decision_max_age {} must be at least 1m and at most oidc.session_max_age ({})",
                humantime::format_duration(decision),
                humantime::format_duration(session)
            ));
        }
        if url::Url::parse(&self.oidc.issuer).is_err() {
            problems.push(format!("oidc.issuer {:?} is not a URL", self.oidc.issuer));
        }
        for (i, target) in self.targets.iter().enumerate() {
            let name = &target.name;
            if self.targets[..i].iter().any(|t| &t.name == name) {
                problems.push(format!("target {name} is defined twice"));
            }
            problems.extend(
                target
                    .problems()
                    .into_iter()
                    .map(|p| format!("target {name}: {p}")),
            );
        }
        let target_names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        for (i, endpoint) in self.notifications.iter().enumerate() {
            let name = &endpoint.name;
            if name.is_empty() {
                problems.push("notifications: an endpoint has an empty name".to_owned());
            }
            if self.notifications[..i].iter().any(|e| &e.name == name) {
                problems.push(format!("notifications {name} is defined twice"));
            }
            endpoint.problems(&target_names, &mut |p| {
                problems.push(format!("notifications {name}: {p}"))
            });
        }
        problems
    }

    /// Reads each endpoint's URL and secret (from `env`, or a file), all problems at once.
    pub fn load_notification_secrets(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for endpoint in &mut self.notifications {
            let name = endpoint.name.clone();
            endpoint.load_secrets(env, &mut |p| {
                problems.push(format!("notifications {name}: {p}"))
            });
        }
        report(&problems)
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }
}
