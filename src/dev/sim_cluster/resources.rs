//! The fixed catalogue of resource types the simulator serves.
//!
//! One table drives discovery, URL routing and admission, so a resource kubectl
//! can discover is always one the server can store, and the other way round.

/// Where a resource keeps the pod spec that Binary Authorization inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodSpecAt {
    /// Not a pod-bearing resource; admission does not look at it.
    Nowhere,
    /// The object is a Pod: `metadata` and `spec`.
    Pod,
    /// A workload: `spec.template.metadata` and `spec.template.spec`.
    Template,
    /// A CronJob: `spec.jobTemplate.spec.template`.
    CronJob,
}

/// One resource type as discovery describes it.
#[derive(Debug)]
pub(crate) struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Namespaces come from the configuration and cannot be written.
    pub read_only: bool,
    pub pod_spec: PodSpecAt,
}

const fn workload(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
    pod_spec: PodSpecAt,
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced: true,
        short_names,
        read_only: false,
        pod_spec,
    }
}

/// Every served resource, in discovery order.
pub(crate) static RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        read_only: true,
        pod_spec: PodSpecAt::Nowhere,
    },
    workload("", "pods", "pod", "Pod", &["po"], PodSpecAt::Pod),
    workload(
        "",
        "services",
        "service",
        "Service",
        &["svc"],
        PodSpecAt::Nowhere,
    ),
    workload(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        &["cm"],
        PodSpecAt::Nowhere,
    ),
    workload(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        &["sa"],
        PodSpecAt::Nowhere,
    ),
    workload(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        &["deploy"],
        PodSpecAt::Template,
    ),
    workload(
        "apps",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        &["sts"],
        PodSpecAt::Template,
    ),
    workload(
        "apps",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        &["ds"],
        PodSpecAt::Template,
    ),
    workload(
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        &["rs"],
        PodSpecAt::Template,
    ),
    workload("batch", "jobs", "job", "Job", &[], PodSpecAt::Template),
    workload(
        "batch",
        "cronjobs",
        "cronjob",
        "CronJob",
        &["cj"],
        PodSpecAt::CronJob,
    ),
];

/// The groups besides core, each with its single served version.
pub(crate) const GROUPS: &[&str] = &["apps", "batch"];

impl ResourceType {
    /// `v1` or `apps/v1`, as objects carry it in `apiVersion`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps` or `pods`, as the real server names resources in messages.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(crate) fn verbs(&self) -> &'static [&'static str] {
        if self.read_only {
            &["get", "list", "watch"]
        } else {
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        }
    }
}

/// The resource served at `/api/v1/{plural}` (group "") or `/apis/{group}/{version}/{plural}`.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Every resource of one group version, for discovery.
pub(crate) fn in_group_version(
    group: &str,
    version: &str,
) -> impl Iterator<Item = &'static ResourceType> {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}
