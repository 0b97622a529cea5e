//! The audit chain's hash format: how one event's hash is made from the one before it and its
//! own content. Pure and small, because the store writes it, verification recomputes it, and
//! every chain ever written depends on it staying byte for byte the same.

use std::io::Write;

use serde_json::Value;

use super::digest::{canonical_json, sha256_hex};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of an event that its hash covers, besides its place and its `detail`.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    pub at: i64,
    pub actor: &'a str,
    /// Who acted, as (issuer, subject): None for the broker itself and for events written
    /// before people were recorded so, whose hash covers only the name.
    pub person: Option<(&'a str, &'a str)>,
    pub action: &'a str,
    pub request_id: Option<&'a str>,
    pub ticket: Option<&'a str>,
    pub target: Option<&'a str>,
    pub namespace: Option<&'a str>,
}

/// The hash of an event at `seq` with `prev_hash` before it, `detail` as a JSON value.
pub fn hash(prev_hash: &str, seq: i64, fields: &Fields<'_>, detail: &Value) -> String {
    hash_text(prev_hash, seq, fields, &canonical_json(detail))
}

/// SHA-256 over `prev_hash`, a newline, and the canonical JSON (keys sorted, no spaces) of
/// `{seq, at, actor, action, request_id, ticket, target, namespace, detail}`, `detail` given as
/// its canonical text, with `actor_issuer` and `actor_subject` beside `actor` when a person
/// acted. (Leaving the two keys out rather than writing them as null keeps every event written
/// before they existed hashing as it did.)
///
/// The canonical form is written straight into one buffer, keys in their sorted order, rather
/// than built as a `serde_json::Value` and sorted: verification recomputes a million of these,
/// and splicing in the stored `detail` text as it is also means a `detail` edited in any byte
/// (re-formatted, or no longer JSON) cannot hash as the original did. Strings are escaped by
/// serde_json, exactly as [`canonical_json`] escapes them; a test holds the two forms equal.
pub fn hash_text(prev_hash: &str, seq: i64, fields: &Fields<'_>, detail: &str) -> String {
    let mut out = Vec::with_capacity(prev_hash.len() + 256 + detail.len());
    out.extend_from_slice(prev_hash.as_bytes());
    out.extend_from_slice(b"\n{\"action\":");
    json_text(&mut out, fields.action);
    out.extend_from_slice(b",\"actor\":");
    json_text(&mut out, fields.actor);
    if let Some((issuer, subject)) = fields.person {
        out.extend_from_slice(b",\"actor_issuer\":");
        json_text(&mut out, issuer);
        out.extend_from_slice(b",\"actor_subject\":");
        json_text(&mut out, subject);
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, ",\"at\":{},\"detail\":", fields.at);
    out.extend_from_slice(detail.as_bytes());
    out.extend_from_slice(b",\"namespace\":");
    json_optional(&mut out, fields.namespace);
    out.extend_from_slice(b",\"request_id\":");
    json_optional(&mut out, fields.request_id);
    let _ = write!(out, ",\"seq\":{seq},\"target\":");
    json_optional(&mut out, fields.target);
    out.extend_from_slice(b",\"ticket\":");
    json_optional(&mut out, fields.ticket);
    out.push(b'}');
    sha256_hex(&out)
}

/// `value` as a JSON string, escaped as serde_json escapes it.
pub(crate) fn json_text(out: &mut Vec<u8>, value: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// `value` as a JSON string, or `null`.
pub(crate) fn json_optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => json_text(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(action: &str) -> Fields<'_> {
        Fields {
            at: 0,
            actor: "a",
            person: None,
            action,
            request_id: None,
            ticket: None,
            target: None,
            namespace: None,
        }
    }

    #[test]
    fn a_stored_detail_reformatted_without_changing_its_meaning_no_longer_hashes_the_same() {
        let f = fields("x");
        let canonical = hash_text(GENESIS_HASH, 1, &f, r#"{"a":2,"b":1}"#);
        assert_ne!(
            hash_text(GENESIS_HASH, 1, &f, r#"{"b":1,"a":2}"#),
            canonical
        );
        assert_ne!(
            hash_text(GENESIS_HASH, 1, &f, r#"{"a": 2, "b": 1}"#),
            canonical
        );
    }

    #[test]
    fn every_covered_field_and_the_place_change_the_hash() {
        let detail = serde_json::json!({});
        let base = fields("x");
        let reference = hash(GENESIS_HASH, 1, &base, &detail);
        let variants = [
            Fields { at: 1, ..base },
            Fields { actor: "b", ..base },
            Fields {
                person: Some(("https://issuer", "a")),
                ..base
            },
            Fields {
                action: "y",
                ..base
            },
            Fields {
                request_id: Some("r"),
                ..base
            },
            Fields {
                ticket: Some("t"),
                ..base
            },
            Fields {
                target: Some("t"),
                ..base
            },
            Fields {
                namespace: Some("n"),
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(
                hash(GENESIS_HASH, 1, &variant, &detail),
                reference,
                "{variant:?}"
            );
        }
        assert_ne!(hash(GENESIS_HASH, 2, &base, &detail), reference);
        assert_ne!(hash(&"1".repeat(64), 1, &base, &detail), reference);
        assert_ne!(
            hash(GENESIS_HASH, 1, &base, &serde_json::json!({"k": 1})),
            reference
        );
    }

    /// The hash as first defined: the content built as a JSON value and written out by
    /// `canonical_json`. Every chain already written was hashed this way.
    fn reference_hash(prev_hash: &str, fields: &Fields<'_>, detail: &Value, seq: i64) -> String {
        let mut content = serde_json::json!({
            "seq": seq,
            "at": fields.at,
            "actor": fields.actor,
            "action": fields.action,
            "request_id": fields.request_id,
            "ticket": fields.ticket,
            "target": fields.target,
            "namespace": fields.namespace,
            "detail": detail,
        });
        if let Some((issuer, subject)) = fields.person {
            content["actor_issuer"] = issuer.into();
            content["actor_subject"] = subject.into();
        }
        sha256_hex(format!("{prev_hash}\n{}", canonical_json(&content)).as_bytes())
    }

    #[test]
    fn the_chain_hash_is_byte_for_byte_the_canonical_json_hash() {
        let details = [
            serde_json::json!({}),
            serde_json::json!({ "z": [3, 1.5, -2, null, true], "a": { "y": "é\u{1}\"\\\n\t", "b": "😀" } }),
            serde_json::json!("just a string"),
            serde_json::json!(12345678901_i64),
        ];
        let texts = [
            "alice",
            "",
            "=cmd|' /C calc'!A0",
            "quote \" back \\ ctl \u{7f}\u{1f}",
            "ünïcode ✓",
        ];
        for (i, detail) in details.iter().enumerate() {
            for (j, text) in texts.iter().enumerate() {
                let fields = Fields {
                    at: if j % 2 == 0 { 1_700_000_000_123 } else { -5 },
                    actor: text,
                    person: (i % 2 == 1).then_some(("https://issuer.example", *text)),
                    action: texts[(j + 1) % texts.len()],
                    request_id: (i % 2 == 0).then_some(*text),
                    ticket: Some("INC-1"),
                    target: (j % 2 == 1).then_some("prod"),
                    namespace: None,
                };
                let seq = (i * 10 + j) as i64 + 1;
                assert_eq!(
                    hash(GENESIS_HASH, seq, &fields, detail),
                    reference_hash(GENESIS_HASH, &fields, detail, seq),
                    "{fields:?}"
                );
            }
        }
    }
}
