//! Label and field selectors, parsed and matched the way the API server does.
//!
//! The broker and kubectl both filter on the server (`-l image-policy.k8s.io/break-glass=true`),
//! so the simulator must implement the real grammar rather than a substring match,
//! including rejecting malformed selectors with 400.

use std::collections::BTreeSet;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector: requirements that must all hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Open,
    Close,
    Comma,
    Gt,
    Lt,
}

fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '>' => Token::Gt,
            '<' => Token::Lt,
            '=' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::DoubleEq
            }
            '=' => Token::Eq,
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::NotEq
            }
            '!' => Token::Bang,
            c => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || ",()=!<>".contains(n) {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                Token::Word(word)
            }
        };
        tokens.push(token);
    }
    tokens
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` of at most 63 characters.
fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS subdomain: lowercase alphanumerics, `-` and `.`, at most 253 characters.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let bytes = part.as_bytes();
            !part.is_empty()
                && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name.
pub(crate) fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// A label value: empty, or a label name.
pub(crate) fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(key)) if is_qualified_name(&key) => Ok(key),
            Some(Token::Word(key)) => Err(format!("invalid label key {key:?}")),
            other => Err(format!("expected a label key, found {other:?}")),
        }
    }

    /// A value after `=`; an empty value is allowed (`a=` selects `a: ""`).
    fn value(&mut self) -> Result<String, String> {
        let value = match self.peek() {
            Some(Token::Word(_)) => match self.next() {
                Some(Token::Word(w)) => w,
                _ => String::new(),
            },
            _ => String::new(),
        };
        if is_label_value(&value) {
            Ok(value)
        } else {
            Err(format!("invalid label value {value:?}"))
        }
    }

    fn values(&mut self) -> Result<BTreeSet<String>, String> {
        if self.next() != Some(Token::Open) {
            return Err("expected '(' after 'in' or 'notin'".to_owned());
        }
        let mut values = BTreeSet::new();
        loop {
            values.insert(self.value()?);
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => return Ok(values),
                other => return Err(format!("expected ',' or ')', found {other:?}")),
            }
        }
    }

    fn number(&mut self) -> Result<i64, String> {
        match self.next() {
            Some(Token::Word(w)) => w.parse().map_err(|_| {
                format!("for 'Gt', 'Lt' operators, the value must be an integer, not {w:?}")
            }),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Bang) {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        let op = match self.peek() {
            None | Some(Token::Comma) => Op::Exists,
            Some(Token::Eq | Token::DoubleEq) => {
                self.next();
                Op::Equals(self.value()?)
            }
            Some(Token::NotEq) => {
                self.next();
                Op::NotEquals(self.value()?)
            }
            Some(Token::Gt) => {
                self.next();
                Op::GreaterThan(self.number()?)
            }
            Some(Token::Lt) => {
                self.next();
                Op::LessThan(self.number()?)
            }
            Some(Token::Word(w)) if w == "in" => {
                self.next();
                Op::In(self.values()?)
            }
            Some(Token::Word(w)) if w == "notin" => {
                self.next();
                Op::NotIn(self.values()?)
            }
            Some(other) => return Err(format!("unexpected {other:?} after key {key:?}")),
        };
        Ok(Requirement { key, op })
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter; the error is the 400 message.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut parser = Parser {
            tokens: tokenize(input),
            at: 0,
        };
        let mut requirements = Vec::new();
        if parser.peek().is_none() {
            return Ok(Self { requirements });
        }
        loop {
            let requirement = parser
                .requirement()
                .map_err(|e| format!("unable to parse requirement: {e}"))?;
            requirements.push(requirement);
            match parser.next() {
                None => return Ok(Self { requirements }),
                Some(Token::Comma) => continue,
                Some(other) => {
                    return Err(format!("unable to parse requirement: unexpected {other:?}"));
                }
            }
        }
    }

    /// Whether an object's `metadata.labels` (a JSON object, or absent) satisfies every requirement.
    pub(crate) fn matches(&self, labels: Option<&Value>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match (&r.op, value) {
                (Op::Exists, v) => v.is_some(),
                (Op::DoesNotExist, v) => v.is_none(),
                (Op::Equals(want), Some(v)) => v == want,
                (Op::NotEquals(want), v) => v != Some(want.as_str()),
                (Op::In(set), Some(v)) => set.contains(v),
                (Op::NotIn(set), v) => v.is_none_or(|v| !set.contains(v)),
                (Op::GreaterThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v > *n),
                (Op::LessThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v < *n),
                (_, None) => false,
            }
        })
    }
}

/// A field selector limited to the fields every resource supports.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    /// (field, value, equal) triples; `equal` is false for `!=`.
    terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses `fieldSelector`; only `metadata.name` and `metadata.namespace` are known.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), value.trim().to_owned(), equal));
        }
        Ok(Self { terms })
    }

    pub(crate) fn matches(&self, metadata: &Value) -> bool {
        self.terms.iter().all(|(field, want, equal)| {
            let key = field.trim_start_matches("metadata.");
            let value = metadata.get(key).and_then(Value::as_str).unwrap_or("");
            (value == want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type TestResult = Result<(), String>;

    fn sel(s: &str) -> Result<LabelSelector, String> {
        LabelSelector::parse(s)
    }

    #[test]
    fn equality_and_inequality_select_on_values() -> TestResult {
        let labels = json!({ "image-policy.k8s.io/break-glass": "true", "app": "api" });
        assert!(sel("image-policy.k8s.io/break-glass=true")?.matches(Some(&labels)));
        assert!(sel("app==api")?.matches(Some(&labels)));
        assert!(!sel("app!=api")?.matches(Some(&labels)));
        assert!(sel("tier!=web")?.matches(Some(&labels)));
        assert!(!sel("app=web")?.matches(Some(&labels)));
        Ok(())
    }

    #[test]
    fn set_based_requirements_follow_kubernetes_semantics() -> TestResult {
        let labels = json!({ "env": "prod" });
        assert!(sel("env in (prod, staging)")?.matches(Some(&labels)));
        assert!(!sel("env notin (prod)")?.matches(Some(&labels)));
        assert!(sel("tier notin (web)")?.matches(Some(&labels)));
        assert!(sel("env")?.matches(Some(&labels)));
        assert!(!sel("!env")?.matches(Some(&labels)));
        assert!(sel("!tier")?.matches(None));
        assert!(!sel("env in (prod),tier")?.matches(Some(&labels)));
        assert!(sel("replicas>2")?.matches(Some(&json!({ "replicas": "3" }))));
        Ok(())
    }

    #[test]
    fn empty_selector_matches_everything() -> TestResult {
        assert!(sel("")?.matches(None));
        Ok(())
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for bad in [
            "a in (x", "a in x", "=b", "a=b=c", "a b", "-bad=x", "a,", "a>b",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn field_selector_matches_name_and_rejects_unknown_fields() -> TestResult {
        let meta = json!({ "name": "api", "namespace": "prod" });
        assert!(FieldSelector::parse("metadata.name=api")?.matches(&meta));
        assert!(!FieldSelector::parse("metadata.namespace!=prod")?.matches(&meta));
        assert!(FieldSelector::parse("spec.nodeName=x").is_err());
        Ok(())
    }

    #[test]
    fn qualified_names_are_validated() {
        assert!(is_qualified_name("image-policy.k8s.io/break-glass"));
        assert!(!is_qualified_name("Bad_Prefix/x"));
        assert!(!is_qualified_name("x/"));
        assert!(is_label_value(""));
        assert!(!is_label_value("has space"));
    }
}
