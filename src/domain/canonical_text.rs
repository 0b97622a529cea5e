//! Recognising JSON text that is already in canonical form, so that it can be used as it is.
//!
//! The store keeps each audit event's `detail` as the canonical text of a JSON value
//! ([`canonical_json`](super::digest::canonical_json)). Exporting a million events by parsing
//! that text into a `Value` and writing it out again costs more than everything else the
//! export does; when the text is exactly what writing it out again would produce, the text
//! itself can go out instead. [`is_canonical`] says when that holds. It accepts a strict
//! subset of canonical texts (no fractions or exponents, no escaped object keys, bounded
//! depth) and refuses everything else, which the caller then parses and writes out as before:
//! refusing costs only speed, never bytes.
//!
//! What "exactly what writing it out again would produce" means: for every text accepted,
//! `serde_json::to_string(&serde_json::from_str::<Value>(text))` and
//! `canonical_json(&serde_json::from_str::<Value>(text))` both give `text` back. The tests
//! below hold that against generated values and against texts edited at random.

/// Nesting deeper than this is refused here (and handled by the slow path), well inside
/// serde_json's own recursion limit of 128.
const MAX_DEPTH: usize = 64;

/// Whether `text` is one JSON value written exactly as serde_json writes a parsed `Value`
/// (object keys sorted, no whitespace): see the module documentation.
pub fn is_canonical(text: &str) -> bool {
    let mut scan = Scan {
        bytes: text.as_bytes(),
        at: 0,
    };
    scan.value(0) && scan.at == scan.bytes.len()
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            _ => false,
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b'}') {
            return true;
        }
        let mut previous: Option<&'a [u8]> = None;
        loop {
            let Some(key) = self.string() else {
                return false;
            };
            // A key with an escape in it would have to be compared unescaped: left to the
            // slow path. Otherwise the text between the quotes is the key's UTF-8, and byte
            // order is the order a `Value`'s map keeps (and `canonical_json` sorts by).
            if key.contains(&b'\\') || previous.is_some_and(|p| p >= key) {
                return false;
            }
            previous = Some(key);
            if !self.eat(b':') || !self.value(depth) {
                return false;
            }
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    /// A string escaped exactly as serde_json escapes: `"` and `\` and the control characters
    /// (the short forms where JSON has one, else `\u00xx` in lower case), nothing else.
    /// Returns the text between the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    let bytes: &'a [u8] = self.bytes;
                    return Some(&bytes[start..self.at - 1]);
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.bytes.get(self.at + 1..self.at + 5)?;
                            let control = match hex {
                                [b'0', b'0', b'0', low] => hex_digit(*low),
                                [b'0', b'0', b'1', low] => hex_digit(*low).map(|l| 16 + l),
                                _ => None,
                            }?;
                            // These have short forms, which serde_json writes instead.
                            if matches!(control, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    /// An integer as serde_json writes one it read: no leading zero, no `-0`, and within
    /// i64 (negative) or u64 (otherwise), beyond which it would have been read as a float.
    fn integer(&mut self) -> bool {
        let start = self.at;
        let negative = self.eat(b'-');
        let digits_start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.bytes[digits_start..self.at];
        if digits.is_empty() || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return false;
        }
        if digits[0] == b'0' && (digits.len() > 1 || negative) {
            return false;
        }
        // The digits are ASCII, so this is valid UTF-8.
        let text = std::str::from_utf8(&self.bytes[start..self.at]).unwrap_or_default();
        if negative {
            text.parse::<i64>().is_ok()
        } else {
            text.parse::<u64>().is_ok()
        }
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::digest::canonical_json;
    use proptest::prelude::*;
    use serde_json::Value;

    /// What the export wrote for a stored text before this fast path: the text parsed and
    /// written out again (by serde_json for JSON Lines, by `canonical_json` for CSV).
    fn rewritten(text: &str) -> Option<(String, String)> {
        let value: Value = serde_json::from_str(text).ok()?;
        Some((serde_json::to_string(&value).ok()?, canonical_json(&value)))
    }

    fn assert_accepted_only_when_unchanged(text: &str) {
        if is_canonical(text) {
            let (json, canonical) = rewritten(text).unwrap_or_else(|| {
                panic!("{text:?} is accepted but does not parse");
            });
            assert_eq!(json, text, "serde_json writes {text:?} otherwise");
            assert_eq!(canonical, text, "canonical_json writes {text:?} otherwise");
        }
    }

    #[test]
    fn what_the_store_writes_for_ordinary_details_is_recognised() {
        for text in [
            r#"{}"#,
            r#"[]"#,
            r#"{"comment":"bench event 1","digest":"sha256:00ff"}"#,
            r#"{"a":[1,-2,0,true,false,null,"x"],"b":{"c":{}}}"#,
            r#"{"e":"é ✓ 😀 \"q\" \\ \n\t\r\b\f \u0001\u001f"}"#,
            r#""just a string""#,
            "18446744073709551615",
            "-9223372036854775808",
        ] {
            assert!(is_canonical(text), "{text}");
            assert_accepted_only_when_unchanged(text);
        }
    }

    #[test]
    fn texts_that_would_be_written_otherwise_are_refused() {
        for text in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a": 1}"#,
            " {}",
            "{} ",
            r#"{"a":1,}"#,
            r#"[1,]"#,
            "1.0",
            "1e3",
            "-0",
            "01",
            "18446744073709551616",
            "-9223372036854775809",
            r#""\/""#,
            r#""\u0041""#,
            r#""\u000a""#,
            r#""\u001F""#,
            "\"tab\there\"",
            r#"{"\u0001":1}"#,
            "redacted",
            "",
            "nul",
            r#""open"#,
        ] {
            assert!(!is_canonical(text), "{text:?}");
            assert_accepted_only_when_unchanged(text);
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_left_to_the_slow_path() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(is_canonical(&deep(MAX_DEPTH)));
        assert!(!is_canonical(&deep(MAX_DEPTH + 1)));
    }

    /// Any JSON value, floats and awkward keys included (for other modules' tests too).
    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[\\x00-\\x7f]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[\\x00-\\x7f]{0,4}|\\PC{0,3}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Whether the value holds what the scan leaves to the slow path: a number that is not an
    /// integer, or an object key that needs an escape.
    fn needs_slow_path(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.is_f64(),
            Value::Array(items) => items.iter().any(needs_slow_path),
            Value::Object(map) => map.iter().any(|(key, v)| {
                key.contains(|c: char| c == '"' || c == '\\' || c < ' ') || needs_slow_path(v)
            }),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn a_canonical_text_is_accepted_unless_it_holds_a_fraction_or_an_escaped_key(
            value in any_value()
        ) {
            let text = canonical_json(&value);
            prop_assert_eq!(is_canonical(&text), !needs_slow_path(&value), "{}", text);
            assert_accepted_only_when_unchanged(&text);
        }

        #[test]
        fn an_edited_text_is_accepted_only_when_writing_it_out_again_gives_it_back(
            value in any_value(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = canonical_json(&value).into_bytes();
            for (at, byte) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                } else {
                    let i = at.index(bytes.len());
                    match byte % 3 {
                        0 => bytes[i] = byte,
                        1 => bytes.insert(i, b"{}[],:\" -01\\ue"[usize::from(byte) % 15]),
                        _ => {
                            bytes.remove(i);
                        }
                    }
                }
            }
            if let Ok(text) = String::from_utf8(bytes) {
                assert_accepted_only_when_unchanged(&text);
            }
        }
    }
}
