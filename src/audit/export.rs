//! Audit events as CSV or JSON Lines, encoded a chunk at a time so an export of any size runs
//! in constant memory.
//!
//! Both carry every column, `prev_hash` and `hash` included, in `seq` order: an export is a
//! copy of the chain that can be checked on its own.
//!
//! CSV quoting is the `csv` crate's (RFC 4180: fields with commas, quotes or line breaks are
//! quoted, quotes doubled). A spreadsheet would also run a cell that starts with `=`, `+`,
//! `-` or `@` as a formula (tab and carriage return too, in some), so such cells get a
//! leading `'`, which spreadsheets take as "text". That changes those cells' bytes: the JSON
//! Lines export is the exact one.

use serde::Deserialize;

use crate::clock::rfc3339;
use crate::domain::digest::canonical_json;
use crate::store::AuditEvent;

/// The columns of the CSV export, in order.
pub const CSV_COLUMNS: [&str; 13] = [
    "seq",
    "at",
    "actor",
    "actor_issuer",
    "actor_subject",
    "action",
    "request_id",
    "ticket",
    "target",
    "namespace",
    "detail",
    "prev_hash",
    "hash",
];

/// How much encoded output to gather before handing it on as one chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Jsonl => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Text a spreadsheet would not run as a formula.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Encodes events one by one; [`Encoder::take`] hands over what is ready.
pub struct Encoder {
    format: Format,
    /// Replaced by a fresh writer at each [`Encoder::take`]: the writer's output is reached
    /// only by consuming it.
    csv: csv::Writer<Vec<u8>>,
    jsonl: Vec<u8>,
}

impl Encoder {
    /// An encoder whose output starts with the CSV header row, for CSV.
    pub fn new(format: Format) -> Result<Encoder, csv::Error> {
        let mut csv = csv::Writer::from_writer(Vec::with_capacity(CHUNK_BYTES));
        if format == Format::Csv {
            csv.write_record(CSV_COLUMNS)?;
        }
        Ok(Encoder {
            format,
            csv,
            jsonl: Vec::with_capacity(CHUNK_BYTES),
        })
    }

    pub fn push(&mut self, event: &AuditEvent) -> Result<(), csv::Error> {
        match self.format {
            Format::Jsonl => {
                serde_json::to_writer(&mut self.jsonl, event).map_err(std::io::Error::from)?;
                self.jsonl.push(b'\n');
            }
            Format::Csv => {
                let detail = canonical_json(&event.detail);
                let (seq, at) = (event.seq.to_string(), rfc3339(event.at));
                fn text(v: &Option<String>) -> &str {
                    v.as_deref().unwrap_or_default()
                }
                let cells: [&str; 13] = [
                    &seq,
                    &at,
                    &event.actor,
                    text(&event.actor_issuer),
                    text(&event.actor_subject),
                    &event.action,
                    text(&event.request_id),
                    text(&event.ticket),
                    text(&event.target),
                    text(&event.namespace),
                    &detail,
                    &event.prev_hash,
                    &event.hash,
                ];
                for cell in cells {
                    self.csv.write_field(spreadsheet_safe(cell).as_bytes())?;
                }
                self.csv.write_record(None::<&[u8]>)?;
            }
        }
        Ok(())
    }

    /// Roughly how many bytes are waiting (the CSV writer keeps a small buffer of its own).
    pub fn pending(&self) -> usize {
        match self.format {
            Format::Jsonl => self.jsonl.len(),
            Format::Csv => self.csv.get_ref().len(),
        }
    }

    /// Everything encoded so far, leaving the encoder empty.
    pub fn take(&mut self) -> Result<Vec<u8>, csv::Error> {
        match self.format {
            Format::Jsonl => Ok(std::mem::replace(
                &mut self.jsonl,
                Vec::with_capacity(CHUNK_BYTES),
            )),
            Format::Csv => {
                let fresh = csv::Writer::from_writer(Vec::with_capacity(CHUNK_BYTES));
                std::mem::replace(&mut self.csv, fresh)
                    .into_inner()
                    .map_err(|e| csv::Error::from(e.into_error()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(actor: &str, detail: serde_json::Value) -> AuditEvent {
        AuditEvent {
            seq: 7,
            at: 0,
            actor: actor.into(),
            actor_issuer: None,
            actor_subject: None,
            action: crate::domain::AuditAction::Created.as_str().into(),
            request_id: Some("r1".into()),
            ticket: Some("INC-1".into()),
            target: None,
            namespace: Some("prod".into()),
            detail,
            prev_hash: "p".into(),
            hash: "h".into(),
        }
    }

    fn csv_of(events: &[AuditEvent]) -> String {
        let mut encoder = Encoder::new(Format::Csv).expect("encoder");
        for e in events {
            encoder.push(e).expect("push");
        }
        String::from_utf8(encoder.take().expect("take")).expect("utf-8")
    }

    #[test]
    fn cells_that_a_spreadsheet_would_run_are_defused() {
        for formula in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(spreadsheet_safe(formula), format!("'{formula}"));
        }
        assert_eq!(spreadsheet_safe("alice"), "alice");
        assert_eq!(spreadsheet_safe(""), "");
    }

    #[test]
    fn csv_quotes_commas_quotes_and_newlines_and_reads_back() {
        let text = csv_of(&[event(
            "=HYPERLINK(\"http://x\")",
            json!({ "comment": "a, \"b\"\nc" }),
        )]);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().expect("headers").clone();
        assert_eq!(headers.iter().collect::<Vec<_>>(), CSV_COLUMNS);
        let row = reader.records().next().expect("a row").expect("parses");
        assert_eq!(&row[0], "7");
        assert_eq!(&row[1], "1970-01-01T00:00:00.000Z");
        assert_eq!(&row[2], "'=HYPERLINK(\"http://x\")");
        assert_eq!(&row[3], "", "no issuer (the broker acted) is an empty cell");
        assert_eq!(&row[8], "", "no target is an empty cell");
        assert_eq!(&row[10], r#"{"comment":"a, \"b\"\nc"}"#);
    }

    #[test]
    fn jsonl_is_one_event_per_line() {
        let mut encoder = Encoder::new(Format::Jsonl).expect("encoder");
        encoder
            .push(&event("alice", json!({"a": "x\ny"})))
            .expect("push");
        encoder.push(&event("bob", json!({}))).expect("push");
        let text = String::from_utf8(encoder.take().expect("take")).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["actor"], "bob");
        assert_eq!(lines[0]["detail"]["a"], "x\ny");
        assert!(encoder.take().expect("take").is_empty(), "taken once");
    }
}
