//! The rules of breakglass, free of I/O so that every one of them is tested directly.

pub mod access;
pub mod action;
pub mod approval;
pub mod canonical_text;
pub mod chain;
pub mod cloud_run;
pub mod digest;
pub mod end;
pub mod finding;
pub mod images;
pub mod manifest;
pub mod notice;
pub mod person;
pub mod policy;
pub mod stamp;
pub mod state;
pub mod timeline;
pub mod unbrokered;

pub use access::Roles;
pub use action::AuditAction;
pub use approval::{ApprovalRule, ApprovalTally};
pub use person::Person;
pub use state::State;

/// The label that makes Binary Authorization admit any image, and the older annotation.
pub const BREAKGLASS_LABEL: &str = "image-policy.k8s.io/break-glass";
pub const BREAKGLASS_ANNOTATION: &str = "alpha.image-policy.k8s.io/break-glass";

/// Labels and annotations under this prefix belong to the broker; submitted manifests may not
/// carry them.
pub const BROKER_PREFIX: &str = "breakglass-broker.io/";
