//! Turning submitted YAML or JSON into the exact objects that would be applied.

use serde_json::{Map, Value};

use super::finding::{Finding, kind_of, not_a_string, quoted, shown};

/// Bounds on what a manifest may be before any of it is looked at.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_objects: usize,
    pub max_depth: usize,
    pub max_aliases: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024,
            max_objects: 20,
            max_depth: 32,
            max_aliases: 64,
        }
    }
}

/// Why a manifest could not be read at all. Each says what to change; the web edge answers
/// `TooLarge` with 413 (like a body over the request limit) and the rest with 422.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// More bytes than the target accepts.
    TooLarge { bytes: usize, limit: usize },
    /// More objects (documents) than the target accepts. When the parser stopped early,
    /// `count` is where it stopped and `more` is true.
    TooManyObjects {
        count: usize,
        limit: usize,
        more: bool,
    },
    /// Nothing but empty documents and comments.
    Empty,
    /// Not YAML or JSON we are willing to read: syntax, duplicate keys, depth, aliases, tags.
    Invalid {
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },
}

impl ParseError {
    /// The line the problem is on, when there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            ParseError::Invalid { line, .. } => *line,
            _ => None,
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::TooLarge { bytes, limit } => {
                write!(f, "is {bytes} bytes; the limit is {limit} bytes")
            }
            ParseError::TooManyObjects { count, limit, more } => {
                let over = if *more { "more than " } else { "" };
                write!(f, "has {over}{count} objects; the limit is {limit}")
            }
            ParseError::Empty => f.write_str("contains no objects"),
            ParseError::Invalid {
                message,
                line: Some(line),
                column: Some(column),
            } => write!(f, "line {line}, column {column}: {message}"),
            ParseError::Invalid {
                message,
                line: Some(line),
                column: None,
            } => write!(f, "line {line}: {message}"),
            ParseError::Invalid { message, .. } => f.write_str(message),
        }
    }
}

/// One object as it will be applied, before the broker stamps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The whole normalized object, `apiVersion` to `spec`.
    pub body: Value,
}

impl Object {
    /// How people name an object in messages: `Deployment/api`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Alias expansions allowed per anchor: enough for the shared-snippet style some people write
/// by hand, far too few for an alias bomb.
const MAX_EXPANSIONS_PER_ANCHOR: usize = 16;
/// Events replayed through aliases in one manifest, across all anchors.
const MAX_REPLAYED_EVENTS: usize = 10_000;
/// Nodes (mappings, lists, scalars) in one manifest; 20 real workloads use a few thousand.
const MAX_NODES: usize = 100_000;

/// Reads one or more YAML (or JSON) documents, refusing oversized, deep, alias-heavy or
/// ambiguous (duplicate-key, custom-tag) input before it can cost much.
pub fn parse(text: &str, limits: &Limits) -> Result<Vec<Value>, ParseError> {
    if text.len() > limits.max_bytes {
        return Err(ParseError::TooLarge {
            bytes: text.len(),
            limit: limits.max_bytes,
        });
    }
    // Empty documents (a stray `---`) are not objects, but they still cost something, so the
    // parser stops a little past the object limit rather than at it.
    let max_documents = limits.max_objects.saturating_add(8);
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits.max_depth;
    budget.flow_nesting_limit = limits.max_depth;
    budget.max_aliases = limits.max_aliases;
    budget.max_anchors = limits.max_aliases;
    budget.max_documents = max_documents;
    budget.max_nodes = MAX_NODES;
    budget.max_events = 2 * MAX_NODES;
    let mut aliases = serde_saphyr::options::AliasLimits::default();
    aliases.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    aliases.max_alias_expansions_per_anchor = MAX_EXPANSIONS_PER_ANCHOR;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = aliases;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // `0755` means what it means to kubectl (YAML 1.1, octal), not a float.
    options.legacy_octal_numbers = true;
    // A tag the broker does not understand would be dropped silently, so the approver would
    // see something other than what was written.
    options.reject_unsupported_tags = true;
    options.with_snippet = false;
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| parse_error(&e, limits, max_documents))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        return Err(ParseError::Empty);
    }
    if docs.len() > limits.max_objects {
        return Err(ParseError::TooManyObjects {
            count: docs.len(),
            limit: limits.max_objects,
            more: false,
        });
    }
    Ok(docs)
}

/// Says in a person's words what the parser refused, with the line and column it stopped at.
fn parse_error(error: &serde_saphyr::Error, limits: &Limits, max_documents: usize) -> ParseError {
    use serde_saphyr::budget::BudgetBreach;
    use serde_saphyr::{Error, MessageFormatter, UserMessageFormatter};

    let inner = match error {
        Error::AliasError { error, .. } => error.as_ref(),
        other => other,
    };
    let too_deep = format!(
        "is nested more than {} levels deep; flatten it",
        limits.max_depth
    );
    let alias_bomb = format!(
        "uses YAML aliases that expand too far (at most {} aliases, each used at most {MAX_EXPANSIONS_PER_ANCHOR} times); write the objects out in full",
        limits.max_aliases
    );
    let message = match inner {
        Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => too_deep,
            BudgetBreach::Documents { .. } => {
                return ParseError::TooManyObjects {
                    count: max_documents,
                    limit: limits.max_objects,
                    more: true,
                };
            }
            BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => alias_bomb,
            _ => format!("is too complex (more than {MAX_NODES} values)"),
        },
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. }
        | Error::AliasReplayCounterOverflow { .. } => alias_bomb,
        Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("key {key:?} appears twice in the same mapping")
        }
        Error::DuplicateMappingKey { key: None, .. } => {
            "a key appears twice in the same mapping".to_owned()
        }
        Error::UnknownAnchor { .. } => {
            "an alias (*name) refers to an anchor (&name) that is not defined before it".to_owned()
        }
        Error::NullIntoString { .. } => "a mapping key is null; keys must be strings".to_owned(),
        other => {
            let text = UserMessageFormatter.format_message(other);
            if text.contains("recursion limit exceeded") {
                too_deep
            } else if text.contains("expected string scalar") {
                "a mapping key is itself a list or mapping; keys must be strings".to_owned()
            } else {
                first_line(&text)
            }
        }
    };
    let location = error.location();
    ParseError::Invalid {
        message,
        line: location.map(|l| l.line()),
        column: location.map(|l| l.column()),
    }
}

/// The first line of a message that says something, with control characters escaped so that
/// nothing a manifest (or a configuration file) contains can forge lines in a log or a page.
pub fn first_line(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if line.is_empty() {
        "could not be parsed".to_owned()
    } else {
        line.chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect()
    }
}

/// Server-populated fields that say nothing about what is asked for; dropping them makes a
/// manifest copied from `kubectl get -o yaml` mean the same as one written by hand.
pub const SERVER_METADATA: [&str; 7] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
];
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Normalizes documents into objects in `namespace`: the canonical form the digest covers.
pub fn normalize(docs: Vec<Value>, namespace: &str) -> Result<Vec<Object>, Vec<Finding>> {
    let mut objects = Vec::new();
    let mut findings = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        match normalize_one(doc, index, namespace) {
            Ok(obj) => {
                if objects
                    .iter()
                    .any(|o: &Object| o.kind == obj.kind && o.name == obj.name)
                {
                    findings.push(Finding::new(
                        obj.label(),
                        "metadata.name",
                        "appears twice in the manifest",
                    ));
                } else {
                    objects.push(obj);
                }
            }
            Err(finding) => findings.push(finding),
        }
    }
    if findings.is_empty() {
        Ok(objects)
    } else {
        Err(findings)
    }
}

fn normalize_one(doc: Value, index: usize, namespace: &str) -> Result<Object, Finding> {
    let at = format!("document {}", index + 1);
    let Value::Object(mut map) = doc else {
        return Err(Finding::new(
            at,
            "",
            format!(
                "is {}, not a mapping of fields (an object); a list of objects goes in separate documents split by ---",
                kind_of(&doc)
            ),
        ));
    };
    let api_version = identifier(&map, "apiVersion", &at, is_api_version)?;
    let kind = identifier(&map, "kind", &at, is_kind)?;
    let unnamed = format!("{kind} in {at}");
    map.remove("status");
    let metadata = match map.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => {
            return Err(Finding::new(
                unnamed,
                "metadata",
                "is missing or not a mapping; it must at least give the name",
            ));
        }
    };
    let name = match metadata.get("name") {
        Some(Value::String(n)) if is_dns_subdomain(n) => n.clone(),
        Some(Value::String(n)) => {
            return Err(Finding::new(
                unnamed,
                "metadata.name",
                format!(
                    "{} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', at most 253)",
                    quoted(n)
                ),
            ));
        }
        None | Some(Value::Null) if metadata.contains_key("generateName") => {
            return Err(Finding::new(
                unnamed,
                "metadata.generateName",
                "is not supported: give metadata.name, so that the broker knows what it created and can remove it",
            ));
        }
        None | Some(Value::Null) => {
            return Err(Finding::new(unnamed, "metadata.name", "is missing"));
        }
        Some(other) => {
            return Err(Finding::new(unnamed, "metadata.name", not_a_string(other)));
        }
    };
    let label = format!("{kind}/{name}");
    match metadata.get("namespace") {
        // Cloud Run services have no namespace, and none is written in.
        None | Some(Value::Null) if namespace.is_empty() => {}
        None | Some(Value::Null) => {
            metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
        }
        Some(Value::String(ns)) if ns == namespace => {}
        Some(other) => {
            return Err(Finding::new(
                label,
                "metadata.namespace",
                format!(
                    "is {}, but the request is for namespace {}",
                    shown(other),
                    quoted(namespace)
                ),
            ));
        }
    }
    for key in SERVER_METADATA {
        metadata.remove(key);
    }
    if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
    Ok(Object {
        api_version,
        kind,
        namespace: namespace.to_owned(),
        name,
        body: Value::Object(map),
    })
}

/// `apiVersion` or `kind`: present, a string, and shaped like one, so that messages that name
/// the object stay short and readable.
fn identifier(
    map: &Map<String, Value>,
    key: &str,
    at: &str,
    valid: fn(&str) -> bool,
) -> Result<String, Finding> {
    match map.get(key) {
        Some(Value::String(s)) if valid(s) => Ok(s.clone()),
        Some(Value::String(s)) if !s.is_empty() => Err(Finding::new(
            at,
            key,
            format!("{} is not a valid {key}", quoted(s)),
        )),
        None | Some(Value::Null) => Err(Finding::new(at, key, "is missing")),
        Some(Value::String(_)) => Err(Finding::new(at, key, "is empty")),
        Some(other) => Err(Finding::new(at, key, not_a_string(other))),
    }
}

/// `Deployment`: a letter, then letters and digits.
fn is_kind(kind: &str) -> bool {
    kind.len() <= 63
        && kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && kind.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `v1` or `apps/v1`: an optional group (a DNS subdomain) and a version.
fn is_api_version(api_version: &str) -> bool {
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (Some(group), version),
        None => (None, api_version),
    };
    group.is_none_or(is_dns_subdomain)
        && !version.is_empty()
        && version.len() <= 63
        && version
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// RFC 1123 subdomain, as Kubernetes requires of most object names.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Names one object in a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// What a write left: the object's version, and its UID (which a delete and a create under the
/// same name change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub version: String,
    pub uid: Option<String>,
}

impl Written {
    /// The version and UID of an object as read back.
    pub fn of(object: &serde_json::Value) -> Written {
        let text = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        Written {
            version: text("/metadata/resourceVersion").unwrap_or_default(),
            uid: text("/metadata/uid"),
        }
    }
}

impl From<&Object> for ObjectRef {
    fn from(object: &Object) -> Self {
        ObjectRef {
            api_version: object.api_version.clone(),
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{} in {}", self.kind, self.name, self.namespace)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_yields_each_object_with_the_request_namespace() {
        let docs = parse(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: prod}\n",
            &Limits::default(),
        )
        .expect("parses");
        let objects = normalize(docs, "prod").expect("normalizes");
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].body["metadata"]["namespace"], "prod");
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_line() {
        let err = parse(
            "apiVersion: v1\nkind: Pod\nkind: Service\n",
            &Limits::default(),
        )
        .expect_err("refused");
        assert_eq!(err.line(), Some(3), "{err}");
        assert!(err.to_string().contains("\"kind\" appears twice"), "{err}");
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut doc = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*l{}", i - 1); 9].join(", ");
            doc.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        assert!(parse(&doc, &Limits::default()).is_err());
        // Refused in milliseconds; the bound is loose for a debug build on a busy machine and
        // still far below the minutes (and gigabytes) a full expansion of 9^10 items takes.
        let bound = if cfg!(debug_assertions) { 30 } else { 2 };
        assert!(started.elapsed() < std::time::Duration::from_secs(bound));
    }

    #[test]
    fn server_fields_and_status_are_dropped() {
        let docs = parse(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  uid: x\n  resourceVersion: '5'\nstatus: {phase: Running}\n",
            &Limits::default(),
        )
        .expect("parses");
        let objects = normalize(docs, "default").expect("normalizes");
        assert_eq!(objects[0].body.get("status"), None);
        assert_eq!(objects[0].body["metadata"].get("uid"), None);
    }

    fn small() -> Limits {
        Limits {
            max_bytes: 200,
            max_objects: 2,
            ..Limits::default()
        }
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n";

    /// The findings of normalizing one document, as text.
    fn refusal(doc: &str) -> Vec<String> {
        let docs = parse(doc, &Limits::default()).expect("parses");
        normalize(docs, "prod")
            .expect_err("refused")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_manifest_is_read_up_to_its_byte_and_object_limits_and_refused_past_them() {
        let exactly = format!("{POD}#{}\n", "x".repeat(200 - POD.len() - 2));
        assert_eq!(exactly.len(), 200);
        assert!(parse(&exactly, &small()).is_ok());
        let over = format!("{exactly} ");
        let err = parse(&over, &small()).expect_err("too large");
        assert_eq!(
            err,
            ParseError::TooLarge {
                bytes: 201,
                limit: 200
            }
        );
        assert_eq!(err.to_string(), "is 201 bytes; the limit is 200 bytes");
        assert_eq!(err.line(), None);

        let two = "a: 1\n---\nb: 2\n";
        assert_eq!(parse(two, &small()).expect("two objects").len(), 2);
        let three = parse("a: 1\n---\nb: 2\n---\nc: 3\n", &small()).expect_err("three");
        assert_eq!(three.to_string(), "has 3 objects; the limit is 2");
        let two_objects = Limits {
            max_objects: 2,
            ..Limits::default()
        };
        let many = parse(&"a: 1\n---\n".repeat(30), &two_objects).expect_err("many");
        assert_eq!(many.to_string(), "has more than 10 objects; the limit is 2");
        assert_eq!(parse("# nothing\n---\n", &small()), Err(ParseError::Empty));
        assert_eq!(ParseError::Empty.to_string(), "contains no objects");
    }

    #[test]
    fn deep_nesting_and_alias_bombs_are_refused_by_name() {
        let too_deep = "is nested more than 32 levels deep; flatten it";
        let flow = format!("a: {}1{}\n", "[".repeat(40), "]".repeat(40));
        let mut block = String::new();
        for i in 0..40 {
            block.push_str(&format!("{}k{i}:\n", "  ".repeat(i)));
        }
        block.push_str(&format!("{}v: 1\n", "  ".repeat(40)));
        for deep in [flow, block] {
            let err = parse(&deep, &Limits::default()).expect_err("too deep");
            assert!(err.to_string().contains(too_deep), "{err}");
        }

        let bomb = "uses YAML aliases that expand too far";
        // One anchor used more than 16 times; 72 aliases over six anchors; 70 anchors.
        let mut one_anchor = String::from("base: &b x\nlist:\n");
        one_anchor.push_str(&"- *b\n".repeat(100));
        let mut many_aliases = String::new();
        for a in 0..6 {
            many_aliases.push_str(&format!("a{a}: &a{a} x\n"));
        }
        many_aliases.push_str("l:\n");
        for a in 0..6 {
            many_aliases.push_str(&format!("- *a{a}\n").repeat(12));
        }
        let mut many_anchors = String::from("l:\n");
        for a in 0..70 {
            many_anchors.push_str(&format!("- &a{a} x\n"));
        }
        for aliases in [one_anchor, many_aliases, many_anchors] {
            let err = parse(&aliases, &Limits::default()).expect_err("alias bomb");
            assert!(err.to_string().contains(bomb), "{err}");
        }
    }

    #[test]
    fn a_manifest_of_many_small_values_within_the_node_budget_is_read() {
        // 60,000 empty mappings: about 60,000 values but twice as many parser events.
        let doc = format!("[{}]", vec!["{}"; 60_000].join(","));
        assert!(parse(&doc, &Limits::default()).is_ok());
    }

    #[test]
    fn a_parser_message_is_cut_to_its_first_line_with_control_characters_escaped() {
        assert_eq!(
            first_line("bad \u{1b}[31mthing\nsecond line"),
            "bad \\u{1b}[31mthing"
        );
        assert_eq!(
            first_line("  \nsecond"),
            "second",
            "the first line that says something"
        );
        assert_eq!(first_line("  \n \n"), "could not be parsed");
        let err = ParseError::Invalid {
            message: "m".into(),
            line: Some(4),
            column: None,
        };
        assert_eq!(err.to_string(), "line 4: m");
        assert_eq!(err.line(), Some(4));
        let err = ParseError::Invalid {
            message: "m".into(),
            line: Some(4),
            column: Some(2),
        };
        assert_eq!(err.to_string(), "line 4, column 2: m");
        let err = ParseError::Invalid {
            message: "m".into(),
            line: None,
            column: None,
        };
        assert_eq!(err.to_string(), "m");
    }

    #[test]
    fn an_object_keeps_its_version_kind_and_name_and_is_named_by_kind_and_name() {
        let docs = parse(POD, &Limits::default()).expect("parses");
        let object = &normalize(docs, "prod").expect("normalizes")[0];
        assert_eq!(
            (
                object.api_version.as_str(),
                object.kind.as_str(),
                object.name.as_str(),
                object.namespace.as_str()
            ),
            ("v1", "Pod", "a", "prod")
        );
        assert_eq!(object.label(), "Pod/a");
    }

    #[test]
    fn the_same_kind_and_name_twice_is_refused_but_the_same_name_in_two_kinds_is_not() {
        let docs = parse(
            &format!("{POD}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: a}}\n"),
            &Limits::default(),
        )
        .expect("parses");
        assert_eq!(normalize(docs, "prod").expect("normalizes").len(), 2);
        let docs = parse(&format!("{POD}---\n{POD}"), &Limits::default()).expect("parses");
        let findings: Vec<String> = normalize(docs, "prod")
            .expect_err("refused")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            findings,
            vec!["Pod/a: metadata.name appears twice in the manifest"]
        );
    }

    #[test]
    fn names_must_be_given_valid_and_not_generated() {
        assert_eq!(
            refusal("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\n"),
            vec![
                "Pod in document 1: metadata.name \"Bad_Name\" is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', at most 253)"
            ]
        );
        assert_eq!(
            refusal("apiVersion: v1\nkind: Pod\nmetadata: {generateName: a-}\n"),
            vec![
                "Pod in document 1: metadata.generateName is not supported: give metadata.name, so that the broker knows what it created and can remove it"
            ]
        );
        assert_eq!(
            refusal("apiVersion: v1\nkind: Pod\nmetadata: {labels: {a: b}}\n"),
            vec!["Pod in document 1: metadata.name is missing"]
        );
        assert_eq!(
            refusal("apiVersion: v1\nkind: Pod\nmetadata: {name: 5}\n"),
            vec!["Pod in document 1: metadata.name is a number; it must be a string"]
        );
        assert_eq!(
            refusal("apiVersion: v1\nkind: Pod\nmetadata: [a]\n"),
            vec![
                "Pod in document 1: metadata is missing or not a mapping; it must at least give the name"
            ]
        );
    }

    #[test]
    fn api_version_and_kind_must_be_present_strings_of_their_shape() {
        assert_eq!(
            refusal("kind: Pod\nmetadata: {name: a}\n"),
            vec!["document 1: apiVersion is missing"]
        );
        assert_eq!(
            refusal("apiVersion: ''\nkind: Pod\nmetadata: {name: a}\n"),
            vec!["document 1: apiVersion is empty"]
        );
        assert_eq!(
            refusal("apiVersion: v1\nkind: 'Pod x'\nmetadata: {name: a}\n"),
            vec!["document 1: kind \"Pod x\" is not a valid kind"]
        );
        assert_eq!(
            refusal("apiVersion: v1\nkind: [Pod]\nmetadata: {name: a}\n"),
            vec!["document 1: kind is a list; it must be a string"]
        );
        assert_eq!(
            refusal("- apiVersion: v1\n"),
            vec![
                "document 1: is a list, not a mapping of fields (an object); a list of objects goes in separate documents split by ---"
            ]
        );
    }

    #[test]
    fn kinds_versions_and_names_are_told_apart_by_shape() {
        for kind in ["Deployment", "A", "CronJob2", &"K".repeat(63)] {
            assert!(is_kind(kind), "{kind}");
        }
        for kind in ["", "9Pod", "Pod-x", "Pod.x", &"K".repeat(64)] {
            assert!(!is_kind(kind), "{kind}");
        }
        for version in [
            "v1",
            "apps/v1",
            "batch/v1beta1",
            "a.b/v2",
            &format!("g/{}", "v".repeat(63)),
        ] {
            assert!(is_api_version(version), "{version}");
        }
        for version in [
            "",
            "apps/",
            "Apps/v1",
            "apps/V1",
            "apps/v1-x",
            "/v1",
            &format!("g/{}", "v".repeat(64)),
        ] {
            assert!(!is_api_version(version), "{version}");
        }
        let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert_eq!(longest.len(), 253);
        for name in ["a", "a.b-c.d1", "0-x", longest.as_str()] {
            assert!(is_dns_subdomain(name), "{name}");
        }
        for name in [
            "",
            &format!("{longest}c"),
            "a..b",
            ".a",
            "-a",
            "a-",
            "a.-b",
            "a.b-",
            "A",
            "a_b",
        ] {
            assert!(!is_dns_subdomain(name), "{name}");
        }
    }

    #[test]
    fn another_namespace_is_refused() {
        let docs = parse(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: kube-system}\n",
            &Limits::default(),
        )
        .expect("parses");
        let findings = normalize(docs, "prod").expect_err("refused");
        assert!(
            findings[0].to_string().contains("kube-system"),
            "{}",
            findings[0]
        );
    }
}
