//! Where approved objects are applied. One small surface (get, apply, replace, delete) that
//! the workers drive; each kind of target implements it.

pub mod kubernetes;

use serde_json::Value;

pub use kubernetes::KubernetesTarget;

/// Names one object in a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} in {}", self.kind, self.name, self.namespace)
    }
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

/// A configured target. An enum rather than a trait object: the set is closed and small.
pub enum Target {
    Kubernetes(KubernetesTarget),
}

impl Target {
    pub async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, TargetError> {
        match self {
            Target::Kubernetes(k) => k.get(object).await,
        }
    }

    /// Applies `body` and returns the object's version afterwards.
    pub async fn apply(&self, object: &ObjectRef, body: &Value) -> Result<String, TargetError> {
        match self {
            Target::Kubernetes(k) => k.apply(object, body).await,
        }
    }

    /// Asks the target whether it would admit `body` as it stands, changing nothing: how the
    /// request page tells approvers whether an image needs breakglass at all.
    pub async fn dry_run(&self, object: &ObjectRef, body: &Value) -> Result<(), TargetError> {
        match self {
            Target::Kubernetes(k) => k.dry_run(object, body).await,
        }
    }

    /// Puts back `body` only if the object is still at `version`.
    pub async fn restore(
        &self,
        object: &ObjectRef,
        body: &Value,
        version: &str,
    ) -> Result<(), TargetError> {
        match self {
            Target::Kubernetes(k) => k.restore(object, body, version).await,
        }
    }

    /// Deletes the object only if it is still at `version`.
    pub async fn delete(
        &self,
        object: &ObjectRef,
        version: Option<&str>,
    ) -> Result<(), TargetError> {
        match self {
            Target::Kubernetes(k) => k.delete(object, version).await,
        }
    }
}
