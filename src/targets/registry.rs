//! One registry of targets: a target's name gives its configuration, its policy and its
//! client together, and a name that is not configured fails the same clear way everywhere.

use std::sync::Arc;

use anyhow::Context;

use super::cloud_run::{self, CloudRunTarget};
use super::{GkeTarget, KubernetesTarget, Target};
use crate::config::{Credentials, TargetConfig, TargetKind};
use crate::domain::ApprovalRule;
use crate::domain::policy::{Policy, quoted};
use crate::google::GoogleAuth;

/// Everything the broker knows of one target.
pub struct TargetEntry {
    pub config: TargetConfig,
    pub policy: Policy,
    pub client: Arc<dyn Target>,
}

impl TargetEntry {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn rules(&self) -> &[ApprovalRule] {
        &self.config.approvals
    }
}

/// A target name that is not configured on this broker.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} is not a configured target (known: {known})", quoted(.name))]
pub struct UnknownTarget {
    pub name: String,
    pub known: String,
}

#[derive(Clone, Default)]
pub struct Registry {
    /// In configuration order, which is the order people see them in.
    entries: Arc<Vec<Arc<TargetEntry>>>,
    /// The broker's Google identity, when a target uses it (credentials or audit logs).
    google: Option<GoogleAuth>,
}

impl Registry {
    /// Builds every configured target's policy and connects its client; targets with
    /// `credentials = "google"` share the broker's Application Default Credentials.
    pub async fn connect(targets: &[TargetConfig]) -> anyhow::Result<Registry> {
        Self::connect_with(targets, None).await
    }

    /// `connect`, with these Google credentials for `credentials = "google"` targets instead
    /// of Application Default Credentials (dev mode's simulated metadata server).
    pub async fn connect_with(
        targets: &[TargetConfig],
        google: Option<GoogleAuth>,
    ) -> anyhow::Result<Registry> {
        let mut google = google;
        let mut entries = Vec::with_capacity(targets.len());
        for config in targets {
            let mut auth = || -> anyhow::Result<GoogleAuth> {
                Ok(match &google {
                    Some(auth) => auth.clone(),
                    None => google.insert(GoogleAuth::application_default()?).clone(),
                })
            };
            let client: Arc<dyn Target> = match config.cluster_source() {
                Some(source) => Arc::new(GkeTarget::new(source, auth()?)),
                None if config.kind == TargetKind::CloudRun => Arc::new(CloudRunTarget::new(
                    config
                        .run_api
                        .as_ref()
                        .map_or(cloud_run::DEFAULT_API, |u| u.as_str()),
                    config.project.as_deref().unwrap_or_default(),
                    config.region.as_deref().unwrap_or_default(),
                    Arc::new(auth()?),
                )),
                None => Arc::new(connect(config).await?),
            };
            if config.audit_logs {
                // Cloud Audit Logs are read with the broker's Google identity, whatever
                // credentials reach the cluster.
                auth()?;
            }
            entries.push(TargetEntry {
                policy: config.policy()?,
                client,
                config: config.clone(),
            });
        }
        let mut registry = Registry::new(entries);
        registry.google = google;
        Ok(registry)
    }

    /// A registry of these entries, e.g. with a test double as a client.
    pub fn new(entries: Vec<TargetEntry>) -> Registry {
        Registry {
            entries: Arc::new(entries.into_iter().map(Arc::new).collect()),
            google: None,
        }
    }

    /// The broker's Google credentials, if any target needed them.
    pub fn google(&self) -> Option<&GoogleAuth> {
        self.google.as_ref()
    }

    pub fn get(&self, name: &str) -> Result<&Arc<TargetEntry>, UnknownTarget> {
        self.entries
            .iter()
            .find(|e| e.name() == name)
            .ok_or_else(|| UnknownTarget {
                name: name.to_owned(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// The approval rules of a target, or None when it is not configured.
    pub fn rules(&self, name: &str) -> Option<&[ApprovalRule]> {
        self.get(name).ok().map(|e| e.rules())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<TargetEntry>> {
        self.entries.iter()
    }
}

async fn connect(target: &TargetConfig) -> anyhow::Result<KubernetesTarget> {
    match (target.credentials, &target.kubeconfig) {
        (Credentials::Kubeconfig, Some(path)) => {
            KubernetesTarget::from_kubeconfig(path, target.context.as_deref())
                .await
                .with_context(|| {
                    format!(
                        "target {}: loading kubeconfig {}",
                        target.name,
                        path.display()
                    )
                })
        }
        (Credentials::InCluster, _) => KubernetesTarget::in_cluster()
            .with_context(|| format!("target {}: in-cluster credentials", target.name)),
        _ => anyhow::bail!("target {}: unsupported credentials", target.name),
    }
}
