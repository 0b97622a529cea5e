//! Turning submitted YAML or JSON into the exact objects that would be applied.

use serde_json::{Map, Value};

use super::policy::Finding;

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

/// A manifest that could not be read at all; `line` points at the problem when it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub line: Option<u64>,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "manifest line {line}: {}", self.message),
            None => write!(f, "manifest: {}", self.message),
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

/// Reads one or more YAML (or JSON) documents, refusing oversized, deep, alias-heavy or
/// ambiguous (duplicate-key) input before it can cost much.
pub fn parse(text: &str, limits: &Limits) -> Result<Vec<Value>, ParseError> {
    if text.len() > limits.max_bytes {
        return Err(ParseError {
            message: format!(
                "is {} bytes; the limit is {} bytes",
                text.len(),
                limits.max_bytes
            ),
            line: None,
        });
    }
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_aliases = limits.max_aliases;
    budget.max_anchors = limits.max_aliases;
    budget.max_documents = limits.max_objects + 8;
    budget.max_nodes = 100_000;
    budget.max_events = 200_000;
    let mut aliases = serde_saphyr::options::AliasLimits::default();
    aliases.max_total_replayed_events = 10_000;
    aliases.max_alias_expansions_per_anchor = 16;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = aliases;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.with_snippet = false;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| ParseError {
            line: e.location().map(|l| l.line()),
            message: first_line(&e.to_string()),
        })?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        return Err(ParseError {
            message: "contains no objects".into(),
            line: None,
        });
    }
    if docs.len() > limits.max_objects {
        return Err(ParseError {
            message: format!(
                "has {} objects; the limit is {}",
                docs.len(),
                limits.max_objects
            ),
            line: None,
        });
    }
    Ok(docs)
}

fn first_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or("could not be parsed")
        .trim()
        .to_owned()
}

/// Server-populated fields that say nothing about what is asked for; dropping them makes a
/// manifest copied from `kubectl get -o yaml` mean the same as one written by hand.
const SERVER_METADATA: [&str; 7] = [
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
            "is not a mapping of fields (an object)",
        ));
    };
    let api_version = string_field(&map, "apiVersion")
        .ok_or_else(|| Finding::new(&at, "apiVersion", "is missing or not a string"))?;
    let kind = string_field(&map, "kind")
        .ok_or_else(|| Finding::new(&at, "kind", "is missing or not a string"))?;
    map.remove("status");
    let metadata = match map.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => {
            return Err(Finding::new(
                format!("{kind} in {at}"),
                "metadata",
                "is missing",
            ));
        }
    };
    let name = match metadata.get("name") {
        Some(Value::String(n)) if is_dns_subdomain(n) => n.clone(),
        Some(Value::String(n)) => {
            return Err(Finding::new(
                format!("{kind} in {at}"),
                "metadata.name",
                format!(
                    "{n:?} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', at most 253)"
                ),
            ));
        }
        _ => {
            return Err(Finding::new(
                format!("{kind} in {at}"),
                "metadata.name",
                "is missing (generateName is not supported: the broker must know what it created)",
            ));
        }
    };
    let label = format!("{kind}/{name}");
    match metadata.get("namespace") {
        None => {
            metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
        }
        Some(Value::String(ns)) if ns == namespace => {}
        Some(other) => {
            return Err(Finding::new(
                label,
                "metadata.namespace",
                format!("is {other}, but the request is for namespace {namespace:?}"),
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

fn string_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
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
        assert_eq!(err.line, Some(3), "{err}");
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
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
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
