//! The only place that knows tables. One SQL dialect serves SQLite and PostgreSQL through
//! sqlx's `Any` driver; the migrations are kept per database so each can grow its own.

mod audit;
mod audit_logs;
mod audit_read;
mod audit_search;
mod findings;
mod journal;
mod looks;
mod metrics;
mod outbox;
mod read_cache;
mod request_page;
mod requests;
mod sessions;
mod wal;
mod work;

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyQueryResult};
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use read_cache::ReadCache;

pub use crate::domain::chain::GENESIS_HASH;
pub use audit::{
    AUDIT_COLUMNS, AuditCheck, AuditEvent, ChainHead, ChainRow, NewEvent, StoredEvent, content_hash,
};
pub use audit_read::{EventRef, InOrder, RANGE_ROWS, RangeSink, RowRef};
pub use audit_search::AuditFilter;
pub use findings::{Finding, FindingState};
pub use journal::{ChainingFailure, Journaled, PASS_LIMIT, spawn_chaining};
pub use outbox::{
    DELIVERED, END_MOVED, ENDPOINT_DISABLED, ENDPOINT_MOVED, ENDPOINT_REMOVED, Message, NewMessage,
    REQUEST_ENDED_FIRST,
};
pub use read_cache::TIME_TO_LIVE as READ_CACHE_TTL;
pub use request_page::{Derived, RequestPage, RequestRead};
pub use requests::{
    AppliedObject, Approval, Named, NewRequest, Request, RequestFilter, Visibility,
};
pub use sessions::Session;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What went wrong underneath, sorted by what the caller should tell people.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached: the API answers 503 and nothing changes.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The caller's text holds a character the database cannot store or compare (PostgreSQL
    /// text has no NUL): the API answers 400 and nothing changes.
    #[error("text must not contain NUL characters")]
    Unstorable(#[source] sqlx::Error),
    #[error(transparent)]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e)
        } else if is_unstorable(&e) {
            StoreError::Unstorable(e)
        } else {
            StoreError::Other(e)
        }
    }
}

/// PostgreSQL refuses a NUL in text as an invalid byte sequence (22021) or as a character
/// with no equivalent (22P05), whichever statement it comes in: a filter, an id in a path, a
/// comment in a body. SQLite stores it, so only PostgreSQL needs telling.
fn is_unstorable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|code| code == "22021" || code == "22P05"))
}

/// Whether the error says "the database is not there right now" rather than "this statement is
/// wrong". A PostgreSQL server that shuts down or restarts ends its sessions with an error of
/// class 08 (connection exception) or 57P (operator intervention), and one that is starting
/// answers 57P03; those must read as 503 and a retry, not as a 500.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where transactions and writes run. For PostgreSQL the same pool. For SQLite, which
    /// lets one connection write at a time, a pool of one: writers queue here, each handed the
    /// connection the moment the one before is done, rather than meeting SQLite's lock and
    /// sleeping a millisecond or more in its busy handler before trying again.
    writer: AnyPool,
    backend: Backend,
    /// What views read, kept for a moment; every write of this store makes it stale at once.
    cache: Arc<ReadCache>,
    /// This replica's turns at moving committed audit events into the chain.
    chainer: Arc<journal::Chainer>,
    /// SQLite's log checkpoints, run beside the writes (`wal`); None for PostgreSQL and for
    /// a store that only reads.
    checkpoints: Option<Arc<wal::Checkpoints>>,
    /// The SQLite file, for reading long stretches of the audit chain on connections of
    /// their own (see `audit_read`); `None` for PostgreSQL and in-memory SQLite.
    sqlite_file: Option<Arc<std::path::Path>>,
}

/// A transaction. Committing it makes what views remember stale (see [`ReadCache`]), so
/// nothing this replica wrote is ever hidden from a view that starts after the commit.
pub struct Tx {
    inner: sqlx::Transaction<'static, Any>,
    store: Store,
    /// Audit events were written to the journal in this transaction.
    journaled: bool,
}

impl Tx {
    /// Commits; audit events written in the transaction take their place in the chain just
    /// after, without the commit waiting for it (see [`Store::chain_committed`]).
    pub async fn commit(self) -> Result<()> {
        let committed = self.inner.commit().await;
        // Even when the answer was lost the commit may have happened: forget either way.
        self.store.cache.changed();
        committed?;
        self.store.checkpoint_soon();
        if self.journaled {
            self.store.chain_soon();
        }
        Ok(())
    }
}

/// The transaction's connection, for the statements run in it (`&mut **tx`).
impl Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

/// A statement that may change rows, run on the pool outside a transaction:
/// `sqlx::query(...).bind(...).execute_write(self)`. Like [`Tx::commit`], it makes what views
/// remember stale when it changed a row. Writes on the pool go through this, never through
/// `execute(self.pool())`.
trait ExecuteWrite {
    async fn execute_write(self, store: &Store) -> Result<AnyQueryResult>;
}

impl<'q> ExecuteWrite for sqlx::query::Query<'q, Any, AnyArguments> {
    async fn execute_write(self, store: &Store) -> Result<AnyQueryResult> {
        let done = self.execute(&store.writer).await?;
        if done.rows_affected() > 0 {
            store.cache.changed();
            store.checkpoint_soon();
        }
        Ok(done)
    }
}

/// Whether a connection may change the database; for a PostgreSQL pool that may, how many
/// connections it keeps at most.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite(u32),
    ReadOnly,
}

/// PostgreSQL connections per replica unless `database_connections` says otherwise: on a
/// two-core database with three replicas, 200 approvals at once were answered faster with 8
/// each than with 16, and faster still with 4 (`cargo bench --bench decide`; README).
pub const POSTGRES_CONNECTIONS: u32 = 8;

/// How long a PostgreSQL connection may sit in the pool before it is pinged on its way out
/// (the bypass window of common connection pools, HikariCP's among them). A server that drops
/// connections within this window of their last use fails the one statement each meets; the
/// pool then replaces the connection.
pub const PING_AFTER_IDLE: Duration = Duration::from_millis(500);

impl Backend {
    /// Which database a URL names.
    pub fn of(url: &str) -> anyhow::Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            anyhow::bail!("the database URL must start with sqlite: or postgres:")
        }
    }
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Self::connect_with(url, POSTGRES_CONNECTIONS).await
    }

    /// Connects with at most `connections` to PostgreSQL (`database_connections`); SQLite,
    /// a file in this process, keeps its own number.
    pub async fn connect_with(url: &str, connections: u32) -> anyhow::Result<Store> {
        let store = Self::open(url, Access::ReadWrite(connections)).await?;
        match store.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&store.writer).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&store.writer).await?,
        }
        Ok(store)
    }

    /// Opens an existing database to read its audit history, without running migrations and
    /// with the session set read-only: verification must never change what it verifies, and
    /// must work against a copy or a read replica.
    pub async fn open_for_audit(url: &str) -> anyhow::Result<Store> {
        Self::open(url, Access::ReadOnly).await
    }

    async fn open(url: &str, access: Access) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let options = AnyConnectOptions::from_str(url)?;
        let setup = match (backend, access) {
            // The log is checkpointed beside the writes, never in one (`wal`).
            (Backend::Sqlite, Access::ReadWrite(_)) => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;"
            }
            (Backend::Sqlite, Access::ReadOnly) => {
                "PRAGMA query_only = ON; PRAGMA busy_timeout = 10000;"
            }
            (Backend::Postgres, Access::ReadWrite(_)) => "",
            (Backend::Postgres, Access::ReadOnly) => {
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
            }
        };
        let (connections, acquire_timeout) = match (backend, access) {
            (_, Access::ReadOnly) => (2, Duration::from_secs(10)),
            (Backend::Sqlite, Access::ReadWrite(_)) => (8, Duration::from_secs(3)),
            (Backend::Postgres, Access::ReadWrite(connections)) => {
                (connections, Duration::from_secs(3))
            }
        };
        let pool = pool_options(backend, setup, connections, acquire_timeout)
            .connect_with(options.clone())
            .await?;
        let writer = match (backend, access) {
            (Backend::Sqlite, Access::ReadWrite(_)) => {
                // A writer waits its turn as long as SQLite's busy handler would have let it.
                pool_options(backend, setup, 1, Duration::from_secs(10))
                    .connect_with(options)
                    .await?
            }
            _ => pool.clone(),
        };
        Ok(Store {
            pool,
            writer,
            backend,
            cache: Arc::new(ReadCache::new()),
            chainer: journal::chainer(),
            checkpoints: (backend == Backend::Sqlite && access != Access::ReadOnly)
                .then(wal::Checkpoints::new),
            sqlite_file: match backend {
                Backend::Sqlite => audit_read::sqlite_file(url),
                Backend::Postgres => None,
            },
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, to read from; a write goes through `execute_write` (or a [`Tx`]), on the
    /// writer, so that the read cache learns of it.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Where writes run: the pool itself for PostgreSQL, SQLite's one writing connection.
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// Is the database answering?
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            inner: self.writer.begin().await?,
            store: self.clone(),
            journaled: false,
        })
    }
}

/// A pool's options: how many connections, how long a caller waits for one, how a connection
/// is set up and when it is checked.
fn pool_options(
    backend: Backend,
    setup: &'static str,
    connections: u32,
    acquire_timeout: Duration,
) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(connections)
        // With the database gone, callers get a 503 within seconds instead of hanging.
        .acquire_timeout(acquire_timeout)
        // Connections a restarted or failed-over server dropped are found and replaced
        // before use: this is how the broker carries on without a restart. A connection
        // back in the pool answered a ping as it came back, so one used again within
        // `PING_AFTER_IDLE` is not pinged again: under load that round trip would be a
        // tenth of a decision's. An SQLite connection is a file in this process that
        // nothing can drop under us, so it is never pinged.
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if backend == Backend::Postgres && meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if !setup.is_empty() {
                    conn.execute(setup).await?;
                }
                Ok(())
            })
        })
}
