//! Where approved objects are applied. One small interface ([`Target`]) that the workers
//! drive and each kind of target implements, and one [`Registry`] that gives a target's name
//! its configuration, policy and client.

pub mod audit_logs;
pub mod cloud_run;
pub mod gke;
pub mod kubernetes;
mod picture;
mod registry;
mod scan;
mod watch;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use crate::domain::manifest::{ObjectRef, Written};
pub use cloud_run::CloudRunTarget;
pub use gke::GkeTarget;
pub use kubernetes::KubernetesTarget;
pub use picture::{Part, Picture, Snapshot};
pub use registry::{Registry, TargetEntry, UnknownTarget};

/// What the broker recorded of an object before its first write, and so the only state in
/// which it may write it: it never takes over an object it did not record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect<'a> {
    /// Recorded as absent: create it, and fail if it appeared meanwhile.
    Absent,
    /// Recorded as existing at this version: write it only while it is still at it.
    Version(&'a str),
}

/// What went wrong, sorted by what the broker does next.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("not found")]
    NotFound,
    /// Someone else changed the object since the broker last wrote it.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The target refused, e.g. admission denied the object: retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// The target is unreachable or failing: retry with backoff.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl TargetError {
    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Unavailable(_))
    }
}

/// What the lifecycle needs of a target: read what stands, apply the stamped objects, undo
/// (restore or delete, each only at the version the broker left), and ask whether an object
/// would be admitted without breakglass. Kubernetes, GKE and Cloud Run implement it.
#[async_trait]
pub trait Target: Send + Sync {
    /// The object as it stands, or None when it does not exist.
    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, TargetError>;

    /// Writes `body` only as `expect` allows, and returns the object's version and UID
    /// afterwards; an object that is not as expected is a [`TargetError::Conflict`] and is
    /// left untouched.
    async fn apply(
        &self,
        object: &ObjectRef,
        body: &Value,
        expect: Expect<'_>,
    ) -> Result<Written, TargetError>;

    /// Asks the target whether it would admit `body` as it stands, changing nothing: how the
    /// request page tells approvers whether an image needs breakglass at all.
    async fn dry_run(&self, object: &ObjectRef, body: &Value) -> Result<(), TargetError>;

    /// Puts back `body` only if the object is still at `version`.
    async fn restore(
        &self,
        object: &ObjectRef,
        body: &Value,
        version: &str,
    ) -> Result<(), TargetError>;

    /// Deletes the object only if it is still at `version`; its dependents go with it.
    async fn delete(&self, object: &ObjectRef, version: Option<&str>) -> Result<(), TargetError>;

    /// Takes an unbrokered breakglass off a Cloud Run service still at `version` (see
    /// [`CloudRunTarget::withdraw`]); other targets cannot.
    async fn withdraw_breakglass(
        &self,
        _object: &ObjectRef,
        _version: &str,
    ) -> Result<cloud_run::Withdrawal, TargetError> {
        Err(TargetError::Refused(
            "only a Cloud Run service's traffic can be moved back".into(),
        ))
    }

    /// Everything on the target that may carry breakglass, for the detector: Pods and every
    /// workload kind with a pod template (Kubernetes), services (Cloud Run). None when the
    /// target cannot be scanned.
    async fn scan(&self, _namespaces: &[String]) -> Result<Option<Vec<Value>>, TargetError> {
        Ok(None)
    }

    /// Whether the detector watches this target ([`Target::watch`]) rather than polling
    /// [`Target::scan`]: Kubernetes and GKE have watches, Cloud Run has none.
    fn watches(&self) -> bool {
        false
    }

    /// Keeps `picture` up to date with what [`Target::scan`] would list, by watching, and
    /// lists in full again every `backstop`; runs until dropped. Returns only when watching
    /// cannot start (the cluster cannot be reached), for the caller to try again.
    async fn watch(
        &self,
        _namespaces: &[String],
        _picture: &Picture,
        _backstop: Duration,
    ) -> Result<(), TargetError> {
        Err(TargetError::Refused("this target cannot be watched".into()))
    }
}
