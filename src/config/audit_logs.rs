//! `audit_logs = true`: the cluster's Cloud Audit Logs as a second witness. The broker reads
//! them with its Google identity whatever credentials reach the cluster, so it needs to know
//! whose logs they are: `project`, `location` and `cluster`.

use super::gke::{is_loopback, is_resource_id};
use super::{Credentials, TargetConfig, TargetKind};

/// Where the Logging API is, unless the configuration says otherwise.
pub const LOGGING_API: &str = "https://logging.googleapis.com";

impl TargetConfig {
    /// The Logging API's root for this target.
    pub fn logging_api(&self) -> &str {
        self.logging_api
            .as_ref()
            .map_or(LOGGING_API, |u| u.as_str())
    }

    pub(super) fn audit_log_problems(&self, problem: &mut impl FnMut(String)) {
        if !self.audit_logs {
            if self.logging_api.is_some() {
                problem("logging_api is only read with audit_logs = true".into());
            }
            return;
        }
        if self.kind != TargetKind::Gke {
            return problem(
                "audit_logs = true reads a GKE cluster's Cloud Audit Logs: it needs kind = \"gke\""
                    .into(),
            );
        }
        // A cluster found through the GKE API is named already, and checked there.
        let named_for_gke = self.credentials == Credentials::Google
            && self.endpoint.is_none()
            && self.ca_file.is_none();
        for (key, value, example) in [
            ("project", &self.project, "my-project"),
            ("location", &self.location, "us-central1"),
            ("cluster", &self.cluster, "prod"),
        ]
        .into_iter()
        .filter(|_| !named_for_gke)
        {
            match value {
                None => problem(format!(
                    "audit_logs = true needs {key} (e.g. {key} = \"{example}\"): the logs read are the cluster's"
                )),
                Some(v) if !is_resource_id(v) => problem(format!(
                    "{key} {v:?} must be lower-case letters, digits, '-', '.' or ':' (e.g. \"{example}\")"
                )),
                Some(_) => {}
            }
        }
        if let Some(api) = &self.logging_api {
            let fine = api.scheme() == "https" || (api.scheme() == "http" && is_loopback(api));
            if !fine {
                problem(format!(
                    "logging_api {api} must be https (plain http only on loopback, for tests); the default is \"{LOGGING_API}\""
                ));
            }
        }
    }
}
