//! Log lines in the shape Google Cloud Logging reads from a container's output: one JSON
//! object per line with `severity`, `message` and `time` where it looks for them, the event's
//! fields beside them (they land in `jsonPayload`), and the spans it happened in.
//!
//! tracing-subscriber's own JSON format writes the level as `"level": "WARN"`, which Cloud
//! Logging ignores (every line would show as DEFAULT severity), and nests the message under
//! `fields` unless flattened. The crates that fill the gap (tracing-stackdriver) also rename
//! every field to camelCase, which would make `request_id` in the log differ from
//! `request_id` in the API and the export; the formatter below is small enough to own.
//!
//! Audit events and checkpoints (target `audit`, level INFO) are written as `NOTICE`, Cloud
//! Logging's "normal but significant": `severity>=NOTICE` finds every breakglass step and
//! every problem, and none of the chatter.

use std::fmt;

use serde_json::{Map, Number, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter; pair it with [`JsonFields`] for span fields:
/// `fmt().fmt_fields(JsonFields::new()).event_format(CloudLogging)`.
pub struct CloudLogging;

/// Cloud Logging's name for a level; audit lines are `NOTICE` (see the module comment).
pub fn severity(level: &Level, target: &str) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO if target == "audit" => "NOTICE",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S> FormatEvent<S, JsonFields> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let mut line = Map::new();
        line.insert(
            "severity".into(),
            severity(meta.level(), meta.target()).into(),
        );
        line.insert(
            "message".into(),
            fields.remove("message").unwrap_or(Value::from("")),
        );
        line.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("target".into(), meta.target().into());
        if let (Some(file), Some(number)) = (meta.file(), meta.line()) {
            line.insert(
                "logging.googleapis.com/sourceLocation".into(),
                serde_json::json!({ "file": file, "line": number.to_string() }),
            );
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let mut entry = Map::new();
                    entry.insert("name".into(), span.name().into());
                    if let Some(formatted) = span.extensions().get::<FormattedFields<JsonFields>>()
                        && let Ok(Value::Object(span_fields)) = serde_json::from_str(formatted)
                    {
                        entry.extend(span_fields);
                    }
                    Value::Object(entry)
                })
                .collect();
            if !spans.is_empty() {
                line.insert("spans".into(), Value::Array(spans));
            }
        }
        // The names above are what Cloud Logging reads; a field of the same name does not
        // displace them.
        for (name, value) in fields {
            line.entry(name).or_insert(value);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields as JSON values, numbers and booleans as themselves.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = Number::from_f64(value).map_or_else(|| value.to_string().into(), Value::Number);
        self.0.insert(field.name().into(), value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::audit::log_event;
    use crate::audit::read_checkpoints;
    use crate::domain::AuditAction;
    use crate::store::AuditEvent;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines `f` logs through the formatter.
    fn logged(f: impl FnOnce()) -> Vec<Value> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(CloudLogging)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect()
    }

    fn applied(seq: i64) -> AuditEvent {
        AuditEvent {
            seq,
            at: 0,
            actor: "breakglass-broker".into(),
            actor_issuer: None,
            actor_subject: None,
            action: AuditAction::Applied.as_str().into(),
            request_id: Some("r1".into()),
            ticket: Some("INC-7".into()),
            target: Some("prod-gke".into()),
            namespace: Some("payments".into()),
            detail: serde_json::json!({ "approvers": ["bob", "carol"] }),
            prev_hash: "1".repeat(64),
            hash: "a".repeat(64),
        }
    }

    #[test]
    fn lines_carry_the_severity_cloud_logging_reads() {
        let lines = logged(|| {
            let span = tracing::info_span!("request", method = "GET");
            let _entered = span.enter();
            tracing::warn!(attempts = 3_i64, "target unavailable");
            tracing::error!("boom");
        });
        assert_eq!(lines[0]["severity"], "WARNING");
        assert_eq!(lines[0]["message"], "target unavailable");
        assert_eq!(lines[0]["attempts"], 3);
        assert_eq!(lines[0]["spans"][0]["method"], "GET");
        assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(lines[1]["severity"], "ERROR");
    }

    #[test]
    fn an_audit_event_is_logged_whole_and_an_apply_leaves_a_checkpoint() {
        let event = applied(41);
        let lines = logged(|| log_event(&event));
        assert_eq!(lines.len(), 2, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["severity"], "NOTICE");
        assert_eq!(line["target"], "audit");
        assert_eq!(line["seq"], 41);
        assert_eq!(line["ticket"], "INC-7");
        assert_eq!(line["prev_hash"], event.prev_hash);
        assert_eq!(line["detail"], r#"{"approvers":["bob","carol"]}"#);
        assert_eq!(
            line["message"],
            format!(
                "audit: {} by breakglass-broker (INC-7)",
                AuditAction::Applied
            )
        );
        assert_eq!(lines[1]["checkpoint"], true);
        assert_eq!(lines[1]["severity"], "NOTICE");

        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let checkpoints = read_checkpoints(text.as_bytes()).expect("reads back");
        assert_eq!(
            checkpoints.len(),
            1,
            "the event line and the checkpoint agree"
        );
        assert_eq!(
            (checkpoints[0].seq, checkpoints[0].hash.as_str()),
            (41, event.hash.as_str())
        );
    }

    #[test]
    fn an_ordinary_event_leaves_no_checkpoint_until_the_count_comes_round() {
        let mut event = applied(999);
        event.action = AuditAction::Created.as_str().into();
        assert_eq!(logged(|| log_event(&event)).len(), 1);
        event.seq = 1000;
        let lines = logged(|| log_event(&event));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["reason"], "event count");
    }
}
