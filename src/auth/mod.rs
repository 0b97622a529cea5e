//! Who is calling. API callers present an OIDC ID token from the configured issuer as a bearer
//! token; its signature, issuer, audience, expiry and algorithm are all checked.

pub mod http_client;
pub mod login;
pub mod oidc;
pub mod session;
pub mod token_cache;

pub use oidc::{Admission, AuthError, Verifier};
