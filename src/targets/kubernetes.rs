//! Kubernetes and GKE through kube-rs: server-side apply with the broker's field manager.

use std::path::Path;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::{Expect, ObjectRef, Target, TargetError, Written};

pub use crate::domain::end::FIELD_MANAGER;

pub struct KubernetesTarget {
    client: kube::Client,
}

impl KubernetesTarget {
    pub async fn from_kubeconfig(path: &Path, context: Option<&str>) -> anyhow::Result<Self> {
        let kubeconfig = Kubeconfig::read_from(path)?;
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        Self::with_config(config)
    }

    pub fn in_cluster() -> anyhow::Result<Self> {
        Self::with_config(kube::Config::incluster()?)
    }

    /// kube-rs would otherwise retry 503s for minutes inside one call, hiding the outage from
    /// the worker; the worker retries itself, with backoff, and shows the last error.
    fn with_config(mut config: kube::Config) -> anyhow::Result<Self> {
        config.default_retry = false;
        Ok(Self {
            client: kube::Client::try_from(config)?,
        })
    }

    /// A target over a client built elsewhere, e.g. GKE's with the broker's Google token.
    pub fn with_client(client: kube::Client) -> Self {
        Self { client }
    }

    pub(super) fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, object: &ObjectRef) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &object.namespace, &resource(object))
    }
}

#[async_trait::async_trait]
impl Target for KubernetesTarget {
    async fn scan(&self, namespaces: &[String]) -> Result<Option<Vec<Value>>, TargetError> {
        self.scan_workloads(namespaces).await.map(Some)
    }

    fn watches(&self) -> bool {
        true
    }

    async fn watch(
        &self,
        namespaces: &[String],
        picture: &super::Picture,
        backstop: std::time::Duration,
    ) -> Result<(), TargetError> {
        self.watch_workloads(namespaces, picture, backstop).await;
        Ok(())
    }

    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, TargetError> {
        match self.api(object).get(&object.name).await {
            Ok(found) => Ok(Some(to_value(&found)?)),
            Err(e) => match classify(e) {
                TargetError::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn apply(
        &self,
        object: &ObjectRef,
        body: &Value,
        expect: Expect<'_>,
    ) -> Result<Written, TargetError> {
        let written = match expect {
            Expect::Absent => {
                let created: DynamicObject = serde_json::from_value(body.clone())
                    .map_err(|e| TargetError::Refused(format!("the object cannot be read: {e}")))?;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                self.api(object).create(&params, &created).await
            }
            Expect::Version(version) => {
                // A resourceVersion in an apply is a precondition: the write lands only while
                // the object is still at the version the broker recorded.
                let mut body = body.clone();
                body["metadata"]["resourceVersion"] = Value::String(version.to_owned());
                let params = PatchParams::apply(FIELD_MANAGER).force();
                self.api(object)
                    .patch(&object.name, &params, &Patch::Apply(&body))
                    .await
            }
        };
        let written = written.map_err(classify)?;
        Ok(Written {
            version: written.metadata.resource_version.unwrap_or_default(),
            uid: written.metadata.uid,
        })
    }

    async fn dry_run(&self, object: &ObjectRef, body: &Value) -> Result<(), TargetError> {
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        self.api(object)
            .patch(&object.name, &params, &Patch::Apply(body))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn restore(
        &self,
        object: &ObjectRef,
        body: &Value,
        version: &str,
    ) -> Result<(), TargetError> {
        let mut previous: DynamicObject = serde_json::from_value(body.clone()).map_err(|e| {
            TargetError::Refused(format!("the recorded object cannot be read back: {e}"))
        })?;
        previous.metadata.resource_version = Some(version.to_owned());
        previous.metadata.managed_fields = None;
        self.api(object)
            .replace(
                &object.name,
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &previous,
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn delete(&self, object: &ObjectRef, version: Option<&str>) -> Result<(), TargetError> {
        // Its pods and ReplicaSets go with it, as a controller's dependents.
        let params = DeleteParams {
            preconditions: version.map(|v| Preconditions {
                resource_version: Some(v.to_owned()),
                uid: None,
            }),
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            ..Default::default()
        };
        match self.api(object).delete(&object.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) => match classify(e) {
                TargetError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}

fn to_value(object: &DynamicObject) -> Result<Value, TargetError> {
    serde_json::to_value(object)
        .map_err(|e| TargetError::Unavailable(format!("unreadable object: {e}")))
}

/// The REST resource for a kind. Only workload kinds pass policy, so a fixed table serves
/// without a discovery round trip on the apply path.
fn resource(object: &ObjectRef) -> ApiResource {
    let (group, version) = match object.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", object.api_version.as_str()),
    };
    let plural = match object.kind.as_str() {
        "Pod" => "pods".to_owned(),
        "Deployment" => "deployments".to_owned(),
        "StatefulSet" => "statefulsets".to_owned(),
        "DaemonSet" => "daemonsets".to_owned(),
        "ReplicaSet" => "replicasets".to_owned(),
        "Job" => "jobs".to_owned(),
        "CronJob" => "cronjobs".to_owned(),
        other => format!("{}s", other.to_ascii_lowercase()),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, &object.kind),
        &plural,
    )
}

pub(super) fn classify(error: kube::Error) -> TargetError {
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            match status.code {
                404 => TargetError::NotFound,
                409 => TargetError::Conflict(message),
                400 | 403 | 405 | 413 | 415 | 422 => TargetError::Refused(message),
                code => TargetError::Unavailable(format!("HTTP {code}: {message}")),
            }
        }
        other => TargetError::Unavailable(other.to_string()),
    }
}
