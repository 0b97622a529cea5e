//! The digest an approval names: SHA-256 over a canonical form of everything that will be done.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::manifest::Object;

/// What a digest covers. Change any of it and the digest changes; format the manifest
/// differently and it does not.
pub struct Subject<'a> {
    pub target: &'a str,
    pub namespace: &'a str,
    pub objects: &'a [Object],
    pub duration_seconds: u64,
    pub ticket: &'a str,
}

pub fn digest(subject: &Subject<'_>) -> String {
    let content = serde_json::json!({
        "target": subject.target,
        "namespace": subject.namespace,
        "objects": subject.objects.iter().map(|o| &o.body).collect::<Vec<_>>(),
        "duration_seconds": subject.duration_seconds,
        "ticket": subject.ticket,
    });
    format!("sha256:{}", sha256_hex(canonical_json(&content).as_bytes()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// JSON with object keys sorted and no insignificant whitespace, written out by hand so that
/// the form cannot drift with a serializer feature flag somewhere in the dependency tree.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest::{Limits, normalize, parse};

    fn digest_of(text: &str, duration_seconds: u64, ticket: &str) -> String {
        let objects = normalize(parse(text, &Limits::default()).expect("parses"), "prod")
            .expect("normalizes");
        digest(&Subject {
            target: "t",
            namespace: "prod",
            objects: &objects,
            duration_seconds,
            ticket,
        })
    }

    const YAML: &str = "# hotfix\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - name: api\n        image: \"img@sha256:00\"\n";
    const JSON: &str = r#"{"kind":"Deployment","spec":{"template":{"spec":{"containers":[{"image":"img@sha256:00","name":"api"}]}},"replicas":2},"metadata":{"namespace":"prod","name":"api"},"apiVersion":"apps/v1"}"#;

    #[test]
    fn formatting_does_not_change_the_digest() {
        assert_eq!(digest_of(YAML, 60, "INC-1"), digest_of(JSON, 60, "INC-1"));
    }

    #[test]
    fn anything_that_will_be_applied_changes_the_digest() {
        let base = digest_of(YAML, 60, "INC-1");
        assert_ne!(
            base,
            digest_of(&YAML.replace("replicas: 2", "replicas: 3"), 60, "INC-1")
        );
        assert_ne!(base, digest_of(YAML, 120, "INC-1"));
        assert_ne!(base, digest_of(YAML, 60, "INC-2"));
    }

    #[test]
    fn canonical_json_keeps_array_order_with_a_comma_between_items() {
        let v: Value =
            serde_json::from_str(r#"[3, "b", [1, 2], {"k": [true, null]}]"#).expect("json");
        assert_eq!(canonical_json(&v), r#"[3,"b",[1,2],{"k":[true,null]}]"#);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v: Value =
            serde_json::from_str(r#"{"b":{"d":1,"c":[{"f":1,"e":2}]},"a":"x"}"#).expect("json");
        assert_eq!(
            canonical_json(&v),
            r#"{"a":"x","b":{"c":[{"e":2,"f":1}],"d":1}}"#
        );
    }
}
