//! Properties of the parser, the normalizer, the digest and the policy, over generated input:
//! nothing panics, formatting never changes the digest, any applied change does, and every
//! hostile setting is refused at its path.
//!
//! Case counts are bounded so that the whole module runs in seconds in a debug build;
//! `PROPTEST_CASES` raises (or lowers) every one of them for a longer run.

use std::time::Duration;

use breakglass_broker::domain::digest::{Subject, digest};
use breakglass_broker::domain::manifest::{Limits, Object, normalize, parse};
use breakglass_broker::domain::policy::{Finding, Policy};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value, json};

use crate::policy_env::strict_target;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 512;
/// The cheap properties (one parse per case) get more.
const FUZZ_CASES: u32 = 2048;

/// How long reading and checking a few hundred characters may take. It normally takes
/// microseconds; the bound is there to catch a parser that goes exponential (an alias bomb
/// or runaway nesting takes minutes), so in a debug build on a busy 2-core machine, beside
/// other tests, it is generous.
const PARSE_LIMIT: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(20)
} else {
    Duration::from_secs(2)
};

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // A failure prints its minimal input; a regressions file in the tree would only
        // collect noise from other people's runs.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// dev-cluster's policy: any image from us-docker.pkg.dev/ by digest, tokens allowed.
fn dev_policy() -> Policy {
    let mut target = strict_target();
    target.name = "dev-cluster".into();
    target.images.registries = vec!["us-docker.pkg.dev/".into()];
    target.pods.allow_automount_token = true;
    target.pods.service_accounts = vec!["default".into()];
    target.policy().expect("the test policy is valid")
}

fn objects_of(text: &str) -> Result<Vec<Object>, String> {
    let docs = parse(text, &Limits::default()).map_err(|e| e.to_string())?;
    normalize(docs, "prod").map_err(|f| format!("{f:?}"))
}

fn digest_of(objects: &[Object]) -> String {
    digest(&Subject {
        target: "dev-cluster",
        namespace: "prod",
        objects,
        duration_seconds: 3600,
        ticket: "INC-1",
    })
}

// ---------------------------------------------------------------------------------------
// Generated workloads.

/// Strings a manifest may hold, weighted towards the ones YAML reads as something else.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 ._:/@=-]{0,24}",
        2 => any::<String>().prop_map(|s| s.chars().take(24).collect()),
        3 => prop::sample::select(vec![
            "", "yes", "no", "on", "off", "y", "N", "true", "False", "null", "~", "NULL",
            "123", "-7", "0755", "0x1F", "1e3", ".inf", ".nan", "1_000", "2024-01-01",
            "a: b", "- x", "# not a comment", "key:", "'single'", "\"double\"", "{a: 1}",
            "[1, 2]", "&anchor", "*alias", "!tag", "%percent", "@at", "`tick`", "|", ">",
            "multi\nline", "trailing newline\n", "tab\there", "  padded  ", "ünïcødé ✓",
            "\u{feff}bom", "nul\u{0}byte", "del\u{7f}", "c1\u{85}\u{9f}", "line\u{2028}sep",
        ])
        .prop_map(str::to_owned),
    ]
}

fn dns_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,14}[a-z0-9]"
}

fn label_key() -> impl Strategy<Value = String> {
    "([a-z]{1,6}\\.[a-z]{2,4}/)?[a-z][a-z0-9_.-]{0,10}[a-z0-9]"
}

fn string_map(values: BoxedStrategy<String>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(label_key(), values, 0..4)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

fn image() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9]{0,8}(/[a-z][a-z0-9-]{0,8}[a-z0-9])?",
        "[0-9a-f]{64}",
    )
        .prop_map(|(repo, hex)| format!("us-docker.pkg.dev/acme/{repo}@sha256:{hex}"))
}

fn container() -> impl Strategy<Value = Value> {
    (
        dns_name(),
        image(),
        prop::collection::vec(text(), 0..4),
        prop::collection::vec(("[A-Z_][A-Z0-9_]{0,10}", text()), 0..4),
        prop::option::of(1u32..65_536),
        any::<bool>(),
    )
        .prop_map(|(name, image, args, env, port, read_only)| {
            let mut c = json!({
                "name": name,
                "image": image,
                "args": args,
                "env": env.into_iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                "securityContext": {"readOnlyRootFilesystem": read_only, "runAsNonRoot": true},
            });
            if let Some(port) = port {
                c["ports"] = json!([{"containerPort": port, "protocol": "TCP"}]);
            }
            c
        })
}

/// A Deployment the dev policy accepts, with plenty of room for formatting to go wrong.
fn workload() -> impl Strategy<Value = Value> {
    (
        dns_name(),
        string_map(text().boxed()),
        string_map(text().boxed()),
        0u32..10,
        any::<i32>(),
        prop::collection::vec(container(), 1..3),
    )
        .prop_map(|(name, labels, annotations, replicas, history, containers)| {
            let mut selector = labels.clone();
            selector.insert("app".into(), Value::String(name.clone()));
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": "prod", "labels": labels, "annotations": annotations},
                "spec": {
                    "replicas": replicas,
                    "revisionHistoryLimit": history,
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {"labels": selector},
                        "spec": {"containers": containers, "terminationGracePeriodSeconds": 30},
                    },
                },
            })
        })
}

// ---------------------------------------------------------------------------------------
// Rendering one value many ways: key order, quoting, flow or block, comments, JSON.

/// xorshift64*: the formatting choices are made from one seed proptest shrinks.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
    fn shuffled<'a>(&mut self, map: &'a Map<String, Value>) -> Vec<(&'a String, &'a Value)> {
        let mut entries: Vec<_> = map.iter().collect();
        for i in (1..entries.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            entries.swap(i, j);
        }
        entries
    }
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Yaml,
    Json,
}

fn render(value: &Value, format: Format, seed: u64) -> String {
    let mut choices = Choices(seed | 1);
    let mut out = String::new();
    match format {
        Format::Yaml => {
            if choices.one_in(3) {
                out.push_str("# hotfix for the incident\n---\n");
            }
            match value {
                Value::Object(map) => yaml_block_map(map, 0, &mut choices, &mut out),
                other => {
                    yaml_scalar(other, &mut choices, &mut out);
                    out.push('\n');
                }
            }
            if choices.one_in(4) {
                out.push_str("...\n");
            }
        }
        Format::Json => json_value(value, 0, &mut choices, &mut out),
    }
    out
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

fn yaml_block_map(map: &Map<String, Value>, indent: usize, c: &mut Choices, out: &mut String) {
    for (i, (key, value)) in c.shuffled(map).into_iter().enumerate() {
        if i > 0 && c.one_in(6) {
            out.push_str(&format!("{}# note {}\n", pad(indent), c.next() % 100));
        }
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&pad(indent));
        }
        yaml_key(key, c, out);
        out.push(':');
        yaml_after_key(value, indent, c, out);
    }
}

/// What follows `key:` (or `- `): a scalar on the line, a flow collection, or a block.
fn yaml_after_key(value: &Value, indent: usize, c: &mut Choices, out: &mut String) {
    match value {
        Value::Object(m) if !m.is_empty() && !c.one_in(5) => {
            out.push('\n');
            yaml_block_map(m, indent + 2, c, out);
        }
        Value::Array(items) if !items.is_empty() && !c.one_in(5) => {
            out.push('\n');
            let at = if c.one_in(2) { indent } else { indent + 2 };
            yaml_block_seq(items, at, c, out);
        }
        Value::Object(_) | Value::Array(_) => {
            out.push(' ');
            yaml_flow(value, c, out);
            out.push('\n');
        }
        scalar => {
            out.push(' ');
            yaml_scalar(scalar, c, out);
            if c.one_in(8) {
                out.push_str(" # trailing");
            }
            out.push('\n');
        }
    }
}

fn yaml_block_seq(items: &[Value], indent: usize, c: &mut Choices, out: &mut String) {
    for item in items {
        out.push_str(&pad(indent));
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => yaml_block_map(m, indent + 2, c, out),
            Value::Object(_) | Value::Array(_) => {
                yaml_flow(item, c, out);
                out.push('\n');
            }
            scalar => {
                yaml_scalar(scalar, c, out);
                out.push('\n');
            }
        }
    }
}

fn yaml_flow(value: &Value, c: &mut Choices, out: &mut String) {
    match value {
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in c.shuffled(m).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                yaml_key(k, c, out);
                out.push_str(": ");
                yaml_flow(v, c, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                yaml_flow(v, c, out);
            }
            out.push(']');
        }
        Value::String(s) => double_quoted(s, out),
        scalar => yaml_scalar(scalar, c, out),
    }
}

fn yaml_key(key: &str, c: &mut Choices, out: &mut String) {
    yaml_string(key, c, out);
}

fn yaml_scalar(value: &Value, c: &mut Choices, out: &mut String) {
    match value {
        Value::Null => out.push_str(if c.one_in(2) { "null" } else { "~" }),
        Value::Bool(b) => out.push_str(&b.to_string()),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => yaml_string(s, c, out),
        collection => yaml_flow(collection, c, out),
    }
}

/// A string in plain, single-quoted or double-quoted style, whichever keeps its meaning.
fn yaml_string(s: &str, c: &mut Choices, out: &mut String) {
    let choice = c.next() % 3;
    if choice == 0 && plain_safe(s) {
        out.push_str(s);
    } else if choice == 1
        && s.chars()
            .all(|ch| printable(ch) && ch != '\n' && ch != '\r')
    {
        out.push('\'');
        out.push_str(&s.replace('\'', "''"));
        out.push('\'');
    } else {
        double_quoted(s, out);
    }
}

/// Plain scalars that every YAML reader takes as this exact string, in block and flow context.
fn plain_safe(s: &str) -> bool {
    const SPECIAL: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    s.starts_with(|ch: char| ch.is_ascii_alphabetic())
        && !s.ends_with(':')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./@:-".contains(&b))
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str())
}

/// YAML's printable set; anything else must be escaped in a double-quoted scalar.
fn printable(ch: char) -> bool {
    matches!(ch, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && ch != '\u{feff}'
}

fn double_quoted(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ch if printable(ch) => out.push(ch),
            ch if (ch as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", ch as u32)),
            ch => out.push_str(&format!("\\U{:08x}", ch as u32)),
        }
    }
    out.push('"');
}

fn json_value(value: &Value, indent: usize, c: &mut Choices, out: &mut String) {
    let pretty = c.one_in(2);
    let (open_sep, sep, close) = if pretty {
        (
            format!("\n{}", pad(indent + 2)),
            format!(",\n{}", pad(indent + 2)),
            format!("\n{}", pad(indent)),
        )
    } else {
        (String::new(), ",".to_owned(), String::new())
    };
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('{');
            out.push_str(&open_sep);
            for (i, (k, v)) in c.shuffled(m).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(if pretty { ": " } else { ":" });
                json_value(v, indent + 2, c, out);
            }
            out.push_str(&close);
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            out.push_str(&open_sep);
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                json_value(v, indent + 2, c, out);
            }
            out.push_str(&close);
            out.push(']');
        }
        // serde_json escapes only what JSON must; YAML reads JSON as flow, so anything YAML
        // cannot hold raw is escaped as well.
        Value::String(s) => double_quoted(s, out),
        scalar => out.push_str(&scalar.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// Changes that are applied, and noise that is not.

/// Every leaf (and every removable key) of a value, as JSON pointers.
fn leaves(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = k.replace('~', "~0").replace('/', "~1");
                leaves(v, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// Changes the leaf at `pointer` to a different value of the same kind.
fn changed(value: &Value, pointer: &str) -> Value {
    let mut copy = value.clone();
    if let Some(leaf) = copy.pointer_mut(pointer) {
        *leaf = match leaf.take() {
            Value::String(s) => Value::String(format!("{s}x")),
            Value::Bool(b) => Value::Bool(!b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) if u > 0 => json!(u - 1),
                (_, Some(i)) => json!(i.wrapping_add(1)),
                _ => json!(0),
            },
            Value::Null => json!("x"),
            Value::Object(_) => json!({"added": "x"}),
            Value::Array(_) => json!(["x"]),
        };
    }
    copy
}

/// What `kubectl get -o yaml` adds and normalization drops.
fn with_server_noise(value: &Value, seed: u64) -> Value {
    let mut copy = value.clone();
    let mut c = Choices(seed | 1);
    if c.one_in(2) {
        copy["status"] = json!({"replicas": 1, "conditions": [{"type": "Available"}]});
    }
    if c.one_in(2) {
        copy["metadata"]["uid"] = json!("7f1c2b2e-1f2d-4c3b-9a8e-2c1d0e9f8a7b");
        copy["metadata"]["resourceVersion"] = json!("4242");
        copy["metadata"]["creationTimestamp"] = json!("2024-05-01T10:00:00Z");
    }
    if let Some(metadata) = copy["metadata"].as_object_mut().filter(|_| c.one_in(2)) {
        metadata.remove("namespace");
    }
    copy
}

// ---------------------------------------------------------------------------------------
// Hostile settings, each with the path its refusal must name.

fn hostile(value: &Value, which: usize, container: usize) -> (Value, String) {
    let mut v = value.clone();
    let count = v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map_or(1, Vec::len);
    let i = container % count;
    let c = format!("spec.template.spec.containers[{i}]");
    let spec = &mut v["spec"]["template"]["spec"];
    let path = match which % 12 {
        0 => {
            spec["hostNetwork"] = json!(true);
            "spec.template.spec.hostNetwork".to_owned()
        }
        1 => {
            spec["hostPID"] = json!(true);
            "spec.template.spec.hostPID".to_owned()
        }
        2 => {
            spec["hostIPC"] = json!(true);
            "spec.template.spec.hostIPC".to_owned()
        }
        3 => {
            spec["containers"][i]["securityContext"]["privileged"] = json!(true);
            format!("{c}.securityContext.privileged")
        }
        4 => {
            spec["containers"][i]["securityContext"]["capabilities"] =
                json!({"add": ["SYS_ADMIN"]});
            format!("{c}.securityContext.capabilities.add[0]")
        }
        5 => {
            spec["containers"][i]["image"] = json!("nginx:latest");
            format!("{c}.image")
        }
        6 => {
            spec["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
            "spec.template.spec.volumes[0].hostPath".to_owned()
        }
        7 => {
            spec["serviceAccountName"] = json!("cluster-admin");
            "spec.template.spec.serviceAccountName".to_owned()
        }
        8 => {
            v["metadata"]["labels"]["image-policy.k8s.io/break-glass"] = json!("true");
            "metadata.labels[\"image-policy.k8s.io/break-glass\"]".to_owned()
        }
        9 => {
            v["spec"]["template"]["metadata"]["annotations"]["breakglass-broker.io/ticket"] =
                json!("INC-0");
            "spec.template.metadata.annotations[\"breakglass-broker.io/ticket\"]".to_owned()
        }
        10 => {
            v["metadata"]["finalizers"] = json!(["example.com/keep"]);
            "metadata.finalizers".to_owned()
        }
        _ => {
            spec["containers"][i]["image"] = json!(
                "docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            );
            format!("{c}.image")
        }
    };
    (v, path)
}

/// Cuts, duplicates and splices a text the way a bad paste or a hostile hand would.
fn mutated(text: &str, edits: &[(usize, usize, u8)]) -> String {
    const SPLICES: [&str; 16] = [
        ":", "- ", "{", "}", "[", "]", "&a ", "*a", "!!str ", "'", "\"", "\n  ", "\t", "---\n",
        "<<: ", "? ",
    ];
    let mut bytes: Vec<u8> = text.as_bytes().to_vec();
    for &(at, len, how) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = at % bytes.len();
        let end = (at + len % 40).min(bytes.len());
        match how % 4 {
            0 => {
                bytes.drain(at..end);
            }
            1 => {
                let copy: Vec<u8> = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            2 => {
                let splice = SPLICES[usize::from(how) % SPLICES.len()];
                bytes.splice(at..at, splice.bytes());
            }
            _ => {
                bytes.splice(at..end, std::iter::empty());
                bytes.insert(at, b' ');
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The whole path a manifest takes before it is filed; every outcome is a refusal that says
/// something, or objects that carry the request's namespace.
fn whole_check(text: &str, policy: &Policy) -> Result<String, Vec<Finding>> {
    let docs = parse(text, &Limits::default())
        .map_err(|e| vec![Finding::new("", "manifest", e.to_string())])?;
    let objects = normalize(docs, "prod")?;
    for object in &objects {
        assert_eq!(object.body["metadata"]["namespace"], "prod");
        assert!(!object.kind.is_empty() && !object.name.is_empty());
    }
    let findings = policy.check_objects(&objects);
    if findings.is_empty() {
        Ok(digest_of(&objects))
    } else {
        Err(findings)
    }
}

fn assert_findings_say_something(findings: &[Finding]) {
    assert!(!findings.is_empty());
    for finding in findings {
        assert!(!finding.message.trim().is_empty(), "{finding:?}");
        assert!(
            !finding.object.is_empty() || !finding.path.is_empty(),
            "a refusal must say where: {finding:?}"
        );
        assert!(finding.to_string().len() < 2_000, "{finding}");
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn formatting_never_changes_the_digest(
        value in workload(),
        first in any::<u64>(),
        second in any::<u64>(),
        second_is_json in any::<bool>(),
    ) {
        // The reference: the value itself, normalized without any text in between.
        let expected = normalize(vec![value.clone()], "prod").expect("a generated workload normalizes");
        let yaml = render(&value, Format::Yaml, first);
        let from_yaml = objects_of(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(&from_yaml[0].body, &expected[0].body, "YAML read differently:\n{}", yaml);
        let format = if second_is_json { Format::Json } else { Format::Yaml };
        let other = render(&with_server_noise(&value, second), format, second);
        let from_other = objects_of(&other).map_err(|e| TestCaseError::fail(format!("{e}\n{other}")))?;
        prop_assert_eq!(digest_of(&from_yaml), digest_of(&from_other), "{}\n---- vs ----\n{}", yaml, other);
        prop_assert_eq!(digest_of(&from_yaml), digest_of(&expected));
        prop_assert!(dev_policy().check_objects(&from_yaml).is_empty(), "a generated workload passes the dev policy");
    }

    #[test]
    fn any_change_to_what_is_applied_changes_the_digest(
        value in workload(),
        pick in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let mut paths = Vec::new();
        leaves(&value, String::new(), &mut paths);
        paths.retain(|p| p != "/metadata/namespace");
        let pointer = pick.get(&paths);
        let before = objects_of(&render(&value, Format::Yaml, seed)).expect("normalizes");
        let after_value = changed(&value, pointer);
        let after = objects_of(&render(&after_value, Format::Yaml, seed))
            .map_err(|e| TestCaseError::fail(format!("{pointer}: {e}")))?;
        prop_assert_ne!(digest_of(&before), digest_of(&after), "changing {} kept the digest", pointer);
    }

    #[test]
    fn the_request_fields_are_part_of_the_digest(value in workload(), seed in any::<u64>()) {
        let objects = objects_of(&render(&value, Format::Yaml, seed)).expect("normalizes");
        let base = Subject { target: "dev-cluster", namespace: "prod", objects: &objects, duration_seconds: 3600, ticket: "INC-1" };
        let same = digest(&base);
        prop_assert_ne!(&same, &digest(&Subject { target: "other", ..base }));
        prop_assert_ne!(&same, &digest(&Subject { namespace: "default", ..base }));
        prop_assert_ne!(&same, &digest(&Subject { duration_seconds: 3660, ..base }));
        prop_assert_ne!(&same, &digest(&Subject { ticket: "INC-2", ..base }));
        prop_assert_ne!(&same, &digest(&Subject { objects: &[], ..base }));
    }

    #[test]
    fn every_hostile_setting_is_refused_at_its_path(
        value in workload(),
        which in 0usize..12,
        container in 0usize..4,
        seed in any::<u64>(),
        as_json in any::<bool>(),
    ) {
        let (bad, path) = hostile(&value, which, container);
        let text = render(&bad, if as_json { Format::Json } else { Format::Yaml }, seed);
        match whole_check(&text, &dev_policy()) {
            Ok(_) => prop_assert!(false, "accepted a manifest with {}:\n{}", path, text),
            Err(findings) => {
                assert_findings_say_something(&findings);
                prop_assert!(
                    findings.iter().any(|f| f.path == path),
                    "no finding at {}: {:?}", path, findings
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(config(FUZZ_CASES))]

    #[test]
    fn arbitrary_text_is_read_or_refused_without_panicking(
        text in prop_oneof![
            any::<String>(),
            "[a-z:{}\\[\\],&*!|>'\"#%@`? \n\t-]{0,300}",
            "(apiVersion|kind|metadata|name|spec|- |: |&a |\\*a |<<|---|\n|  ){0,80}",
        ],
    ) {
        let started = std::time::Instant::now();
        match whole_check(&text, &dev_policy()) {
            Ok(digest) => prop_assert!(digest.starts_with("sha256:")),
            Err(findings) => assert_findings_say_something(&findings),
        }
        prop_assert!(started.elapsed() < PARSE_LIMIT, "took {:?}", started.elapsed());
    }

    #[test]
    fn mangled_manifests_are_read_or_refused_without_panicking(
        value in workload(),
        seed in any::<u64>(),
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..6),
    ) {
        let text = mutated(&render(&value, Format::Yaml, seed), &edits);
        match whole_check(&text, &dev_policy()) {
            Ok(digest) => prop_assert!(digest.starts_with("sha256:")),
            Err(findings) => assert_findings_say_something(&findings),
        }
    }
}
