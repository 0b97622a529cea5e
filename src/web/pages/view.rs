//! Formatting for pages: times, durations, YAML with the broker's stamps marked and the live
//! object's inline data masked, diffs.

use chrono::{Datelike, Timelike};
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::clock::{Millis, to_utc};
use crate::domain::manifest::SERVER_METADATA;
use crate::domain::policy::template_path;
use crate::domain::stamp::is_broker_key;
use crate::domain::{BREAKGLASS_ANNOTATION, State};

/// `2026-11-23 09:41 UTC`: minutes are what people act on at 3 a.m.
///
/// Written field by field: chrono's `format` parses its pattern at every call, and a page
/// writes a time for each event it lists.
pub fn when(at: Millis) -> String {
    let t = to_utc(at);
    if !(0..=9999).contains(&t.year()) {
        return t.format("%Y-%m-%d %H:%M UTC").to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `14:02 UTC (3 min ago)` on the day it is read; `2026-11-23 09:41 UTC (2 days ago)` before.
pub fn when_ago(now: Millis, at: Millis) -> String {
    let then = to_utc(at);
    if to_utc(now).date_naive() == then.date_naive() {
        format!(
            "{:02}:{:02} UTC ({})",
            then.hour(),
            then.minute(),
            ago(now, at)
        )
    } else {
        format!("{} ({})", when(at), ago(now, at))
    }
}

/// `just now`, `3 min ago`, `5 h ago`, `2 days ago`, `in 4 min`.
pub fn ago(now: Millis, at: Millis) -> String {
    let minutes = (now - at).abs() / 60_000;
    let span = match minutes {
        0 => return "just now".to_owned(),
        1..=59 => format!("{minutes} min"),
        60..=2879 => format!("{} h", minutes / 60),
        _ => format!("{} days", minutes / 1440),
    };
    if at > now {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
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
        State::Granted => {
            "Extension granted: the breakglass it extends runs until its new end, with nothing undone in between."
        }
        State::NeedsAttention => {
            "The broker could not finish ending this breakglass: the cluster refused or stayed unreachable, so something of it may still run. The requester or an approver can end it again."
        }
    }
}

/// The text a page shows for an object: YAML in which every value sits on its key's line.
pub fn yaml(value: &Value) -> String {
    yaml_lines(value)
        .into_iter()
        .map(|line| line.text + "\n")
        .collect()
}

/// One step from an object's root to one of its values: a mapping key, or a list item known
/// by its `name` (the key Kubernetes merges such lists by), or else by its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Named(String),
    Index(usize),
}

fn step_of(item: &Value, index: usize) -> Step {
    match item.get("name").and_then(Value::as_str) {
        Some(name) => Step::Named(name.to_owned()),
        None => Step::Index(index),
    }
}

/// The value at `path`, if `value` has one there.
fn at<'v>(value: &'v Value, path: &[Step]) -> Option<&'v Value> {
    path.iter().try_fold(value, |node, step| match step {
        Step::Key(key) => node.get(key),
        Step::Named(name) => node
            .as_array()?
            .iter()
            .find(|item| item.get("name").and_then(Value::as_str) == Some(name)),
        Step::Index(i) => node.get(i),
    })
}

/// One line of rendered YAML and the path of the value it shows (a mapping or list line
/// carries the path of the node it opens).
pub struct YamlLine {
    pub path: Vec<Step>,
    pub text: String,
}

/// Block YAML written here rather than by a YAML library, so that no value is ever folded
/// or written as a block scalar: a string that is not one plain, unambiguous line is
/// double-quoted with its line breaks escaped, so it cannot draw a line that reads as a field.
pub fn yaml_lines(value: &Value) -> Vec<YamlLine> {
    Writer::default().write(value)
}

#[derive(Default)]
struct Writer<'h> {
    /// Paths whose values are written as [`HIDDEN`], whatever they hold.
    hidden: &'h [Vec<Step>],
    path: Vec<Step>,
    out: Vec<YamlLine>,
}

impl Writer<'_> {
    fn write(mut self, value: &Value) -> Vec<YamlLine> {
        match value {
            Value::Object(map) if !map.is_empty() => self.map(map, 0),
            Value::Array(items) if !items.is_empty() => self.list(items, 0),
            other => self.push(self.scalar(other)),
        }
        self.out
    }

    fn push(&mut self, text: String) {
        self.out.push(YamlLine {
            path: self.path.clone(),
            text,
        });
    }

    fn scalar(&self, value: &Value) -> String {
        if self.hidden.contains(&self.path) {
            HIDDEN.to_owned()
        } else {
            scalar(value)
        }
    }

    /// A mapping or list to write below its key, unless it is empty or hidden.
    fn block<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        let nonempty = match value {
            Value::Object(map) => !map.is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => false,
        };
        (nonempty && !self.hidden.contains(&self.path)).then_some(value)
    }

    fn map(&mut self, map: &serde_json::Map<String, Value>, indent: usize) {
        let pad = " ".repeat(indent);
        for (key, child) in map {
            self.path.push(Step::Key(key.clone()));
            let head = format!("{pad}{}:", string(key));
            match self.block(child) {
                Some(Value::Object(inner)) => {
                    self.push(head);
                    self.map(inner, indent + 2);
                }
                Some(Value::Array(items)) => {
                    self.push(head);
                    // As `kubectl get -o yaml` writes them: a list at its key's indentation.
                    self.list(items, indent);
                }
                _ => self.push(format!("{head} {}", self.scalar(child))),
            }
            self.path.pop();
        }
    }

    fn list(&mut self, items: &[Value], indent: usize) {
        let pad = " ".repeat(indent);
        for (i, item) in items.iter().enumerate() {
            self.path.push(step_of(item, i));
            let first = self.out.len();
            match self.block(item) {
                Some(Value::Object(map)) => self.map(map, indent + 2),
                Some(Value::Array(inner)) => self.list(inner, indent + 2),
                _ => self.push(format!("{pad}  {}", self.scalar(item))),
            }
            // The item's first line carries the dash where its indentation was.
            if let Some(line) = self.out.get_mut(first) {
                line.text.replace_range(..indent + 2, &format!("{pad}- "));
            }
            self.path.pop();
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A string as a YAML scalar: plain when it is one line of printable ASCII that YAML reads
/// back as that same string, double-quoted otherwise.
fn string(text: &str) -> String {
    if is_plain(text) {
        text.to_owned()
    } else {
        quoted(text)
    }
}

fn is_plain(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    let lower = text.to_ascii_lowercase();
    (first.is_ascii_alphanumeric() || "/._$".contains(first))
        && text.chars().all(|c| c == ' ' || c.is_ascii_graphic())
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.contains('"')
        && !text.contains('\\')
        && !matches!(
            lower.as_str(),
            "true" | "false" | "yes" | "no" | "y" | "n" | "on" | "off" | "null" | ".inf" | ".nan"
        )
        && !looks_numeric(text)
}

/// Digits with the signs, points, exponents and radix marks YAML reads as numbers, dates or
/// times: quoted, so `"1.10"` stays a string to the reader too.
fn looks_numeric(text: &str) -> bool {
    let body = text.trim_start_matches(['+', '-']);
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        return hex.chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    body.trim_start_matches('.')
        .starts_with(|c: char| c.is_ascii_digit())
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || "._+-:eEoOtTzZ".contains(c))
}

/// A YAML double-quoted scalar. Line breaks, tabs, control characters and the invisible or
/// direction-changing characters that could make text read as something else are escaped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_hidden_char(c) => {
                let code = u32::from(c);
                if code > 0xFFFF {
                    out.push_str(&format!("\\U{code:08X}"));
                } else {
                    out.push_str(&format!("\\u{code:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// One line of YAML, and whether the broker set the value it shows.
pub struct Line {
    pub text: String,
    pub stamped: bool,
}

/// The object's lines, with the broker's stamps marked by where they sit (the labels and
/// annotations of the object and of its pod template), never by what a line says.
pub fn marked_lines(value: &Value, kind: &str) -> Vec<Line> {
    yaml_lines(value)
        .into_iter()
        .map(|line| Line {
            stamped: is_stamp(&line.path, kind),
            text: line.text,
        })
        .collect()
}

fn is_stamp(path: &[Step], kind: &str) -> bool {
    let [
        owner @ ..,
        Step::Key(metadata),
        Step::Key(field),
        Step::Key(key),
    ] = path
    else {
        return false;
    };
    let template: Vec<&str> = template_path(kind)
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').collect())
        .unwrap_or_default();
    let owner_is = |keys: &[&str]| {
        owner.len() == keys.len()
            && owner
                .iter()
                .zip(keys)
                .all(|(step, want)| matches!(step, Step::Key(k) if k == want))
    };
    metadata == "metadata"
        && matches!(field.as_str(), "labels" | "annotations")
        && (is_broker_key(key) || key == BREAKGLASS_ANNOTATION)
        && (owner.is_empty() || (!template.is_empty() && owner_is(&template)))
}

/// What a masked value shows instead of itself. Written bare: a string is never written
/// bare when it starts with `(`, so no value of the request can read as a masked one.
pub const HIDDEN: &str = "(hidden)";

/// The lists whose items are containers, in any pod spec.
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// The live object as a page may show it, with its inline data taken out.
pub struct Masked {
    pub value: Value,
    /// Where a value was taken out.
    pub hidden: Vec<Vec<Step>>,
}

impl Masked {
    pub fn yaml(&self) -> String {
        Writer {
            hidden: &self.hidden,
            ..Writer::default()
        }
        .write(&self.value)
        .into_iter()
        .map(|line| line.text + "\n")
        .collect()
    }
}

/// The broker reads the live object with its own rights, which the reader may not have, so
/// its inline data (environment values, commands and arguments, header values, free-form
/// volume options, annotation values) is taken out and shows as [`HIDDEN`], unless the
/// request sets the same value at the same place: then the reader knows it already. A value
/// the request changes shows as hidden against the request's own value ("changed, hidden").
pub fn masked(live: &Value, request: &Value) -> Masked {
    let mut value = live.clone();
    let mut hidden = Vec::new();
    mask(&mut value, &mut Vec::new(), request, &mut hidden);
    Masked { value, hidden }
}

fn mask(value: &mut Value, path: &mut Vec<Step>, request: &Value, hidden: &mut Vec<Vec<Step>>) {
    if is_inline_data(path) {
        if at(request, path) != Some(value) {
            *value = Value::Null;
            hidden.push(path.clone());
        }
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                path.push(Step::Key(key.clone()));
                mask(child, path, request, hidden);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(step_of(item, i));
                mask(item, path, request, hidden);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Whether the value at `path` is data rather than shape: what a container is told (its
/// environment, command, arguments, probe headers), annotation values (free text, and
/// `last-applied-configuration` carries a whole earlier manifest), and free-form volume
/// options. Names, images, ports, resources and labels stay visible: they are what a reader
/// needs to judge the change, and labels are selectors, not secrets.
fn is_inline_data(path: &[Step]) -> bool {
    let key = |i: usize| match path.get(i) {
        Some(Step::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    let n = path.len();
    if n < 2 {
        return false;
    }
    let last = key(n - 1);
    let parent = key(n - 2);
    if n >= 3 && key(n - 3) == Some("metadata") && parent == Some("annotations") {
        return true;
    }
    let in_container = path.windows(2).any(|pair| {
        matches!(&pair[0], Step::Key(k) if CONTAINER_LISTS.contains(&k.as_str()))
            && !matches!(pair[1], Step::Key(_))
    });
    let item_of = |list: &str| n >= 3 && key(n - 3) == Some(list) && parent.is_none();
    if in_container
        && (matches!(last, Some("command" | "args"))
            || (last == Some("value") && (item_of("env") || item_of("httpHeaders"))))
    {
        return true;
    }
    let in_volume = path
        .iter()
        .any(|step| matches!(step, Step::Key(k) if k == "volumes"));
    in_volume && matches!(parent, Some("options" | "volumeAttributes"))
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
    fn times_read_as_chrono_would_write_them() {
        let day = 86_400_000;
        for at in [
            0,
            1_700_000_000_000,
            1_700_000_000_000 + 59 * 60_000 + 59_999,
            // The last day of year 9999, the first of year 0 and of year 10000.
            253_402_214_400_000,
            -62_167_219_200_000,
            253_402_300_800_000,
            -43_200_000,
        ] {
            let t = to_utc(at);
            assert_eq!(when(at), t.format("%Y-%m-%d %H:%M UTC").to_string(), "{at}");
            assert_eq!(
                when_ago(at + 3 * 60_000, at),
                format!("{} (3 min ago)", t.format("%H:%M UTC")),
                "{at}"
            );
            assert_eq!(
                when_ago(at + 2 * day, at),
                format!("{} (2 days ago)", t.format("%Y-%m-%d %H:%M UTC")),
                "{at}"
            );
        }
    }

    #[test]
    fn time_left_reads_naturally() {
        assert_eq!(time_left(0, 119 * 60_000 + 59_000), "1h 59m left");
        assert_eq!(time_left(0, 12 * 60_000), "12m left");
        assert_eq!(time_left(0, 3_600_000), "1h left");
        assert_eq!(time_left(5, 0), "less than a minute left");
    }

    use serde_json::json;

    use crate::domain::stamp::{Stamp, stamped};

    /// A Deployment as the broker would apply it, with `container` as its only container.
    fn stamped_deployment(container: Value) -> Value {
        let object = crate::domain::manifest::Object {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "prod".into(),
            name: "api".into(),
            body: json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api", "namespace": "prod", "labels": {"app": "api"}},
                "spec": {
                    "selector": {"matchLabels": {"app": "api", "breakglass-broker.io/ticket": "x"}},
                    "template": {
                        "metadata": {"labels": {"app": "api"}},
                        "spec": {"containers": [container]}
                    }
                }
            }),
        };
        let approvers = ["bob".to_owned()];
        stamped(
            &object,
            &Stamp {
                request_id: "r1",
                ticket: "INC-1",
                requester: "alice",
                approvers: &approvers,
                expires_at: "2026-01-01T00:00:00Z",
            },
        )
    }

    #[test]
    fn the_rendering_reads_back_as_the_same_object() {
        let value = json!({
            "plain": "us-docker.pkg.dev/acme/api@sha256:abc",
            "words": "the checkout service is down",
            "lines": "one\ntwo\n  image: evil",
            "colon": "a: b", "hash": "a #b", "dash": "- x", "star": "*x", "empty": "",
            "bool": "true", "yes": "yes", "number": "1.10", "octal": "0755", "date": "2026-01-01",
            "time": "2026-01-01T00:00:00Z", "hex": "0x1F", "exp": "1e5", "sexagesimal": "1:20",
            "quote": "say \"hi\" \\ bye", "tab": "a\tb", "bidi": "a\u{202E}b", "sep": "a\u{2028}b",
            "nested": {"list": [1, "two", {"name": "x", "value": "y\nz"}, [], {}, ["a", ["b"]]]},
            "odd key: yes\nimage": "v", "n": null, "t": true, "f": 1.5
        });
        let text = yaml(&value);
        let back: Value = serde_saphyr::from_str(&text).expect("valid YAML");
        assert_eq!(back, value, "{text}");
    }

    #[test]
    fn a_string_that_is_not_one_plain_line_is_quoted_on_its_keys_line() {
        let fake = "fine\n        image: us-docker.pkg.dev/acme/release/api@sha256:1111";
        let body = stamped_deployment(json!({
            "name": "api", "image": "hotfix/api@sha256:2222",
            "env": [{"name": "NOTE", "value": fake}]
        }));
        let lines = yaml_lines(&body);
        let images: Vec<&str> = lines
            .iter()
            .map(|l| l.text.trim_start().trim_start_matches("- "))
            .filter(|t| t.starts_with("image:"))
            .collect();
        assert_eq!(images, vec!["image: hotfix/api@sha256:2222"]);
        assert!(
            lines.iter().any(|l| l.text.trim_start()
                == "value: \"fine\\n        image: us-docker.pkg.dev/acme/release/api@sha256:1111\""),
            "{}",
            yaml(&body)
        );
        assert_eq!(string("a\u{202E}b"), "\"a\\u202Eb\"");
        assert_eq!(string("-x"), "\"-x\"");
        assert_eq!(string("100m"), "100m");
        assert_eq!(string("01a22ef8-de47"), "01a22ef8-de47");
        assert_eq!(string("1.10"), "\"1.10\"");
    }

    #[test]
    fn the_brokers_stamps_are_marked_by_where_they_sit_not_by_what_a_line_says() {
        let body = stamped_deployment(json!({
            "name": "api", "image": "x",
            "args": ["breakglass-broker.io/ticket: INC-1", "image-policy.k8s.io/break-glass"],
            "env": [{"name": "breakglass-broker.io/request-id", "value": "r1"}]
        }));
        let lines = marked_lines(&body, "Deployment");
        let marked: Vec<&str> = lines
            .iter()
            .filter(|l| l.stamped)
            .map(|l| l.text.trim())
            .collect();
        let stamp_lines = [
            "breakglass-broker.io/approvers: bob",
            "breakglass-broker.io/expires-at: \"2026-01-01T00:00:00Z\"",
            "breakglass-broker.io/requester: alice",
            "breakglass-broker.io/ticket: INC-1",
            "breakglass-broker.io/request-id: r1",
            "breakglass-broker.io/ticket: INC-1",
            "image-policy.k8s.io/break-glass: \"true\"",
        ];
        // Once on the object, once on its pod template.
        let expected: Vec<&str> = stamp_lines.iter().chain(&stamp_lines).copied().collect();
        assert_eq!(marked, expected);
        // The user's own lines that merely say a stamp's key are not marked.
        let unmarked: Vec<&str> = lines
            .iter()
            .filter(|l| !l.stamped && l.text.contains("break"))
            .map(|l| l.text.trim())
            .collect();
        assert_eq!(
            unmarked,
            vec![
                "breakglass-broker.io/ticket: x",
                "- \"breakglass-broker.io/ticket: INC-1\"",
                "- image-policy.k8s.io/break-glass",
                "- name: breakglass-broker.io/request-id",
            ]
        );
    }

    #[test]
    fn the_live_objects_inline_data_shows_only_where_the_request_sets_the_same_value() {
        let request = stamped_deployment(json!({
            "name": "api", "image": "hotfix",
            "args": ["--port=80"],
            "env": [
                {"name": "SAME", "value": "shared"},
                {"name": "CHANGED", "value": "new"},
                {"name": "FROM", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]
        }));
        let mut live = stamped_deployment(json!({
            "name": "api", "image": "release",
            "command": ["/bin/api", "--token=s3cret-command"],
            "args": ["--port=80"],
            "env": [
                {"name": "CHANGED", "value": "s3cret-old"},
                {"name": "SAME", "value": "shared"},
                {"name": "ONLY_LIVE", "value": "s3cret-live"},
                {"name": "FROM", "value": "s3cret-literal"}
            ],
            "livenessProbe": {"httpGet": {"path": "/", "port": 80,
                "httpHeaders": [{"name": "Authorization", "value": "s3cret-header"}]}}
        }));
        live["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": "{\"env\":\"s3cret-applied\"}",
            "breakglass-broker.io/requester": "alice"
        });
        live["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "v", "flexVolume": {"driver": "d", "options": {"pw": "s3cret-vol"}}}]);

        let shown = masked(&live, &request);
        let text = shown.yaml();

        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            !serde_json::to_string(&shown.value)
                .expect("json")
                .contains("s3cret"),
            "taken out, not only left unwritten"
        );
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let hidden = |path: &[&str]| -> bool {
            let mut steps = vec![
                Step::Key("spec".into()),
                Step::Key("template".into()),
                Step::Key("spec".into()),
                Step::Key("containers".into()),
                Step::Named("api".into()),
            ];
            for part in path {
                steps.push(match part.strip_prefix('=') {
                    Some(name) => Step::Named(name.to_owned()),
                    None => Step::Key((*part).to_owned()),
                });
            }
            shown.hidden.contains(&steps)
        };
        assert!(!hidden(&["env", "=SAME", "value"]), "set the same: shown");
        assert!(lines.contains(&"value: shared"), "{text}");
        assert!(hidden(&["env", "=CHANGED", "value"]), "changed: hidden");
        assert!(hidden(&["env", "=ONLY_LIVE", "value"]));
        assert!(
            hidden(&["env", "=FROM", "value"]),
            "a reference does not set the value"
        );
        assert!(
            !hidden(&["args"]) && lines.contains(&"- \"--port=80\""),
            "{text}"
        );
        assert!(
            hidden(&["command"]) && lines.contains(&"command: (hidden)"),
            "{text}"
        );
        assert!(lines.contains(&"image: release"), "images stay visible");
        assert!(
            lines.contains(&"breakglass-broker.io/requester: alice"),
            "the request sets the same annotation: {text}"
        );
        assert!(
            lines.contains(&"kubectl.kubernetes.io/last-applied-configuration: (hidden)"),
            "{text}"
        );
        assert!(lines.contains(&"app: api"), "labels stay visible");
        // The request's side is never masked.
        let same = masked(&request, &request);
        assert!(same.hidden.is_empty() && same.value == request);
        // The diff tells that CHANGED changes, not what it was.
        let changes: Vec<String> = diff(&text, &yaml(&request))
            .into_iter()
            .filter(|l| l.sign != " ")
            .map(|l| format!("{}{}", l.sign, l.text.trim()))
            .collect();
        assert!(changes.contains(&"+value: new".to_owned()), "{changes:?}");
        assert!(!changes.iter().any(|l| l.contains("shared")), "{changes:?}");
    }

    #[test]
    fn a_request_value_that_spells_the_mask_does_not_read_as_one() {
        let request = stamped_deployment(json!({
            "name": "api", "image": "x", "env": [{"name": "TOKEN", "value": HIDDEN}]
        }));
        let live = stamped_deployment(json!({
            "name": "api", "image": "x", "env": [{"name": "TOKEN", "value": "s3cret"}]
        }));

        let before = masked(&live, &request).yaml();
        let changes: Vec<String> = diff(&before, &yaml(&request))
            .into_iter()
            .filter(|l| l.sign != " ")
            .map(|l| format!("{}{}", l.sign, l.text.trim()))
            .collect();

        assert_eq!(changes, vec!["-value: (hidden)", "+value: \"(hidden)\""]);
        assert!(!changes.iter().any(|l| l.contains("shared")), "{changes:?}");
    }

    #[test]
    fn diff_marks_changed_lines() {
        let lines = diff("a\nb\n", "a\nc\n");
        let signs: Vec<&str> = lines.iter().map(|l| l.sign).collect();
        assert_eq!(signs, vec![" ", "-", "+"]);
    }
}
