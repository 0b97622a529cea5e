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

use std::io::Write;

use serde::Deserialize;
use serde_json::Value;

use crate::clock::write_rfc3339;
use crate::domain::canonical_text::is_canonical;
use crate::domain::chain::{json_optional, json_text};
use crate::domain::digest::canonical_json;
use crate::store::{AuditFilter, EventRef, RangeSink, RowRef, Store};

/// The columns of the CSV export, in order.
pub const CSV_COLUMNS: [&str; 13] = crate::store::AUDIT_COLUMNS;

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

/// Why an event could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Csv(#[from] csv::Error),
    /// The stored `detail` is not JSON (someone edited the database): an export cannot show
    /// it as the event's detail, and a cut-off file is better than a wrong one.
    #[error("event {seq}: the stored detail is not JSON: {source}")]
    Detail {
        seq: i64,
        #[source]
        source: serde_json::Error,
    },
    /// The history could not be read.
    #[error("reading the audit history: {0}")]
    Store(String),
    /// A row that does not read as an event (see [`RowRef::Unreadable`]).
    #[error("event {}: it cannot be read ({why})", seq.map_or("?".to_owned(), |s| s.to_string()))]
    Unreadable { seq: Option<i64>, why: String },
}

/// The first characters that make a spreadsheet run a cell (all ASCII, so a cell's first byte
/// tells).
const FORMULA_STARTS: &[u8] = b"=+-@\t\r";

fn runs_as_formula(cell: &[u8]) -> bool {
    cell.first()
        .is_some_and(|first| FORMULA_STARTS.contains(first))
}

/// Text a spreadsheet would not run as a formula.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if runs_as_formula(cell.as_bytes()) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// An event's `detail` as the export writes it: the canonical JSON of the stored value.
///
/// The store writes `detail` in canonical form, so the stored text is almost always already
/// what parsing it and writing it out again would give, and goes out as it is (see
/// [`is_canonical`]); only a text that is not (edited in the database) is parsed and written
/// out again. Either way the bytes are those of the parsed value written out, which for a
/// parsed `Value` are the same whether serde_json or `canonical_json` writes them (its map
/// keeps keys sorted).
enum Detail<'a> {
    AsStored(&'a str),
    Rewritten(String),
}

impl<'a> Detail<'a> {
    fn of(event: &EventRef<'a>) -> Result<Detail<'a>, EncodeError> {
        if is_canonical(event.detail) {
            return Ok(Detail::AsStored(event.detail));
        }
        let value: Value =
            serde_json::from_str(event.detail).map_err(|source| EncodeError::Detail {
                seq: event.seq,
                source,
            })?;
        Ok(Detail::Rewritten(canonical_json(&value)))
    }

    fn as_str(&self) -> &str {
        match self {
            Detail::AsStored(text) => text,
            Detail::Rewritten(text) => text,
        }
    }
}

/// Encodes events one by one; [`Encoder::take`] hands over what is ready.
pub struct Encoder {
    format: Format,
    /// Replaced by a fresh writer at each [`Encoder::take`]: the writer's output is reached
    /// only by consuming it.
    csv: csv::Writer<Vec<u8>>,
    jsonl: Vec<u8>,
    /// Room to write a CSV row's numbers and times as text.
    scratch: Vec<u8>,
}

impl Encoder {
    /// An encoder whose output starts with the CSV header row, for CSV.
    pub fn new(format: Format) -> Result<Encoder, csv::Error> {
        let mut encoder = Encoder::continuing(format);
        if format == Format::Csv {
            encoder.csv.write_record(CSV_COLUMNS)?;
        }
        Ok(encoder)
    }

    /// An encoder for events that follow others already encoded: no header row.
    pub fn continuing(format: Format) -> Encoder {
        Encoder {
            format,
            csv: csv::Writer::from_writer(Vec::with_capacity(CHUNK_BYTES)),
            jsonl: Vec::with_capacity(CHUNK_BYTES),
            scratch: Vec::with_capacity(64),
        }
    }

    pub fn push(&mut self, event: &EventRef<'_>) -> Result<(), EncodeError> {
        let detail = Detail::of(event)?;
        match self.format {
            Format::Jsonl => {
                write_jsonl(&mut self.jsonl, event, detail.as_str());
                Ok(())
            }
            Format::Csv => self.push_csv(event, detail.as_str()),
        }
    }

    fn push_csv(&mut self, event: &EventRef<'_>, detail: &str) -> Result<(), EncodeError> {
        // `seq` and `at` as text, side by side in one buffer kept from event to event.
        let scratch = &mut self.scratch;
        scratch.clear();
        let _ = write!(scratch, "{}", event.seq);
        let seq_end = scratch.len();
        write_rfc3339(scratch, event.at);
        let (seq, at) = scratch.split_at(seq_end);
        fn text(v: Option<&str>) -> &[u8] {
            v.unwrap_or_default().as_bytes()
        }
        let cells: [&[u8]; 13] = [
            seq,
            at,
            event.actor.as_bytes(),
            text(event.actor_issuer),
            text(event.actor_subject),
            event.action.as_bytes(),
            text(event.request_id),
            text(event.ticket),
            text(event.target),
            text(event.namespace),
            detail.as_bytes(),
            event.prev_hash.as_bytes(),
            event.hash.as_bytes(),
        ];
        for cell in cells {
            if runs_as_formula(cell) {
                self.csv.write_field([b"'", cell].concat())?;
            } else {
                self.csv.write_field(cell)?;
            }
        }
        self.csv.write_record(None::<&[u8]>)?;
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

/// One JSON Lines record, byte for byte what serde_json writes for the event as the search
/// API shows it ([`crate::store::AuditEvent`]: the person's two fields only when present,
/// `at` as RFC 3339), `detail` given as its JSON text. Written field by field rather than
/// through a derived `Serialize` so the stored detail text goes in as it is.
fn write_jsonl(out: &mut Vec<u8>, event: &EventRef<'_>, detail: &str) {
    let _ = write!(out, "{{\"seq\":{},\"at\":\"", event.seq);
    write_rfc3339(out, event.at);
    out.extend_from_slice(b"\",\"actor\":");
    json_text(out, event.actor);
    if let Some(issuer) = event.actor_issuer {
        out.extend_from_slice(b",\"actor_issuer\":");
        json_text(out, issuer);
    }
    if let Some(subject) = event.actor_subject {
        out.extend_from_slice(b",\"actor_subject\":");
        json_text(out, subject);
    }
    out.extend_from_slice(b",\"action\":");
    json_text(out, event.action);
    out.extend_from_slice(b",\"request_id\":");
    json_optional(out, event.request_id);
    out.extend_from_slice(b",\"ticket\":");
    json_optional(out, event.ticket);
    out.extend_from_slice(b",\"target\":");
    json_optional(out, event.target);
    out.extend_from_slice(b",\"namespace\":");
    json_optional(out, event.namespace);
    out.extend_from_slice(b",\"detail\":");
    out.extend_from_slice(detail.as_bytes());
    out.extend_from_slice(b",\"prev_hash\":");
    json_text(out, event.prev_hash);
    out.extend_from_slice(b",\"hash\":");
    json_text(out, event.hash);
    out.extend_from_slice(b"}\n");
}

/// Where an export's output goes, a chunk at a time; the reader ends it with an error if the
/// export fails midway.
pub type Output = tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>;

/// Connections (and cores) an export of the whole history reads and encodes on.
const WORKERS: usize = 2;

/// Encodes every event the filter matches, in order, handing the output to `out` a chunk at a
/// time; stops quietly when `out` is closed (the client went away). An error midway is
/// returned for the caller to end the output with.
///
/// An export of everything (or of a stretch of seqs) reads the history in ranges on several
/// connections at once, each encoded where it was read ([`Store::audit_ranges`]); an export
/// narrowed by any other filter reads one ordered stream of the matches, which the indexes
/// serve directly.
pub async fn export(
    store: &Store,
    filter: &AuditFilter,
    format: Format,
    out: &Output,
) -> Result<(), EncodeError> {
    let header = Encoder::new(format)?.take()?;
    if !header.is_empty() && out.send(Ok(header)).await.is_err() {
        return Ok(());
    }
    if !only_by_seq(filter) {
        return export_matches(store, filter, format, out).await;
    }
    let Some((first, last)) = store.audit_seq_bounds().await.map_err(store_failed)? else {
        return Ok(());
    };
    let after = filter.after_seq.map_or(first.saturating_sub(1), |after| {
        after.max(first.saturating_sub(1))
    });
    let through = filter
        .before_seq
        .map_or(last, |before| last.min(before.saturating_sub(1)));
    let sinks = (0..WORKERS).map(|_| RangeEncoder::new(format)).collect();
    let mut ranges = store
        .audit_ranges(after, through, sinks)
        .await
        .map_err(store_failed)?;
    while let Some(made) = ranges.next().await {
        let chunk = made.map_err(store_failed)??;
        if out.send(Ok(chunk)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether the filter narrows by nothing but seq.
fn only_by_seq(filter: &AuditFilter) -> bool {
    let AuditFilter {
        request_id,
        ticket,
        actor,
        actor_subject,
        target,
        namespace,
        action,
        since,
        until,
        before_seq: _,
        after_seq: _,
        oldest_first,
        limit: _,
    } = filter;
    [
        request_id,
        ticket,
        actor,
        actor_subject,
        target,
        namespace,
        action,
    ]
    .iter()
    .all(|f| f.is_none())
        && since.is_none()
        && until.is_none()
        && *oldest_first
}

/// The events a narrower filter matches, read as one ordered stream.
async fn export_matches(
    store: &Store,
    filter: &AuditFilter,
    format: Format,
    out: &Output,
) -> Result<(), EncodeError> {
    use futures_util::StreamExt;
    let mut encoder = Encoder::continuing(format);
    let mut events = store.audit_stream(filter);
    while let Some(event) = events.next().await {
        encoder.push(&event.map_err(store_failed)?.view())?;
        if encoder.pending() >= CHUNK_BYTES && out.send(Ok(encoder.take()?)).await.is_err() {
            return Ok(());
        }
    }
    let last = encoder.take()?;
    if !last.is_empty() {
        // Nobody left to tell if the client has gone.
        let _ = out.send(Ok(last)).await;
    }
    Ok(())
}

fn store_failed(e: crate::store::StoreError) -> EncodeError {
    EncodeError::Store(e.to_string())
}

/// Encodes the ranges one worker reads (see [`export`]); the first row that cannot be encoded
/// fails its range.
struct RangeEncoder {
    encoder: Encoder,
    failed: Option<EncodeError>,
}

impl RangeEncoder {
    fn new(format: Format) -> RangeEncoder {
        RangeEncoder {
            encoder: Encoder::continuing(format),
            failed: None,
        }
    }
}

impl RangeSink for RangeEncoder {
    type Made = Result<Vec<u8>, EncodeError>;

    fn row(&mut self, row: RowRef<'_>) {
        if self.failed.is_some() {
            return;
        }
        let pushed = match row {
            RowRef::Event(event) => self.encoder.push(&event),
            RowRef::Unreadable { seq, why } => Err(EncodeError::Unreadable { seq, why }),
        };
        self.failed = pushed.err();
    }

    fn finish(&mut self) -> Self::Made {
        let encoded = self.encoder.take()?;
        match self.failed.take() {
            Some(failed) => Err(failed),
            None => Ok(encoded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339;
    use crate::domain::canonical_text::tests::any_value;
    use crate::store::{AuditEvent, StoredEvent};
    use proptest::prelude::*;
    use serde_json::json;

    fn event(actor: &str, detail: Value) -> StoredEvent {
        StoredEvent {
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
            detail: canonical_json(&detail),
            prev_hash: "p".into(),
            hash: "h".into(),
        }
    }

    fn encoded(format: Format, events: &[StoredEvent]) -> Result<String, EncodeError> {
        let mut encoder = Encoder::new(format)?;
        for e in events {
            encoder.push(&e.view())?;
        }
        Ok(String::from_utf8(encoder.take()?).expect("utf-8"))
    }

    fn csv_of(events: &[StoredEvent]) -> String {
        encoded(Format::Csv, events).expect("encodes")
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
            .push(&event("alice", json!({"a": "x\ny"})).view())
            .expect("push");
        encoder.push(&event("bob", json!({})).view()).expect("push");
        let text = String::from_utf8(encoder.take().expect("take")).expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["actor"], "bob");
        assert_eq!(lines[0]["detail"]["a"], "x\ny");
        assert!(encoder.take().expect("take").is_empty(), "taken once");
    }

    #[test]
    fn a_stored_detail_edited_into_something_other_than_json_stops_the_export() {
        let mut edited = event("alice", json!({}));
        edited.detail = "redacted".into();
        for format in [Format::Csv, Format::Jsonl] {
            let failed = encoded(format, &[edited.clone()]);
            assert!(
                matches!(failed, Err(EncodeError::Detail { seq: 7, .. })),
                "{failed:?}"
            );
        }
    }

    /// The export as it was first written, from the event as the search API reads it (the
    /// stored detail parsed): every byte the encoder writes must be this.
    fn reference(format: Format, stored: &StoredEvent) -> String {
        let event = AuditEvent {
            seq: stored.seq,
            at: stored.at,
            actor: stored.actor.clone(),
            actor_issuer: stored.actor_issuer.clone(),
            actor_subject: stored.actor_subject.clone(),
            action: stored.action.clone(),
            request_id: stored.request_id.clone(),
            ticket: stored.ticket.clone(),
            target: stored.target.clone(),
            namespace: stored.namespace.clone(),
            detail: serde_json::from_str(&stored.detail).expect("JSON"),
            prev_hash: stored.prev_hash.clone(),
            hash: stored.hash.clone(),
        };
        match format {
            Format::Jsonl => format!("{}\n", serde_json::to_string(&event).expect("JSON")),
            Format::Csv => {
                let mut csv = csv::Writer::from_writer(Vec::new());
                let detail = canonical_json(&event.detail);
                let (seq, at) = (event.seq.to_string(), rfc3339(event.at));
                let text = |v: &Option<String>| v.clone().unwrap_or_default();
                let cells = [
                    seq,
                    at,
                    event.actor.clone(),
                    text(&event.actor_issuer),
                    text(&event.actor_subject),
                    event.action.clone(),
                    text(&event.request_id),
                    text(&event.ticket),
                    text(&event.target),
                    text(&event.namespace),
                    detail,
                    event.prev_hash.clone(),
                    event.hash.clone(),
                ];
                for cell in &cells {
                    csv.write_field(spreadsheet_safe(cell).as_bytes())
                        .expect("writes");
                }
                csv.write_record(None::<&[u8]>).expect("writes");
                String::from_utf8(csv.into_inner().expect("flushes")).expect("utf-8")
            }
        }
    }

    /// Texts, awkward ones often: formulas, quotes, separators, control characters, Unicode.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[=+@\\-\t\r\n\",;'a-z0-9 \\\\\u{1}\u{7f}é😀]{0,12}",
            any::<String>(),
        ]
    }

    fn any_stored_event() -> impl Strategy<Value = StoredEvent> {
        let texts = (
            any_text(),
            prop::option::of(any_text()),
            prop::option::of(any_text()),
            any_text(),
            prop::option::of(any_text()),
            prop::option::of(any_text()),
            prop::option::of(any_text()),
            prop::option::of(any_text()),
        );
        // The detail as the store writes it, or as someone may have rewritten it: still JSON,
        // but spaced out, or with its keys out of order.
        let detail = (any_value(), 0..3_u8).prop_map(|(value, how)| match how {
            0 => canonical_json(&value),
            1 => serde_json::to_string_pretty(&value).expect("JSON"),
            _ => match &value {
                Value::Object(map) => {
                    let fields: Vec<String> = map
                        .iter()
                        .rev()
                        .map(|(k, v)| format!("{}:{}", json!(k), canonical_json(v)))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }
                _ => canonical_json(&value),
            },
        });
        (
            any::<i64>(),
            any::<i64>(),
            texts,
            detail,
            any_text(),
            any_text(),
        )
            .prop_map(|(seq, at, texts, detail, prev_hash, hash)| {
                let (
                    actor,
                    actor_issuer,
                    actor_subject,
                    action,
                    request_id,
                    ticket,
                    target,
                    namespace,
                ) = texts;
                StoredEvent {
                    seq,
                    at,
                    actor,
                    actor_issuer,
                    actor_subject,
                    action,
                    request_id,
                    ticket,
                    target,
                    namespace,
                    detail,
                    prev_hash,
                    hash,
                }
            })
    }

    proptest! {
        #[test]
        fn every_event_exports_byte_for_byte_as_it_did_when_the_detail_was_parsed(
            stored in any_stored_event()
        ) {
            for format in [Format::Csv, Format::Jsonl] {
                let mut encoder = Encoder::continuing(format);
                encoder.push(&stored.view()).expect("encodes");
                let text = String::from_utf8(encoder.take().expect("take")).expect("utf-8");
                prop_assert_eq!(text, reference(format, &stored));
            }
        }
    }
}
