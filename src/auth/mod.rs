//! Who is calling. API callers present an OIDC ID token from the configured issuer as a bearer
//! token; its signature, issuer, audience, expiry and algorithm are all checked.

pub mod http_client;
pub mod login;
pub mod oidc;
pub mod session;

pub use oidc::{AuthError, Verifier};

use crate::config::Roles;
use crate::domain::Person;

/// Roles that do not depend on a target: who may file requests and who audits.
pub fn is_requester(roles: &Roles, person: &Person) -> bool {
    person.in_any(&roles.requesters)
}

pub fn is_auditor(roles: &Roles, person: &Person) -> bool {
    person.in_any(&roles.auditors)
}
