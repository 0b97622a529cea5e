//! Notifications, without I/O: which audit actions announce which events, what a Slack
//! message says, how a Standard Webhooks message is signed, and when a failed delivery is
//! tried again.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AuditAction;
use crate::clock::Millis;

mod slack;

pub use slack::{headline, slack_message};

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
    /// own: it is planned when a request is applied, and again when its end moves.
    pub const fn of(action: AuditAction) -> Option<EventType> {
        match action {
            AuditAction::Created => Some(EventType::Created),
            AuditAction::Approved => Some(EventType::Approved),
            AuditAction::Rejected => Some(EventType::Rejected),
            AuditAction::Applied => Some(EventType::Applied),
            // A request withdrawn or left undecided is over too: those told of it hear so.
            AuditAction::Expired
            | AuditAction::Closed
            | AuditAction::Cancelled
            | AuditAction::Lapsed => Some(EventType::Ended),
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

/// How long a `Retry-After` header (on a 429 or a 503) asks the broker to wait, from `now`:
/// delay-seconds or an HTTP-date (RFC 9110), at most [`MAX_RETRY_MS`]. None when the value
/// is neither.
pub fn retry_after(value: &str, now: Millis) -> Option<Millis> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is still "later than the cap".
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        i64::try_from(seconds.saturating_mul(1000)).unwrap_or(Millis::MAX)
    } else {
        chrono::DateTime::parse_from_rfc2822(value)
            .ok()?
            .timestamp_millis()
            .saturating_sub(now)
    };
    Some(wait.clamp(0, MAX_RETRY_MS))
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
    fn retry_after_reads_seconds_or_an_http_date_and_is_capped_at_ten_minutes() {
        // Sun, 06 Nov 1994 08:49:37 GMT, the example of RFC 9110.
        let date = 784_111_777_000;
        assert_eq!(retry_after("20", date), Some(20_000));
        assert_eq!(retry_after(" 0 ", date), Some(0));
        assert_eq!(retry_after("86400", date), Some(MAX_RETRY_MS));
        assert_eq!(
            retry_after("99999999999999999999", date),
            Some(MAX_RETRY_MS)
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date - 30_000),
            Some(30_000)
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date + 5_000),
            Some(0),
            "a date in the past: at once"
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date - 3_600_000),
            Some(MAX_RETRY_MS)
        );
        assert_eq!(retry_after("-5", date), None);
        assert_eq!(retry_after("soon", date), None);
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
}
