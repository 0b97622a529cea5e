//! The part of the Logging query language the simulated Logging API understands: comparisons
//! (`=`, `!=`, `:`, `>=`, `<=`, `>`, `<`) of a field path with a quoted or bare value, a list
//! of values (`field=("a" OR "b")`), presence (`field:*`), `AND` (also implied by a space),
//! `OR`, `NOT` (and `-`), and parentheses. Path segments are names or quoted keys
//! (`labels."image-policy.k8s.io/break-glass"`). As in Cloud Logging, `NOT` binds tightest,
//! then `OR`, then `AND`; timestamps compare as instants.
//!
//! Anything else (a bare search term, a regular expression, a function) is refused, so a query
//! the simulation cannot read fails a test instead of matching everything.

use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Has,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    Text(String),
    /// `*`, only after `:`: the field is present.
    Present,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        path: Vec<String>,
        op: Op,
        /// Any of these (a one-element list for a single value).
        values: Vec<Operand>,
    },
}

/// Parses a filter; the error says what was expected and where.
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    parser.skip_ws();
    if parser.done() {
        return Ok(Expr::And(Vec::new()));
    }
    let expr = parser.conjunction()?;
    parser.skip_ws();
    if !parser.done() {
        return Err(parser.error("the end of the filter or AND/OR"));
    }
    Ok(expr)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn done(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn error(&self, expected: &str) -> String {
        let found: String = self.chars[self.at.min(self.chars.len())..]
            .iter()
            .take(20)
            .collect();
        if found.is_empty() {
            format!("expected {expected} at the end (position {})", self.at)
        } else {
            format!(
                "expected {expected} at position {}, found {found:?}",
                self.at
            )
        }
    }

    /// The keyword at the current position, followed by a space or a parenthesis.
    fn keyword(&self, word: &str) -> bool {
        let end = self.at + word.len();
        end <= self.chars.len()
            && self.chars[self.at..end].iter().copied().eq(word.chars())
            && self
                .chars
                .get(end)
                .is_none_or(|c| c.is_whitespace() || *c == '(')
    }

    /// AND, written or implied by juxtaposition: the loosest.
    fn conjunction(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.disjunction()?];
        loop {
            self.skip_ws();
            if self.done() || self.peek() == Some(')') {
                break;
            }
            if self.keyword("AND") {
                self.at += 3;
            }
            items.push(self.disjunction()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn disjunction(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.negation()?];
        loop {
            let before = self.at;
            self.skip_ws();
            if self.keyword("OR") {
                self.at += 2;
                items.push(self.negation()?);
            } else {
                self.at = before;
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn negation(&mut self) -> Result<Expr, String> {
        self.skip_ws();
        if self.keyword("NOT") {
            self.at += 3;
            return Ok(Expr::Not(Box::new(self.negation()?)));
        }
        if self.peek() == Some('-') {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.negation()?)));
        }
        if self.peek() == Some('(') {
            self.at += 1;
            let inner = self.conjunction()?;
            self.skip_ws();
            if self.peek() != Some(')') {
                return Err(self.error("')'"));
            }
            self.at += 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let path = self.path()?;
        self.skip_ws();
        let op = self.op()?;
        self.skip_ws();
        let values = if self.peek() == Some('(') {
            self.at += 1;
            let mut values = vec![self.operand(op)?];
            loop {
                self.skip_ws();
                if self.keyword("OR") {
                    self.at += 2;
                    self.skip_ws();
                    values.push(self.operand(op)?);
                } else {
                    break;
                }
            }
            if self.peek() != Some(')') {
                return Err(self.error("OR or ')' in a list of values"));
            }
            self.at += 1;
            values
        } else {
            vec![self.operand(op)?]
        };
        Ok(Expr::Compare { path, op, values })
    }

    /// `a.b."quoted key".c`: at least one segment, no spaces inside.
    fn path(&mut self) -> Result<Vec<String>, String> {
        let mut path = Vec::new();
        loop {
            let segment = if self.peek() == Some('"') {
                self.quoted()?
            } else {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
                {
                    self.at += 1;
                }
                if self.at == start {
                    return Err(self.error("a field name (a comparison such as field=\"value\")"));
                }
                self.chars[start..self.at].iter().collect()
            };
            path.push(segment);
            if self.peek() == Some('.') {
                self.at += 1;
            } else {
                return Ok(path);
            }
        }
    }

    fn op(&mut self) -> Result<Op, String> {
        let two: String = self.chars[self.at..].iter().take(2).collect();
        let (op, len) = match two.as_str() {
            ">=" => (Op::Ge, 2),
            "<=" => (Op::Le, 2),
            "!=" => (Op::Ne, 2),
            "=~" | "!~" => {
                return Err(format!(
                    "regular expressions ({two}) are not simulated (position {})",
                    self.at
                ));
            }
            _ => match self.peek() {
                Some('=') => (Op::Eq, 1),
                Some(':') => (Op::Has, 1),
                Some('>') => (Op::Gt, 1),
                Some('<') => (Op::Lt, 1),
                _ => return Err(self.error("a comparison operator (=, !=, :, >=, <=, >, <)")),
            },
        };
        self.at += len;
        Ok(op)
    }

    fn operand(&mut self, op: Op) -> Result<Operand, String> {
        match self.peek() {
            Some('"') => Ok(Operand::Text(self.quoted()?)),
            Some('*') if op == Op::Has => {
                self.at += 1;
                Ok(Operand::Present)
            }
            _ => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && !"()\"*".contains(c))
                {
                    self.at += 1;
                }
                let word: String = self.chars[start..self.at].iter().collect();
                if word.is_empty() || ["AND", "OR", "NOT"].contains(&word.as_str()) {
                    self.at = start;
                    return Err(self.error("a value"));
                }
                Ok(Operand::Text(word))
            }
        }
    }

    /// A double-quoted string with backslash escapes.
    fn quoted(&mut self) -> Result<String, String> {
        let start = self.at;
        self.at += 1;
        let mut text = String::new();
        loop {
            match self.peek() {
                None => {
                    self.at = start;
                    return Err(self.error("a closing '\"'"));
                }
                Some('"') => {
                    self.at += 1;
                    return Ok(text);
                }
                Some('\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        Some(c) => text.push(c),
                        None => continue,
                    }
                    self.at += 1;
                }
                Some(c) => {
                    text.push(c);
                    self.at += 1;
                }
            }
        }
    }
}

impl Expr {
    pub fn matches(&self, entry: &Value) -> bool {
        match self {
            Expr::And(items) => items.iter().all(|e| e.matches(entry)),
            Expr::Or(items) => items.iter().any(|e| e.matches(entry)),
            Expr::Not(inner) => !inner.matches(entry),
            Expr::Compare { path, op, values } => {
                let mut found = Vec::new();
                resolve(entry, path, &mut found);
                values.iter().any(|value| compare(&found, *op, value))
            }
        }
    }
}

/// Every value at `path`; a repeated field matches if any of its elements does.
fn resolve<'a>(at: &'a Value, path: &[String], found: &mut Vec<&'a Value>) {
    match (at, path.split_first()) {
        (Value::Array(items), _) => {
            for item in items {
                resolve(item, path, found);
            }
        }
        (Value::Null, _) => {}
        (value, None) => found.push(value),
        (Value::Object(map), Some((first, rest))) => {
            if let Some(next) = map.get(first) {
                resolve(next, rest, found);
            }
        }
        _ => {}
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn compare(found: &[&Value], op: Op, operand: &Operand) -> bool {
    let wanted = match operand {
        Operand::Present => return !found.is_empty(),
        Operand::Text(text) => text,
    };
    found.iter().filter_map(|v| text_of(v)).any(|have| {
        let order = match (instant(&have), instant(wanted)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => match (have.parse::<f64>(), wanted.parse::<f64>()) {
                (Ok(a), Ok(b)) => a.total_cmp(&b),
                _ => have.as_str().cmp(wanted.as_str()),
            },
        };
        match op {
            Op::Eq => order.is_eq(),
            Op::Ne => order.is_ne(),
            Op::Has => have.to_lowercase().contains(&wanted.to_lowercase()),
            Op::Ge => order.is_ge(),
            Op::Le => order.is_le(),
            Op::Gt => order.is_gt(),
            Op::Lt => order.is_lt(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Value {
        json!({
            "timestamp": "2030-01-02T03:04:05.678Z",
            "resource": { "type": "k8s_cluster", "labels": { "cluster_name": "dev-gke" } },
            "protoPayload": {
                "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "methodName": "io.k8s.core.v1.pods.create",
                "request": { "metadata": { "labels": { "image-policy.k8s.io/break-glass": "true" } } },
                "authorizationInfo": [{ "permission": "io.k8s.core.v1.pods.create" }, { "permission": "x" }],
            },
        })
    }

    fn matches(filter: &str) -> bool {
        parse(filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(&entry())
    }

    #[test]
    fn comparisons_quoted_keys_lists_and_presence_match_as_cloud_logging_does() {
        assert!(matches(r#"resource.type="k8s_cluster""#));
        assert!(matches("resource.type=k8s_cluster"));
        assert!(!matches(r#"resource.type="cloud_run_revision""#));
        assert!(matches(
            r#"protoPayload.request.metadata.labels."image-policy.k8s.io/break-glass"="true""#
        ));
        assert!(matches(
            r#"protoPayload.methodName=("io.k8s.core.v1.pods.update" OR "io.k8s.core.v1.pods.create")"#
        ));
        assert!(matches(r#"protoPayload.methodName:"PODS.create""#));
        assert!(matches(r#"protoPayload."@type":"AuditLog""#));
        assert!(matches("protoPayload.@type:AuditLog"));
        assert!(matches("protoPayload.request.metadata.labels:*"));
        assert!(!matches(
            r#"protoPayload.request.metadata.annotations."x":*"#
        ));
        assert!(matches(
            r#"NOT protoPayload.request.metadata.annotations."x":*"#
        ));
        assert!(matches(r#"-resource.type="gce_instance""#));
        assert!(matches(r#"protoPayload.authorizationInfo.permission="x""#));
        assert!(matches(r#"resource.labels.cluster_name!="prod""#));
    }

    #[test]
    fn timestamps_compare_as_instants() {
        assert!(matches(r#"timestamp>="2030-01-02T03:04:05Z""#));
        assert!(matches(r#"timestamp>="2030-01-02T04:04:05+01:00""#));
        assert!(!matches(r#"timestamp>"2030-01-02T03:04:05.678Z""#));
        assert!(matches(r#"timestamp<="2030-01-02T03:04:05.678000Z""#));
        assert!(!matches(r#"timestamp<"2030-01-01T00:00:00Z""#));
    }

    #[test]
    fn or_binds_tighter_than_and_and_juxtaposition_is_and() {
        // (a OR b) AND c, as Cloud Logging reads it.
        assert!(!matches(
            r#"resource.type="k8s_cluster" OR resource.type="x" AND resource.type="y""#
        ));
        assert!(matches(
            r#"resource.type="k8s_cluster" (resource.type="x" OR timestamp>="2000-01-01T00:00:00Z")"#
        ));
        assert!(!matches(r#"resource.type="k8s_cluster" resource.type="x""#));
        assert!(matches(
            r#"(resource.type="x" OR resource.type="k8s_cluster") AND NOT (timestamp<"2000-01-01T00:00:00Z")"#
        ));
    }

    #[test]
    fn what_the_simulation_cannot_read_is_refused_not_matched() {
        for bad in [
            r#""image-policy.k8s.io/break-glass""#,
            "break-glass",
            r#"resource.type="k8s_cluster" AND"#,
            r#"resource.type="k8s_cluster"))"#,
            r#"(resource.type="k8s_cluster""#,
            r#"resource.type="k8s_cluster"#,
            r#"protoPayload.methodName=~"pods""#,
            r#"resource.type="#,
            r#"resource.type=("a" "b")"#,
            r#"resource..type="a""#,
            r#"resource.type=*"#,
            r#"sample(insertId, 0.1)"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted: {:?}", parse(bad));
        }
        assert_eq!(parse("  "), Ok(Expr::And(Vec::new())));
    }
}
