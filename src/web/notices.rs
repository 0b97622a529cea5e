//! Who was told about a request, and whether it reached them: for the request page and the
//! API. Endpoint names and outcomes only; never a URL (a Slack webhook URL is a secret).

use serde::Serialize;

use crate::clock::rfc3339;
use crate::store::{DELIVERED, Message};

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
