//! SQLite's write-ahead log, copied into the database file off the path of every write.
//!
//! Left to itself, SQLite copies the log into the database (a checkpoint, which waits for the
//! disk) inside whichever commit takes the log past a thousand pages: that commit, and every
//! writer queued behind it, waits milliseconds for it. So the writing connection has
//! automatic checkpoints off, and writes have one run on a reading connection instead: one at
//! a time, at most one per [`INTERVAL`], so the log holds about that long's writes and no
//! commit waits for the disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Store;

/// How often at most a checkpoint begins while writes go on.
const INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Checkpoints {
    /// One is on its way.
    busy: AtomicBool,
    /// When the last one began, in milliseconds after `base`.
    last: AtomicU64,
    base: Instant,
}

impl Checkpoints {
    pub(super) fn new() -> Arc<Checkpoints> {
        Arc::new(Checkpoints {
            busy: AtomicBool::new(false),
            last: AtomicU64::new(0),
            base: Instant::now(),
        })
    }
}

impl Store {
    /// After a write: has the log copied into the database soon, on a reading connection,
    /// unless a copy is on its way or began less than [`INTERVAL`] ago. Only for SQLite.
    pub(super) fn checkpoint_soon(&self) {
        let Some(checkpoints) = &self.checkpoints else {
            return;
        };
        let now = u64::try_from(checkpoints.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let interval = u64::try_from(INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(checkpoints.last.load(Ordering::SeqCst)) < interval
            || checkpoints.busy.swap(true, Ordering::SeqCst)
        {
            return;
        }
        checkpoints.last.store(now, Ordering::SeqCst);
        let checkpoints = checkpoints.clone();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            // PASSIVE: copies what it can without waiting for readers or writers.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "cannot copy the write-ahead log into the database; the next write tries again");
            }
            checkpoints.busy.store(false, Ordering::SeqCst);
        });
    }
}
