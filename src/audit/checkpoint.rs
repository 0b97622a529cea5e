//! Checkpoints: points of the chain (an event's place and hash) written to the structured log,
//! which is shipped to a store that someone with only database access cannot rewrite.
//!
//! The broker writes one after every breakglass apply and every [`EVERY_EVENTS`] events (both
//! from [`log_event`]), and every [`INTERVAL`] from [`run`], which first verifies the
//! chain up to the head it is about to vouch for and logs an error if it is broken. `audit
//! verify --checkpoints FILE` reads them back from the log.

use std::io::BufRead;
use std::time::Duration;

use serde_json::Value;

pub use super::verify::Checkpoint;
use super::verify::verify_from;
use crate::clock::{Clock, Millis, rfc3339};
use crate::domain::AuditAction;
use crate::domain::digest::canonical_json;
use crate::store::{AuditEvent, ChainHead, Store};

/// How often the head is verified and logged.
pub const INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Every this many events, the event that lands on the multiple is also logged as a
/// checkpoint, so a busy broker leaves checkpoints between the periodic ones.
pub const EVERY_EVENTS: i64 = 1000;

/// Why a committed event is also a checkpoint, if it is one: a breakglass went live, or the
/// count came round.
pub fn checkpoint_reason(event: &AuditEvent) -> Option<&'static str> {
    if event.action == AuditAction::Applied.as_str() {
        Some("breakglass applied")
    } else if event.seq % EVERY_EVENTS == 0 {
        Some("event count")
    } else {
        None
    }
}

/// Writes the event to the structured log once it has committed, with everything needed to
/// recompute its hash, so that a log store outside the database holds a second copy of the
/// history; and a checkpoint after it when [`checkpoint_reason`] says so.
pub fn log_event(event: &AuditEvent) {
    tracing::info!(
        target: "audit",
        seq = event.seq,
        at = %rfc3339(event.at),
        action = %event.action,
        actor = %event.actor,
        request_id = event.request_id.as_deref().unwrap_or(""),
        ticket = event.ticket.as_deref().unwrap_or(""),
        target_name = event.target.as_deref().unwrap_or(""),
        namespace = event.namespace.as_deref().unwrap_or(""),
        detail = %canonical_json(&event.detail),
        prev_hash = %event.prev_hash,
        hash = %event.hash,
        "audit: {} by {}{}",
        event.action,
        event.actor,
        event.ticket.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(),
    );
    if let Some(reason) = checkpoint_reason(event) {
        log_checkpoint(event.seq, &event.hash, reason);
    }
}

/// Writes a point of the chain (an event's place and hash) to the structured log. Someone
/// who can rewrite the database cannot rewrite the log store these lines go to, so
/// `audit verify --checkpoints` catches even a chain rewritten consistently from some event
/// on. The line is recognised by `"checkpoint": true`.
pub fn log_checkpoint(seq: i64, hash: &str, reason: &str) {
    tracing::info!(
        target: "audit",
        checkpoint = true,
        seq,
        hash,
        reason,
        "audit checkpoint at seq {seq}"
    );
}

/// Every this many rounds the walk starts from the genesis again rather than from the last
/// head it verified: an incremental walk notices a rewrite behind it only when the rewrite
/// reaches the remembered head, a full one notices any edit.
const FULL_EVERY_ROUNDS: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading the checkpoints: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {why}")]
    Malformed { line: usize, why: String },
    #[error(
        "lines {first} and {second} give different hashes for seq {seq}: the log itself disagrees"
    )]
    Conflict {
        seq: i64,
        first: usize,
        second: usize,
    },
}

/// Reads checkpoints from JSON log lines, sorted by seq.
///
/// A line counts when it is a JSON object (or a Cloud Logging entry whose `jsonPayload` is
/// one) that either says `"checkpoint": true` or is an audit event's own log line (`"target":
/// "audit"` with an `action`): every event's line carries its seq and hash, so a log holding
/// them pins every event. Other lines, JSON or not, are skipped, so a whole log can be given
/// as it is.
pub fn read_checkpoints(reader: impl BufRead) -> Result<Vec<Checkpoint>, CheckpointError> {
    let mut found = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_no = index + 1;
        let line = line?;
        let Ok(Value::Object(entry)) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        let fields = match entry.get("jsonPayload") {
            Some(Value::Object(payload)) => payload,
            _ => &entry,
        };
        let marked = fields.get("checkpoint") == Some(&Value::Bool(true));
        let event_line = fields.get("target").and_then(Value::as_str) == Some("audit")
            && fields.get("action").is_some_and(Value::is_string);
        if !marked && !event_line {
            continue;
        }
        let seq = fields
            .get("seq")
            .and_then(Value::as_i64)
            .filter(|s| *s >= 1);
        let hash = fields
            .get("hash")
            .and_then(Value::as_str)
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        match (seq, hash) {
            (Some(seq), Some(hash)) => found.push(Checkpoint {
                seq,
                hash: hash.to_ascii_lowercase(),
                line: line_no,
            }),
            _ => {
                return Err(CheckpointError::Malformed {
                    line: line_no,
                    why: "a checkpoint needs \"seq\" (an integer from 1) and \"hash\" (64 hex digits)"
                        .into(),
                });
            }
        }
    }
    found.sort_by_key(|c| (c.seq, c.line));
    let mut unique: Vec<Checkpoint> = Vec::with_capacity(found.len());
    for checkpoint in found {
        match unique.last() {
            Some(last) if last.seq == checkpoint.seq && last.hash == checkpoint.hash => {}
            Some(last) if last.seq == checkpoint.seq => {
                return Err(CheckpointError::Conflict {
                    seq: checkpoint.seq,
                    first: last.line,
                    second: checkpoint.line,
                });
            }
            _ => unique.push(checkpoint),
        }
    }
    Ok(unique)
}

/// Starts [`run`] on the runtime.
pub fn spawn(store: Store, clock: Clock) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, clock))
}

/// Every [`INTERVAL`] of the clock: verify the chain up to its head, record the outcome for
/// the audit page ([`Store::record_audit_check`]), then log the head as a checkpoint if it
/// moved. A broken chain is logged as an error each round until it is dealt with, and
/// nothing is vouched for meanwhile.
pub async fn run(store: Store, clock: Clock) {
    let interval = Millis::try_from(INTERVAL.as_millis()).unwrap_or(Millis::MAX);
    let mut anchor: Option<ChainHead> = None;
    let mut logged: Option<ChainHead> = None;
    let mut round: u32 = 0;
    loop {
        clock
            .sleep_until(clock.now().saturating_add(interval))
            .await;
        let from = if round.is_multiple_of(FULL_EVERY_ROUNDS) {
            None
        } else {
            anchor.clone()
        };
        round = round.wrapping_add(1);
        // Everything committed so far is checked, not only what was chained by now.
        store.chain_committed().await;
        match verify_from(&store, from.as_ref(), &[]).await {
            Ok(report) => {
                // Another replica's full walk found a problem behind this replica's anchor,
                // which an incremental walk cannot see: let a full walk here decide rather
                // than paper over it.
                let behind = from.is_some()
                    && report.is_intact()
                    && matches!(store.last_audit_check().await, Ok(Some(c)) if c.problem.is_some());
                if behind {
                    anchor = None;
                    round = 0;
                    continue;
                }
                if let Err(e) = store
                    .record_audit_check(&report.as_check(clock.now()))
                    .await
                {
                    tracing::warn!(error = %e, "cannot record the audit chain check");
                }
                match &report.problem {
                    None => {
                        let head = report.head.clone();
                        if head.seq > 0 && logged.as_ref() != Some(&head) {
                            log_checkpoint(head.seq, &head.hash, "interval");
                            logged = Some(head.clone());
                        }
                        anchor = Some(head);
                    }
                    Some(problem) => {
                        tracing::error!(
                            target: "audit",
                            first_bad_seq = problem.first_bad_seq(),
                            verified_through = report.verified_through,
                            "audit chain verification failed: {problem}"
                        );
                        anchor = None;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot verify the audit chain now; trying again next round")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn checkpoints_are_read_from_a_whole_log_and_sorted() {
        let log = format!(
            "plain text from something else\n\
             {{\"severity\":\"INFO\",\"message\":\"breakglass-broker serving\"}}\n\
             {{\"severity\":\"NOTICE\",\"checkpoint\":true,\"seq\":9,\"hash\":\"{HASH_B}\"}}\n\
             {{\"jsonPayload\":{{\"checkpoint\":true,\"seq\":3,\"hash\":\"{HASH_A}\"}}}}\n\
             {{\"target\":\"audit\",\"action\":\"created\",\"seq\":9,\"hash\":\"{HASH_B}\"}}\n"
        );
        let checkpoints = read_checkpoints(log.as_bytes()).expect("reads");
        assert_eq!(
            checkpoints,
            vec![
                Checkpoint {
                    seq: 3,
                    hash: HASH_A.into(),
                    line: 4
                },
                Checkpoint {
                    seq: 9,
                    hash: HASH_B.into(),
                    line: 3
                },
            ]
        );
    }

    #[test]
    fn a_log_that_disagrees_with_itself_is_refused() {
        let log = format!(
            "{{\"checkpoint\":true,\"seq\":9,\"hash\":\"{HASH_A}\"}}\n{{\"checkpoint\":true,\"seq\":9,\"hash\":\"{HASH_B}\"}}\n"
        );
        let error = read_checkpoints(log.as_bytes()).expect_err("conflict");
        assert_eq!(
            error.to_string(),
            "lines 1 and 2 give different hashes for seq 9: the log itself disagrees"
        );
    }

    #[test]
    fn a_malformed_checkpoint_names_its_line() {
        let log = "{}\n{\"checkpoint\":true,\"seq\":\"nine\",\"hash\":\"x\"}\n";
        let error = read_checkpoints(log.as_bytes()).expect_err("malformed");
        assert!(error.to_string().starts_with("line 2: "), "{error}");
    }
}
