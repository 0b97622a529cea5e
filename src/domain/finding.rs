//! What a refusal says: a finding names the object, the field and the rule, and repeats only
//! a short, quoted piece of what was submitted.

use serde::Serialize;
use serde_json::Value;

/// One reason a request cannot go ahead: which object, which field, which rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub object: String,
    pub path: String,
    pub message: String,
}

impl Finding {
    pub fn new(
        object: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object: object.into(),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.object.is_empty(), self.path.is_empty()) {
            (true, true) => f.write_str(&self.message),
            (true, false) => write!(f, "{} {}", self.path, self.message),
            (false, true) => write!(f, "{}: {}", self.object, self.message),
            (false, false) => write!(f, "{}: {} {}", self.object, self.path, self.message),
        }
    }
}

/// Longest piece of submitted text a message repeats; enough to recognise, too little to
/// turn a refusal into an echo of a hostile manifest.
const SHOWN_CHARS: usize = 80;

/// Submitted text, quoted for a message and cut short.
pub(crate) fn quoted(text: &str) -> String {
    if text.chars().count() <= SHOWN_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(SHOWN_CHARS).collect();
        format!("{head:?}...")
    }
}

/// A submitted value as JSON, cut short like [`quoted`].
pub(crate) fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= SHOWN_CHARS {
        text
    } else {
        format!("{}...", text.chars().take(SHOWN_CHARS).collect::<String>())
    }
}

/// How a value of the wrong type is described: "a string", "a list", never the value itself,
/// which could be large.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Why a value is not the string it should be. YAML reads `on`, `off`, `yes` and `no` as
/// booleans, which surprises people, so that case says how to fix it.
pub(crate) fn not_a_string(value: &Value) -> String {
    match value {
        Value::Bool(b) => format!(
            "is the boolean {b}; it must be a string (YAML reads yes, no, on and off as booleans: quote them)"
        ),
        other => format!("is {}; it must be a string", kind_of(other)),
    }
}
