//! Notifications, without I/O: which audit actions announce which events, what a Slack
//! message says, how a Standard Webhooks message is signed, and when a failed delivery is
//! tried again.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::AuditAction;
use crate::clock::Millis;

/// An event a notification endpoint may ask for. The names are part of the receivers'
/// contract: never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Created,
    Approved,
    Rejected,
    Applied,
    Expiring,
    Ended,
    Failed,
    NeedsAttention,
    /// A breakglass the broker did not make; reserved for the detector.
    Unbrokered,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::Created,
        EventType::Approved,
        EventType::Rejected,
        EventType::Applied,
        EventType::Expiring,
        EventType::Ended,
        EventType::Failed,
        EventType::NeedsAttention,
        EventType::Unbrokered,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "request.created",
            EventType::Approved => "request.approved",
            EventType::Rejected => "request.rejected",
            EventType::Applied => "request.applied",
            EventType::Expiring => "request.expiring",
            EventType::Ended => "request.ended",
            EventType::Failed => "request.failed",
            EventType::NeedsAttention => "request.needs_attention",
            EventType::Unbrokered => "breakglass.unbrokered",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The event an audit action announces, if any. `request.expiring` has no action of its
    /// own: it is planned when a request is applied.
    pub const fn of(action: AuditAction) -> Option<EventType> {
        match action {
            AuditAction::Created => Some(EventType::Created),
            AuditAction::Approved => Some(EventType::Approved),
            AuditAction::Rejected => Some(EventType::Rejected),
            AuditAction::Applied => Some(EventType::Applied),
            AuditAction::Expired | AuditAction::Closed => Some(EventType::Ended),
            AuditAction::Failed => Some(EventType::Failed),
            AuditAction::NeedsAttention => Some(EventType::NeedsAttention),
            _ => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first retry comes within this long (the issue's "within 5 s").
const FIRST_RETRY_MS: Millis = 2_000;
/// No two tries are further apart than this.
pub const MAX_RETRY_MS: Millis = 10 * 60 * 1000;
/// A message not delivered this long after it was written is given up.
pub const GIVE_UP_AFTER_MS: Millis = 24 * 3600 * 1000;

/// How long to wait before try `attempts + 1`, given a random `unit` in [0, 1): exponential
/// (2 s, 4 s, 8 s ... up to 10 min), jittered to between half and all of it, so that the
/// first retry comes within 1 to 2 s and replicas never retry in step.
pub fn retry_delay(attempts: i64, unit: f64) -> Millis {
    let base = FIRST_RETRY_MS
        .saturating_mul(1 << attempts.clamp(0, 20))
        .min(MAX_RETRY_MS);
    let unit = unit.clamp(0.0, 1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    // Milliseconds below 10 minutes: exact in an f64.
    let jittered = base / 2 + ((base / 2) as f64 * unit) as Millis;
    jittered.clamp(500, MAX_RETRY_MS)
}

/// A Standard Webhooks secret: `whsec_` and the base64 of at least 24 random bytes.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.trim().strip_prefix("whsec_") else {
        return Err("must start with \"whsec_\" (a Standard Webhooks secret)".into());
    };
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| "is not base64 after \"whsec_\"".to_owned())?;
    if bytes.len() < 24 {
        return Err(format!(
            "holds {} bytes; a secret needs at least 24 random bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// The `webhook-signature` header: `v1,` and the base64 HMAC-SHA256 of "id.timestamp.body".
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC takes keys of any length; this arm is never taken.
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The Slack incoming-webhook message for a stored body `{type, timestamp, data}`: `text` (what
/// happened, the ticket and the link, for notifications and clients without blocks) and
/// `blocks`. Only what the body holds, which holds no secrets, tokens or manifests.
pub fn slack_message(body: &Value) -> Value {
    let data = &body["data"];
    let s = |key: &str| data[key].as_str().unwrap_or_default();
    let ticket = s("ticket");
    let url = s("url");
    let headline = headline(body);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&headline, 150)}}),
        json!({"type": "section", "fields": [
            field("Ticket", ticket),
            field("Target", &format!("{}/{}", s("target"), s("namespace"))),
            field("Requester", s("requester")),
            field("State", s("state")),
        ]}),
    ];
    let images: Vec<String> = data["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|image| format!("`{}`", escape(image)))
        .collect();
    if !images.is_empty() {
        blocks.push(section(&format!("*Images*\n{}", images.join("\n"))));
    }
    if body["type"] == EventType::Created.as_str() {
        blocks.push(section(&format!(
            "*Why*\n{}\n*Approval rule*\n{}",
            escape(s("justification")),
            escape(s("approval_rule"))
        )));
    }
    let approvers: Vec<&str> = data["approvers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !approvers.is_empty() {
        blocks.push(section(&format!(
            "*Approved by*\n{}",
            escape(&approvers.join(", "))
        )));
    }
    if let Some(outcome) = data["outcome"].as_str() {
        blocks.push(section(&format!("*Outcome*\n{}", escape(outcome))));
    }
    blocks.push(json!({"type": "actions", "elements": [{
        "type": "button",
        "text": {"type": "plain_text", "text": "Open the request"},
        "url": url,
    }]}));
    // The fallback names the ticket even for a headline that does not.
    let text = if ticket.is_empty() || headline.contains(ticket) {
        format!("{} <{url}|open the request>", escape(&headline))
    } else {
        format!(
            "{} ({}) <{url}|open the request>",
            escape(&headline),
            escape(ticket)
        )
    };
    json!({
        "text": text,
        "blocks": blocks,
    })
}

/// One line saying what happened.
pub fn headline(body: &Value) -> String {
    let data = &body["data"];
    let s = |key: &str| data[key].as_str().unwrap_or_default();
    let place = format!("{}/{}", s("target"), s("namespace"));
    let ticket = s("ticket");
    match body["type"].as_str().and_then(EventType::parse) {
        Some(EventType::Created) => format!(
            "{} asks for breakglass on {place} for {ticket}",
            s("requester")
        ),
        Some(EventType::Approved) => format!(
            "{} approved breakglass {ticket} ({} of {} approvals)",
            s("actor"),
            data["approvals"]["count"],
            data["approvals"]["needed"]
        ),
        Some(EventType::Rejected) => format!("{} rejected breakglass {ticket}", s("actor")),
        Some(EventType::Applied) => format!(
            "Breakglass {ticket} is active on {place} until {}",
            s_time(data, "expires_at")
        ),
        Some(EventType::Expiring) => format!(
            "Breakglass {ticket} on {place} ends at {}",
            s_time(data, "expires_at")
        ),
        Some(EventType::Ended) => format!("Breakglass {ticket} on {place} {}", s("state")),
        Some(EventType::Failed) => format!("Breakglass {ticket} could not be applied on {place}"),
        Some(EventType::NeedsAttention) => {
            format!("Breakglass {ticket} on {place} could not be undone: it needs attention")
        }
        Some(EventType::Unbrokered) => format!("A breakglass the broker did not make on {place}"),
        None => format!("Breakglass {ticket} on {place}"),
    }
}

fn s_time(data: &Value, key: &str) -> String {
    data["times"][key].as_str().unwrap_or("?").to_owned()
}

fn field(name: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": truncate(&format!("*{name}*\n{}", escape(value)), 2000)})
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, 3000)}})
}

/// Slack's three control characters, so that input cannot make links or mentions.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_reads_back_from_its_name() {
        for event in EventType::ALL {
            assert_eq!(EventType::parse(event.as_str()), Some(event));
        }
        assert_eq!(EventType::parse("request.fully_approved"), None);
    }

    #[test]
    fn retries_start_within_five_seconds_and_never_wait_more_than_ten_minutes() {
        for unit in [0.0, 0.5, 0.999] {
            assert!(retry_delay(0, unit) <= 5_000);
            assert!(retry_delay(0, unit) >= 500);
            for attempts in 0..40 {
                assert!(retry_delay(attempts, unit) <= MAX_RETRY_MS);
                assert!(retry_delay(attempts + 1, unit) >= retry_delay(attempts, unit));
            }
        }
        assert!(retry_delay(30, 0.999) > MAX_RETRY_MS * 9 / 10);
        assert!(retry_delay(30, 0.0) >= MAX_RETRY_MS / 2);
        assert_ne!(retry_delay(3, 0.0), retry_delay(3, 0.9));
    }

    #[test]
    fn a_signature_is_the_hmac_of_id_timestamp_and_body() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_must_be_whsec_and_base64_of_enough_bytes() {
        assert!(parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(parse_secret("whsec_not base64!").is_err());
        assert!(parse_secret("whsec_c2hvcnQ=").is_err());
    }

    #[test]
    fn slack_text_escapes_what_people_typed() {
        let body = json!({"type": "request.created", "data": {
            "ticket": "INC-1", "requester": "Alice", "target": "t", "namespace": "n",
            "justification": "<!channel> & friends", "url": "https://b.example/requests/r1",
        }});
        let message = slack_message(&body);
        let all = message.to_string();
        assert!(!all.contains("<!channel>"), "{all}");
        assert!(all.contains("&lt;!channel&gt; &amp; friends"), "{all}");
        assert!(
            message["text"]
                .as_str()
                .is_some_and(|t| t.contains("<https://b.example/requests/r1|open the request>")),
            "{message}"
        );
    }
}
