//! What the detector reads from a Kubernetes cluster: Pods and every workload kind with a pod
//! template, in every namespace the broker can read.

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::kubernetes::classify;
use super::{KubernetesTarget, TargetError};

/// (group, version, kind, plural) of each kind the detector lists.
pub(super) const KINDS: [(&str, &str, &str, &str); 7] = [
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

impl KubernetesTarget {
    /// Every object of the pod-bearing kinds: across the cluster when the broker may list
    /// there, else in each of `namespaces`. Items come with `apiVersion` and `kind` set (a
    /// list's items carry neither).
    pub async fn scan_workloads(&self, namespaces: &[String]) -> Result<Vec<Value>, TargetError> {
        let mut objects = Vec::new();
        for (group, version, kind, plural) in KINDS {
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind),
                plural,
            );
            let everywhere: Api<DynamicObject> = Api::all_with(self.client().clone(), &resource);
            let items = match everywhere
                .list(&ListParams::default())
                .await
                .map_err(classify)
            {
                Ok(list) => list.items,
                Err(TargetError::Refused(_)) => {
                    let mut items = Vec::new();
                    for namespace in namespaces {
                        let api: Api<DynamicObject> =
                            Api::namespaced_with(self.client().clone(), namespace, &resource);
                        items.extend(
                            api.list(&ListParams::default())
                                .await
                                .map_err(classify)?
                                .items,
                        );
                    }
                    items
                }
                Err(other) => return Err(other),
            };
            for item in items {
                let mut value = serde_json::to_value(&item)
                    .map_err(|e| TargetError::Unavailable(format!("unreadable object: {e}")))?;
                value["apiVersion"] = Value::String(resource.api_version.clone());
                value["kind"] = Value::String(kind.to_owned());
                objects.push(value);
            }
        }
        Ok(objects)
    }
}
