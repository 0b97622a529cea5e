//! Reading long stretches of the audit chain fast: for exporting the whole history and for
//! verifying it, which read every event there is.
//!
//! The stretch `(after, through]` is cut into ranges of consecutive seqs. Each of a few
//! workers reads every few ranges on a connection of its own (worker `w` takes ranges `w`,
//! `w + workers`, ...), feeds their rows to a [`RangeSink`] (which encodes or hashes them as
//! they go by) and hands what the sink made of each range over a channel that holds one. The
//! reader ([`InOrder`]) takes the ranges back in order, worker after worker, so what it sees
//! is exactly what one ordered read of the stretch would give, while the workers read, decode
//! and hash side by side on as many cores. Memory stays bounded by a few ranges' worth,
//! however long the history.
//!
//! From an SQLite file the rows are read with rusqlite on blocking threads, their values
//! borrowed in place; sqlx's SQLite driver would copy every value and hand every row from its
//! worker thread to the async side one at a time, which is where reading a million events
//! spent most of its time. PostgreSQL (and an in-memory SQLite database, which another
//! connection cannot open) is read through the pool as everything else is, each row decoded
//! as a [`StoredEvent`].
//!
//! A row whose values are not of the types the schema gives (SQLite keeps whatever type a
//! statement writes) reaches the sink as [`RowRef::Unreadable`], at its place, so that
//! verification names it as an edit rather than stopping.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use sqlx::FromRow;
use tokio::sync::mpsc;

use super::audit::StoredEvent;
use super::{Backend, Result, Store, StoreError};
use crate::domain::chain::{self, Fields};

/// Seqs per range: big enough that a range's query costs little beside its rows (a few
/// microseconds against a few hundred), small enough that the few ranges in flight (an
/// export's encoded ranges are about 90 KB each) hold little memory.
pub const RANGE_ROWS: i64 = 256;

/// The page cache of a reader's own SQLite connection, in KiB. The ranges are read once, in
/// order, so a cache beyond the index's upper levels buys nothing, and SQLite's default
/// (2 MiB a connection) would only add to the memory an export holds.
const READER_CACHE_KIB: i64 = 512;

/// The stored events with `$1 < seq <= $2`, in order. Both drivers number placeholders so.
const RANGE_SQL: &str = "SELECT seq, at, actor, actor_issuer, actor_subject, action, request_id, \
                         ticket, target, namespace, detail, prev_hash, hash FROM audit_events \
                         WHERE seq > $1 AND seq <= $2 ORDER BY seq";

/// An event as the database holds it, its text borrowed from the row being read.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'r> {
    pub seq: i64,
    pub at: i64,
    pub actor: &'r str,
    pub actor_issuer: Option<&'r str>,
    pub actor_subject: Option<&'r str>,
    pub action: &'r str,
    pub request_id: Option<&'r str>,
    pub ticket: Option<&'r str>,
    pub target: Option<&'r str>,
    pub namespace: Option<&'r str>,
    pub detail: &'r str,
    pub prev_hash: &'r str,
    pub hash: &'r str,
}

impl EventRef<'_> {
    /// The hash this event's content, chained to its stored `prev_hash`, must have (see
    /// [`StoredEvent::recomputed_hash`]).
    pub fn recomputed_hash(&self) -> String {
        let fields = Fields {
            at: self.at,
            actor: self.actor,
            person: self.actor_issuer.zip(self.actor_subject),
            action: self.action,
            request_id: self.request_id,
            ticket: self.ticket,
            target: self.target,
            namespace: self.namespace,
        };
        chain::hash_text(self.prev_hash, self.seq, &fields, self.detail)
    }
}

impl StoredEvent {
    /// The event with its text borrowed.
    pub fn view(&self) -> EventRef<'_> {
        EventRef {
            seq: self.seq,
            at: self.at,
            actor: &self.actor,
            actor_issuer: self.actor_issuer.as_deref(),
            actor_subject: self.actor_subject.as_deref(),
            action: &self.action,
            request_id: self.request_id.as_deref(),
            ticket: self.ticket.as_deref(),
            target: self.target.as_deref(),
            namespace: self.namespace.as_deref(),
            detail: &self.detail,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        }
    }
}

/// One row of a range: an event, or a row that does not read as one (see
/// [`super::ChainRow`]).
#[derive(Debug)]
pub enum RowRef<'r> {
    Event(EventRef<'r>),
    Unreadable { seq: Option<i64>, why: String },
}

/// What a worker does with the rows of each range it reads.
pub trait RangeSink: Send + 'static {
    /// What the sink makes of one range.
    type Made: Send + 'static;
    /// The next row of the range being read.
    fn row(&mut self, row: RowRef<'_>);
    /// The range has been read: what was made of it, leaving the sink ready for the next.
    fn finish(&mut self) -> Self::Made;
}

/// What the workers made of each range, handed over in range order.
pub struct InOrder<M> {
    receivers: Vec<mpsc::Receiver<Result<M>>>,
    next: usize,
    ranges: usize,
    _workers: Vec<AbortOnDrop>,
}

/// Ends a worker when the reader goes away first (a problem found, a client gone). A worker
/// on a blocking thread ends at its next hand-over instead, which fails once the reader is
/// gone.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<M> InOrder<M> {
    /// What was made of the next range; `None` once every range has been handed over.
    pub async fn next(&mut self) -> Option<Result<M>> {
        if self.next == self.ranges {
            return None;
        }
        let worker = self.next % self.receivers.len();
        self.next += 1;
        match self.receivers[worker].recv().await {
            Some(made) => Some(made),
            // A worker that stopped without handing its range over (it panicked): never
            // mistake that for the end of the stretch.
            None => {
                self.next = self.ranges;
                Some(Err(StoreError::Other(sqlx::Error::WorkerCrashed)))
            }
        }
    }
}

/// Where a worker reads from.
#[derive(Clone)]
enum Source {
    SqliteFile(Arc<Path>),
    Pool(sqlx::AnyPool),
}

impl Store {
    /// The lowest and highest seq the history holds now; `None` when it is empty.
    pub async fn audit_seq_bounds(&self) -> Result<Option<(i64, i64)>> {
        use sqlx::Row;
        let row = sqlx::query("SELECT MIN(seq) AS first, MAX(seq) AS last FROM audit_events")
            .fetch_one(self.pool())
            .await?;
        let first: Option<i64> = row.try_get("first")?;
        let last: Option<i64> = row.try_get("last")?;
        Ok(first.zip(last))
    }

    /// Reads the stored events with `after < seq <= through` in ranges of [`RANGE_ROWS`]
    /// seqs, one worker per sink, and hands over what the sinks made of each range in order
    /// (see the module documentation).
    ///
    /// Ranges are cut by seq, so they pay off only where the seqs are about as many as the
    /// events: a stretch whose seqs are mostly missing (a seq edited to a far-off value, a
    /// history cut short under a head record left far ahead) is read as one range instead,
    /// rather than as countless empty ones.
    pub async fn audit_ranges<S: RangeSink>(
        &self,
        after: i64,
        through: i64,
        sinks: Vec<S>,
    ) -> Result<InOrder<S::Made>> {
        let span = i128::from(through) - i128::from(after);
        let range_rows = if span <= 0 {
            1
        } else {
            let held = self.audit_count(after, through).await?;
            let slack = i128::from(RANGE_ROWS) * sinks.len() as i128;
            if span <= i128::from(held) + slack {
                RANGE_ROWS
            } else {
                i64::try_from(span).unwrap_or(i64::MAX)
            }
        };
        Ok(self.read_ranges(after, through, range_rows, sinks))
    }

    /// How many events `after < seq <= through` holds. From an SQLite file, counted on a
    /// reader's connection: counting walks the whole seq index, and the pool's connections
    /// would keep what it read in their larger page caches for good.
    async fn audit_count(&self, after: i64, through: i64) -> Result<i64> {
        const SQL: &str = "SELECT COUNT(*) AS held FROM audit_events WHERE seq > $1 AND seq <= $2";
        match (self.backend(), &self.sqlite_file) {
            (Backend::Sqlite, Some(file)) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || {
                    open_sqlite(&file)?
                        .query_row(SQL, (after, through), |row| row.get(0))
                        .map_err(sqlite_error)
                })
                .await
                .map_err(|_| StoreError::Other(sqlx::Error::WorkerCrashed))?
            }
            _ => {
                use sqlx::Row;
                let row = sqlx::query(SQL)
                    .bind(after)
                    .bind(through)
                    .fetch_one(self.pool())
                    .await?;
                Ok(row.try_get("held")?)
            }
        }
    }

    fn read_ranges<S: RangeSink>(
        &self,
        after: i64,
        through: i64,
        range_rows: i64,
        sinks: Vec<S>,
    ) -> InOrder<S::Made> {
        let span = i128::from(through) - i128::from(after);
        let ranges = if span <= 0 {
            0
        } else {
            usize::try_from((span + i128::from(range_rows) - 1) / i128::from(range_rows))
                .unwrap_or(usize::MAX)
        };
        let workers = sinks.len().max(1);
        let source = match (self.backend(), &self.sqlite_file) {
            (Backend::Sqlite, Some(file)) => Source::SqliteFile(file.clone()),
            _ => Source::Pool(self.pool().clone()),
        };
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for (worker, sink) in sinks.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(1);
            receivers.push(rx);
            let mine = (worker..ranges).step_by(workers).map(move |k| {
                let from = after.saturating_add((k as i64).saturating_mul(range_rows));
                (from, from.saturating_add(range_rows).min(through))
            });
            let handle = match &source {
                Source::SqliteFile(file) => {
                    let file = file.clone();
                    tokio::task::spawn_blocking(move || read_sqlite_ranges(&file, mine, sink, tx))
                }
                Source::Pool(pool) => tokio::spawn(read_pool_ranges(pool.clone(), mine, sink, tx)),
            };
            handles.push(AbortOnDrop(handle));
        }
        InOrder {
            receivers,
            next: 0,
            ranges,
            _workers: handles,
        }
    }
}

/// A worker on a blocking thread, reading its ranges from the SQLite file on a read-only
/// connection of its own.
fn read_sqlite_ranges<S: RangeSink>(
    file: &Path,
    ranges: impl Iterator<Item = (i64, i64)>,
    mut sink: S,
    tx: mpsc::Sender<Result<S::Made>>,
) {
    let connection = match open_sqlite(file) {
        Ok(connection) => connection,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let mut statement = match connection.prepare(RANGE_SQL) {
        Ok(statement) => statement,
        Err(e) => {
            let _ = tx.blocking_send(Err(sqlite_error(e)));
            return;
        }
    };
    for (after, through) in ranges {
        let made =
            read_sqlite_range(&mut statement, after, through, &mut sink).map(|()| sink.finish());
        let failed = made.is_err();
        if tx.blocking_send(made).is_err() || failed {
            return;
        }
    }
}

fn open_sqlite(file: &Path) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let connection = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error)?;
    // As the pool's connections wait for a writer's lock.
    connection
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite_error)?;
    connection
        .pragma_update(None, "cache_size", -READER_CACHE_KIB)
        .map_err(sqlite_error)?;
    Ok(connection)
}

/// An error of rusqlite's, told as sqlx tells a database error it cannot classify: the
/// store's callers already know what to make of that.
fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Other(sqlx::Error::Protocol(format!(
        "reading the audit history: {e}"
    )))
}

fn read_sqlite_range<S: RangeSink>(
    statement: &mut rusqlite::Statement<'_>,
    after: i64,
    through: i64,
    sink: &mut S,
) -> Result<()> {
    let mut rows = statement.query((after, through)).map_err(sqlite_error)?;
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        match event_of(row) {
            Ok(event) => sink.row(RowRef::Event(event)),
            Err(why) => sink.row(RowRef::Unreadable {
                seq: match row.get_ref(0) {
                    Ok(rusqlite::types::ValueRef::Integer(seq)) => Some(seq),
                    _ => None,
                },
                why,
            }),
        }
    }
    Ok(())
}

/// A row of [`RANGE_SQL`] as an event, or why it is not one: a value of another type than
/// the column's (sqlx's decoding, which the pool path uses, refuses the same ones).
fn event_of<'r>(row: &'r rusqlite::Row<'_>) -> std::result::Result<EventRef<'r>, String> {
    use rusqlite::types::ValueRef;
    const NAMES: [&str; 13] = super::AUDIT_COLUMNS;
    let value = |i: usize| row.get_ref(i).map_err(|e| format!("{}: {e}", NAMES[i]));
    let integer = |i: usize| match value(i)? {
        ValueRef::Integer(n) => Ok(n),
        other => Err(format!(
            "{} holds {} where an integer belongs",
            NAMES[i],
            kind(other)
        )),
    };
    let optional_text = |i: usize| match value(i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", NAMES[i])),
        other => Err(format!(
            "{} holds {} where text belongs",
            NAMES[i],
            kind(other)
        )),
    };
    let text = |i: usize| {
        optional_text(i)?.ok_or_else(|| format!("{} holds null where text belongs", NAMES[i]))
    };
    Ok(EventRef {
        seq: integer(0)?,
        at: integer(1)?,
        actor: text(2)?,
        actor_issuer: optional_text(3)?,
        actor_subject: optional_text(4)?,
        action: text(5)?,
        request_id: optional_text(6)?,
        ticket: optional_text(7)?,
        target: optional_text(8)?,
        namespace: optional_text(9)?,
        detail: text(10)?,
        prev_hash: text(11)?,
        hash: text(12)?,
    })
}

fn kind(value: rusqlite::types::ValueRef<'_>) -> &'static str {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => "null",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// A worker on the async runtime, reading its ranges through one connection of the pool,
/// held from the first range to the last rather than taken (and, on PostgreSQL, pinged) again
/// for each.
async fn read_pool_ranges<S: RangeSink>(
    pool: sqlx::AnyPool,
    mut ranges: impl Iterator<Item = (i64, i64)>,
    mut sink: S,
    tx: mpsc::Sender<Result<S::Made>>,
) {
    let Some(first) = ranges.next() else {
        return;
    };
    let mut connection = match pool.acquire().await {
        Ok(connection) => connection,
        Err(e) => {
            let _ = tx.send(Err(e.into())).await;
            return;
        }
    };
    for (after, through) in std::iter::once(first).chain(ranges) {
        let made = read_pool_range(&mut connection, after, through, &mut sink)
            .await
            .map(|()| sink.finish());
        let failed = made.is_err();
        if tx.send(made).await.is_err() || failed {
            return;
        }
    }
}

async fn read_pool_range<S: RangeSink>(
    connection: &mut sqlx::AnyConnection,
    after: i64,
    through: i64,
    sink: &mut S,
) -> Result<()> {
    use sqlx::Row;
    let mut rows = sqlx::query(RANGE_SQL)
        .bind(after)
        .bind(through)
        .fetch(connection);
    while let Some(row) = rows.next().await {
        let row = row?;
        match StoredEvent::from_row(&row) {
            Ok(event) => sink.row(RowRef::Event(event.view())),
            Err(e) => sink.row(RowRef::Unreadable {
                seq: row.try_get("seq").ok(),
                why: e.to_string(),
            }),
        }
    }
    Ok(())
}

/// The file behind an SQLite URL, for readers that open it themselves; `None` for an
/// in-memory database (or a URL sqlx reads otherwise), which only the pool reaches.
pub(super) fn sqlite_file(url: &str) -> Option<Arc<Path>> {
    use std::str::FromStr;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file: PathBuf = options.get_filename().to_path_buf();
    (!file.as_os_str().is_empty()).then(|| Arc::from(file.as_path()))
}
