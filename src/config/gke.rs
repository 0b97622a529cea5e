//! The keys of a GKE target reached with the broker's Google identity, and their checks.

use super::{Credentials, TargetConfig, TargetKind};
use crate::targets::gke::{CONTAINER_API, ClusterSource};

impl TargetConfig {
    /// How a `kind = "gke"`, `credentials = "google"` target finds its cluster; None for
    /// every other target. Only meaningful on a configuration that passed its checks.
    pub fn cluster_source(&self) -> Option<ClusterSource> {
        if (self.kind, self.credentials) != (TargetKind::Gke, Credentials::Google) {
            return None;
        }
        if let (Some(endpoint), Some(ca_file)) = (&self.endpoint, &self.ca_file) {
            return Some(ClusterSource::Fixed {
                endpoint: endpoint.clone(),
                ca_file: ca_file.clone(),
            });
        }
        Some(ClusterSource::Api {
            api: self
                .container_api
                .clone()
                .unwrap_or_else(|| CONTAINER_API.to_owned()),
            project: self.project.clone()?,
            location: self.location.clone()?,
            cluster: self.cluster.clone()?,
        })
    }

    pub(super) fn google_problems(&self, problem: &mut impl FnMut(String)) {
        let gke_keys = [
            ("project", self.project.is_some()),
            ("location", self.location.is_some()),
            ("cluster", self.cluster.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("container_api", self.container_api.is_some()),
        ];
        match (self.kind, self.credentials) {
            (TargetKind::Gke, Credentials::Google) => {}
            (TargetKind::Kubernetes, Credentials::Google) => {
                return problem(
                    "credentials = \"google\" is for kind = \"gke\" (the broker asks the GKE API where the cluster is); reach another cluster through kubeconfig or in-cluster"
                        .into(),
                );
            }
            // Cloud Run's own checks speak for it.
            (TargetKind::CloudRun, _) => return,
            _ => {
                // With audit_logs, project, location and cluster say whose logs to read.
                let named_for_logs = |key: &str| {
                    self.audit_logs && ["project", "location", "cluster"].contains(&key)
                };
                for (key, _) in gke_keys
                    .iter()
                    .filter(|(key, set)| *set && !named_for_logs(key))
                {
                    problem(format!(
                        "{key} is only read with kind = \"gke\" and credentials = \"google\"; remove it or change credentials"
                    ));
                }
                return;
            }
        }
        if self.kubeconfig.is_some() || self.context.is_some() {
            problem(
                "kubeconfig and context are only read with credentials = \"kubeconfig\"; with credentials = \"google\" the broker uses its Google identity"
                    .into(),
            );
        }
        match (&self.endpoint, &self.ca_file) {
            (Some(endpoint), Some(_)) => {
                if let Some(text) = endpoint_problem(endpoint) {
                    problem(text);
                }
                let named = self.project.is_some() || self.location.is_some() || self.cluster.is_some();
                if named && !self.audit_logs {
                    problem(
                        "give either project, location and cluster (the GKE API tells the endpoint and CA) or endpoint and ca_file, not both"
                            .into(),
                    );
                }
            }
            (Some(_), None) => problem(
                "endpoint needs ca_file = \"path\" (a PEM file of the cluster's CA, as in masterAuth.clusterCaCertificate)"
                    .into(),
            ),
            (None, Some(_)) => problem(
                "ca_file is only read with endpoint; without endpoint the GKE API gives the CA".into(),
            ),
            (None, None) => {
                for (key, value, example) in [
                    ("project", &self.project, "my-project"),
                    ("location", &self.location, "us-central1"),
                    ("cluster", &self.cluster, "prod"),
                ] {
                    match value {
                        None => problem(format!(
                            "credentials = \"google\" needs {key} (e.g. {key} = \"{example}\"), or endpoint and ca_file"
                        )),
                        Some(v) if !is_resource_id(v) => problem(format!(
                            "{key} {v:?} must be lower-case letters, digits, '-', '.' or ':' (e.g. \"{example}\")"
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        if let Some(api) = &self.container_api
            && let Some(text) = container_api_problem(api)
        {
            problem(text);
        }
    }
}

/// A project id (possibly domain-scoped), location or cluster name: it goes into a URL path.
pub(super) fn is_resource_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b))
}

fn endpoint_problem(endpoint: &str) -> Option<String> {
    let url = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    };
    match url::Url::parse(&url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => None,
        Ok(_) => Some(format!(
            "endpoint {endpoint:?} must be https (the broker's token must never travel in clear)"
        )),
        Err(e) => Some(format!(
            "endpoint {endpoint:?} is not a host or URL: {e} (write e.g. \"34.118.1.2\" or \"https://34.118.1.2\")"
        )),
    }
}

fn container_api_problem(api: &str) -> Option<String> {
    match url::Url::parse(api) {
        Ok(u) if u.scheme() == "https" => None,
        Ok(u) if u.scheme() == "http" && is_loopback(&u) => None,
        Ok(_) => Some(format!(
            "container_api {api:?} must be https (plain http only on loopback, for tests)"
        )),
        Err(e) => Some(format!(
            "container_api {api:?} is not a URL: {e} (the default is \"{CONTAINER_API}\")"
        )),
    }
}

pub(super) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}
