//! The broker's own Google identity: access tokens through Application Default Credentials
//! (`google-cloud-auth`), which every target with `credentials = "google"` shares.
//!
//! ADC finds, in this order: `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key, an
//! external account for workload identity federation, an impersonation config), gcloud's
//! application-default login, and last the metadata server (GCE, Cloud Run, GKE Workload
//! Identity), itself found through `GCE_METADATA_HOST` (host:port, plain HTTP) when that is
//! set. The crate caches each token and refreshes it in the background before it expires;
//! after a transient failure it tries again every 10 seconds.
//!
//! A service-account key does not go to its `token_uri`: the crate signs a short-lived JWT
//! with the key and sends that as the bearer token (Google's self-signed JWT), so only the
//! metadata server and external accounts make a network call for a token.

use std::time::Duration;

use google_cloud_auth::credentials::{AccessTokenCredentials, mds};
use http::HeaderValue;

use crate::targets::TargetError;

/// Everything the broker calls: GKE, Cloud Run, and the GKE API itself.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// So that GKE can map the token to the service account's email for Kubernetes RBAC.
pub const USERINFO_EMAIL_SCOPE: &str = "https://www.googleapis.com/auth/userinfo.email";
pub const SCOPES: [&str; 2] = [CLOUD_PLATFORM_SCOPE, USERINFO_EMAIL_SCOPE];

/// Longest the broker waits for a token; a metadata server that accepts and never answers
/// would otherwise hold a worker.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);

/// A handle on the broker's Google credentials; clones share one token cache.
#[derive(Clone, Debug)]
pub struct GoogleAuth {
    credentials: AccessTokenCredentials,
}

impl GoogleAuth {
    /// Application Default Credentials with the broker's scopes. Must be called inside the
    /// Tokio runtime: the crate starts its refresh task here. Fetches nothing yet, so a
    /// metadata server that is down does not stop the broker from starting.
    pub fn application_default() -> anyhow::Result<GoogleAuth> {
        let credentials = google_cloud_auth::credentials::Builder::default()
            .with_scopes(SCOPES)
            .build_access_token_credentials()
            .map_err(|e| anyhow::anyhow!("Google Application Default Credentials: {e}"))?;
        Ok(GoogleAuth { credentials })
    }

    /// The metadata server at `endpoint` (e.g. `http://127.0.0.1:8080`), as on GCE but at
    /// another address: dev mode and tests use it to reach their simulated one without
    /// changing the process environment. `GCE_METADATA_HOST`, when set, still wins, as it
    /// does for every user of the crate. Inside the Tokio runtime, like
    /// [`GoogleAuth::application_default`].
    pub fn metadata_server(endpoint: &str) -> anyhow::Result<GoogleAuth> {
        let credentials = mds::Builder::default()
            .with_endpoint(endpoint.trim_end_matches('/'))
            .with_scopes(SCOPES)
            .build_access_token_credentials()
            .map_err(|e| anyhow::anyhow!("Google metadata server credentials: {e}"))?;
        Ok(GoogleAuth { credentials })
    }

    /// Credentials of a service-account key given as JSON (the content of a key file). The
    /// crate signs its own JWT with the key; the key's `token_uri` is not called.
    pub fn service_account_key(key: serde_json::Value) -> anyhow::Result<GoogleAuth> {
        let credentials = google_cloud_auth::credentials::service_account::Builder::new(key)
            .with_access_specifier(
                google_cloud_auth::credentials::service_account::AccessSpecifier::from_scopes(
                    SCOPES,
                ),
            )
            .build_access_token_credentials()
            .map_err(|e| anyhow::anyhow!("Google service-account key: {e}"))?;
        Ok(GoogleAuth { credentials })
    }

    /// The current access token as an `Authorization: Bearer` value, marked sensitive so
    /// that no debug output shows it. A failure is [`TargetError::Unavailable`]: the worker
    /// keeps the request approved, shows the message and tries again.
    pub async fn bearer(&self) -> Result<HeaderValue, TargetError> {
        let token = tokio::time::timeout(TOKEN_TIMEOUT, self.credentials.access_token())
            .await
            .map_err(|_| {
                TargetError::Unavailable(format!(
                    "getting a Google access token: no answer within {}s",
                    TOKEN_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| TargetError::Unavailable(format!("getting a Google access token: {e}")))?;
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.token)).map_err(|_| {
            TargetError::Unavailable("the Google access token is not a valid header value".into())
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}
