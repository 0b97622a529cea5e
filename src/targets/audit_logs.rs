//! A GKE cluster's Cloud Audit Logs through the Logging API v2 (`entries.list`), read with
//! the broker's Google identity: the breakglass query, and paging through its answer.

use std::time::Duration;

use serde_json::{Value, json};

use super::TargetError;
use crate::domain::{BREAKGLASS_ANNOTATION, BREAKGLASS_LABEL};
use crate::google::GoogleAuth;

/// Longest one page may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Entries per page; the API's largest.
pub const PAGE_SIZE: u32 = 1000;

/// The writes the query asks for: Google's documented pod create and update, and also pod
/// patches (a server-side apply is one) and the writes of every workload kind with a pod
/// template, whose entries name the person who deployed rather than a controller.
const METHODS: [&str; 21] = [
    "io.k8s.core.v1.pods.create",
    "io.k8s.core.v1.pods.update",
    "io.k8s.core.v1.pods.patch",
    "io.k8s.apps.v1.deployments.create",
    "io.k8s.apps.v1.deployments.update",
    "io.k8s.apps.v1.deployments.patch",
    "io.k8s.apps.v1.replicasets.create",
    "io.k8s.apps.v1.replicasets.update",
    "io.k8s.apps.v1.replicasets.patch",
    "io.k8s.apps.v1.statefulsets.create",
    "io.k8s.apps.v1.statefulsets.update",
    "io.k8s.apps.v1.statefulsets.patch",
    "io.k8s.apps.v1.daemonsets.create",
    "io.k8s.apps.v1.daemonsets.update",
    "io.k8s.apps.v1.daemonsets.patch",
    "io.k8s.batch.v1.jobs.create",
    "io.k8s.batch.v1.jobs.update",
    "io.k8s.batch.v1.jobs.patch",
    "io.k8s.batch.v1.cronjobs.create",
    "io.k8s.batch.v1.cronjobs.update",
    "io.k8s.batch.v1.cronjobs.patch",
];

/// The breakglass query for one cluster's Admin Activity log from `since` (RFC 3339) on.
///
/// Google's documented one is `resource.type="k8s_cluster"`, pod create or update, and
/// `protoPayload.request.metadata.labels."image-policy.k8s.io/break-glass"="true"`. This one
/// also takes the older annotation (any value: its presence is what GKE honours), and looks
/// at the object as stored (`response`) as well as sent, at the pod itself, a pod template or
/// a CronJob's job template: a patch need not repeat the label, and a Deployment carries it
/// on its template.
pub fn breakglass_query(project: &str, location: &str, cluster: &str, since: &str) -> String {
    let label = format!("\"{BREAKGLASS_LABEL}\"=\"true\"");
    let annotation = format!("\"{BREAKGLASS_ANNOTATION}\":*");
    let mut marks = vec![
        format!("protoPayload.request.metadata.labels.{label}"),
        format!("protoPayload.request.metadata.annotations.{annotation}"),
    ];
    for at in [
        "metadata",
        "spec.template.metadata",
        "spec.jobTemplate.spec.template.metadata",
    ] {
        marks.push(format!("protoPayload.response.{at}.labels.{label}"));
        marks.push(format!(
            "protoPayload.response.{at}.annotations.{annotation}"
        ));
    }
    let methods: Vec<String> = METHODS.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "logName=\"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity\"\n\
         AND resource.type=\"k8s_cluster\"\n\
         AND resource.labels.location=\"{location}\"\n\
         AND resource.labels.cluster_name=\"{cluster}\"\n\
         AND protoPayload.methodName=({methods})\n\
         AND ({marks})\n\
         AND timestamp>=\"{since}\"",
        methods = methods.join(" OR "),
        marks = marks.join("\n  OR "),
    )
}

/// The Logging API at `root` (`https://logging.googleapis.com`, or a simulation's).
pub struct LoggingApi {
    http: reqwest::Client,
    root: String,
    auth: GoogleAuth,
}

impl LoggingApi {
    pub fn new(root: &str, auth: GoogleAuth) -> LoggingApi {
        LoggingApi {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(CALL_TIMEOUT)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            root: root.trim_end_matches('/').to_owned(),
            auth,
        }
    }

    /// One page of `entries.list` over the project's logs, oldest first, and the token of
    /// the next page if there is one.
    pub async fn list(
        &self,
        project: &str,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), TargetError> {
        let mut body = json!({
            "resourceNames": [format!("projects/{project}")],
            "filter": filter,
            "orderBy": "timestamp asc",
            "pageSize": PAGE_SIZE,
        });
        if let Some(token) = page_token {
            body["pageToken"] = token.into();
        }
        let unavailable = |what: String| {
            TargetError::Unavailable(format!("Logging API, projects/{project}: {what}"))
        };
        let response = self
            .http
            .post(format!("{}/v2/entries:list", self.root))
            .header(http::header::AUTHORIZATION, self.auth.bearer().await?)
            .json(&body)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = answer["error"]["message"].as_str().unwrap_or("no message");
            let what = format!("HTTP {}: {message}", status.as_u16());
            return Err(match status.as_u16() {
                400 | 403 | 404 => {
                    TargetError::Refused(format!("Logging API, projects/{project}: {what}"))
                }
                _ => unavailable(what),
            });
        }
        let entries = match &answer["entries"] {
            Value::Array(entries) => entries.clone(),
            Value::Null => Vec::new(),
            _ => return Err(unavailable("entries is not a list".into())),
        };
        let next = answer["nextPageToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok((entries, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::sim_logging::filter;

    #[test]
    fn the_breakglass_query_is_one_the_simulated_logging_api_reads_and_it_matches_a_labelled_pod() {
        let query = breakglass_query(
            "acme-prod",
            "us-central1",
            "prod",
            "2030-01-01T00:00:00.000Z",
        );
        let parsed = filter::parse(&query).expect("parses");
        let mut entry = json!({
            "logName": "projects/acme-prod/logs/cloudaudit.googleapis.com%2Factivity",
            "timestamp": "2030-01-01T00:00:01.000000000Z",
            "resource": { "type": "k8s_cluster",
                          "labels": { "project_id": "acme-prod", "location": "us-central1", "cluster_name": "prod" } },
            "protoPayload": {
                "methodName": "io.k8s.core.v1.pods.create",
                "request": { "metadata": { "labels": { BREAKGLASS_LABEL: "true" } } },
            },
        });
        assert!(parsed.matches(&entry));
        entry["resource"]["labels"]["cluster_name"] = json!("staging");
        assert!(!parsed.matches(&entry), "another cluster's");
        entry["resource"]["labels"]["cluster_name"] = json!("prod");
        entry["protoPayload"]["methodName"] = json!("io.k8s.core.v1.pods.delete");
        assert!(!parsed.matches(&entry), "a delete admits nothing");
        entry["protoPayload"]["methodName"] = json!("io.k8s.apps.v1.deployments.patch");
        entry["protoPayload"]["request"] = json!({ "spec": {} });
        assert!(!parsed.matches(&entry), "no mark anywhere");
        entry["protoPayload"]["response"] = json!({ "spec": { "template": { "metadata": {
            "annotations": { BREAKGLASS_ANNOTATION: "" } } } } });
        assert!(
            parsed.matches(&entry),
            "the older annotation, any value, on the template"
        );
        entry["timestamp"] = json!("2029-12-31T23:59:59.999Z");
        assert!(!parsed.matches(&entry), "before the cursor");
    }
}
