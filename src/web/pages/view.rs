//! Formatting for pages: times, durations, YAML with the broker's stamps marked, diffs.

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::clock::{Millis, to_utc};
use crate::domain::State;
use crate::domain::manifest::SERVER_METADATA;
use crate::domain::stamp::is_broker_key;

/// `2026-11-23 09:41 UTC`: minutes are what people act on at 3 a.m.
pub fn when(at: Millis) -> String {
    to_utc(at).format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `1h 59m left`, `12m left`, `less than a minute left`.
pub fn time_left(now: Millis, until: Millis) -> String {
    let minutes = (until - now).max(0) / 60_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => "less than a minute left".to_owned(),
        (0, m) => format!("{m}m left"),
        (h, 0) => format!("{h}h left"),
        (h, m) => format!("{h}h {m}m left"),
    }
}

pub fn duration(minutes: i64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// The CSS class of a state's badge: calm for the quiet states, loud for the ones that matter.
pub fn state_class(state: State) -> &'static str {
    match state {
        State::Pending => "st-pending",
        State::Approved => "st-approved",
        State::Active => "st-active",
        State::NeedsAttention | State::Failed => "st-alert",
        State::Rejected => "st-rejected",
        _ => "st-ended",
    }
}

/// What the state means for the person reading, in one sentence.
pub fn state_sentence(state: State) -> &'static str {
    match state {
        State::Pending => "Waiting for approval.",
        State::Approved => "Approved; the broker is applying it now.",
        State::Active => "Live in the cluster with breakglass.",
        State::Expired => "Ended when its time ran out; the broker undid it.",
        State::Closed => "Closed early by the requester; the broker undid it.",
        State::Rejected => "Rejected. Nothing was applied.",
        State::Cancelled => "Cancelled by the requester. Nothing was applied.",
        State::Lapsed => "Nobody approved it in time. Nothing was applied.",
        State::Failed => "The apply failed; nothing of it remains in the cluster.",
        State::NeedsAttention => {
            "The undo left objects alone because someone changed them since. A person must look."
        }
    }
}

pub fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value)
        .unwrap_or_else(|_| serde_json::to_string_pretty(value).unwrap_or_default())
}

/// One line of YAML, and whether it carries a key the broker sets.
pub struct Line {
    pub text: String,
    pub stamped: bool,
}

pub fn marked_lines(text: &str) -> Vec<Line> {
    text.lines()
        .map(|line| {
            let key = line
                .trim_start()
                .trim_start_matches("- ")
                .split(':')
                .next()
                .unwrap_or_default()
                .trim_matches(['\'', '"']);
            Line {
                text: line.to_owned(),
                stamped: is_broker_key(key),
            }
        })
        .collect()
}

/// One line of a diff: `+`, `-` or ` `, and its text.
pub struct DiffLine {
    pub sign: &'static str,
    pub class: &'static str,
    pub text: String,
}

pub fn diff(before: &str, after: &str) -> Vec<DiffLine> {
    TextDiff::from_lines(before, after)
        .iter_all_changes()
        .map(|change| {
            let (sign, class) = match change.tag() {
                ChangeTag::Delete => ("-", "del"),
                ChangeTag::Insert => ("+", "ins"),
                ChangeTag::Equal => (" ", "eq"),
            };
            DiffLine {
                sign,
                class,
                text: change.value().trim_end_matches('\n').to_owned(),
            }
        })
        .collect()
}

/// The live object without what the server adds, so the diff shows only what would change.
pub fn comparable(mut live: Value) -> Value {
    if let Some(map) = live.as_object_mut() {
        map.remove("status");
        if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in SERVER_METADATA {
                metadata.remove(key);
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_reads_naturally() {
        assert_eq!(time_left(0, 119 * 60_000 + 59_000), "1h 59m left");
        assert_eq!(time_left(0, 12 * 60_000), "12m left");
        assert_eq!(time_left(0, 3_600_000), "1h left");
        assert_eq!(time_left(5, 0), "less than a minute left");
    }

    #[test]
    fn broker_keys_are_marked() {
        let lines = marked_lines(
            "labels:\n  app: api\n  image-policy.k8s.io/break-glass: 'true'\n  breakglass-broker.io/ticket: INC-1\n",
        );
        let marked: Vec<bool> = lines.iter().map(|l| l.stamped).collect();
        assert_eq!(marked, vec![false, false, true, true]);
    }

    #[test]
    fn diff_marks_changed_lines() {
        let lines = diff("a\nb\n", "a\nc\n");
        let signs: Vec<&str> = lines.iter().map(|l| l.sign).collect();
        assert_eq!(signs, vec![" ", "-", "+"]);
    }
}
