//! Who was told about a request, and whether it reached them: for the request page and the
//! API. Endpoint names and outcomes only; never a URL (a Slack webhook URL is a secret).

use serde::Serialize;

use crate::clock::rfc3339;
use crate::store::{DELIVERED, Message, StoreError};
use crate::web::AppState;

#[derive(Clone, Debug, Serialize)]
pub struct NoticeView {
    pub endpoint: String,
    pub event: String,
    /// `delivered`, `waiting` (not tried yet: a reminder's time has not come), `retrying`,
    /// or `not delivered` (given up, refused, or not to be sent; `outcome` says which).
    pub status: &'static str,
    pub outcome: Option<String>,
    pub tries: i64,
    pub last_error: Option<String>,
    /// When it was delivered or given up; else when it is (next) due.
    pub at: String,
}

pub fn views(messages: &[Message]) -> Vec<NoticeView> {
    messages
        .iter()
        .map(|m| {
            let status = match (m.done_at, m.outcome.as_deref()) {
                (Some(_), Some(DELIVERED)) => "delivered",
                (Some(_), _) => "not delivered",
                (None, _) if m.attempts == 0 => "waiting",
                (None, _) => "retrying",
            };
            NoticeView {
                endpoint: m.endpoint.clone(),
                event: m.event_type.clone(),
                status,
                outcome: m.outcome.clone().filter(|o| o != DELIVERED),
                tries: m.attempts,
                last_error: m.last_error.clone(),
                at: rfc3339(m.done_at.unwrap_or(m.due_at)),
            }
        })
        .collect()
}

/// An endpoint a 410 Gone disabled, for the auditors' dashboard.
#[derive(Clone, Debug, Serialize)]
pub struct DisabledView {
    pub endpoint: String,
    pub since: String,
}

/// The configured endpoints that stay disabled: a 410 disabled them under the configuration
/// they still have. A changed configuration (URL, secret, filters) enables one again.
pub async fn disabled(state: &AppState) -> Result<Vec<DisabledView>, StoreError> {
    let disabled = state.store.disabled_endpoints().await?;
    Ok(state
        .config
        .notifications
        .iter()
        .filter_map(|endpoint| {
            let hash = endpoint.config_hash();
            let (_, _, at) = disabled
                .iter()
                .find(|(name, under, _)| *name == endpoint.name && *under == hash)?;
            Some(DisabledView {
                endpoint: endpoint.name.clone(),
                since: rfc3339(*at),
            })
        })
        .collect())
}
