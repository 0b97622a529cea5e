use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::watch;

/// Milliseconds since the Unix epoch: the one unit of time the store and the rules use.
pub type Millis = i64;

/// The broker's notion of now.
///
/// Production reads the system clock. Tests and benchmarks use a manual clock that they move
/// forward; workers waiting for a deadline are woken when it moves, so nothing sleeps in tests.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for the system clock; otherwise the manual time in milliseconds.
    manual: Option<AtomicI64>,
    moved: watch::Sender<()>,
}

impl Clock {
    pub fn system() -> Self {
        Self::build(None)
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: Millis) -> Self {
        Self::build(Some(AtomicI64::new(start)))
    }

    fn build(manual: Option<AtomicI64>) -> Self {
        let (moved, _) = watch::channel(());
        Self {
            inner: Arc::new(Inner { manual, moved }),
        }
    }

    pub fn now(&self) -> Millis {
        match &self.inner.manual {
            Some(at) => at.load(Ordering::SeqCst),
            None => Utc::now().timestamp_millis(),
        }
    }

    pub fn now_utc(&self) -> DateTime<Utc> {
        to_utc(self.now())
    }

    /// Moves a manual clock forward and wakes everything waiting on it.
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(at) = &self.inner.manual {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            at.fetch_add(by, Ordering::SeqCst);
            self.inner.moved.send_replace(());
        }
    }

    /// Waits until the clock reads at least `deadline`.
    pub async fn sleep_until(&self, deadline: Millis) {
        match &self.inner.manual {
            None => {
                let wait = deadline.saturating_sub(self.now()).max(0);
                tokio::time::sleep(std::time::Duration::from_millis(wait.unsigned_abs())).await;
            }
            Some(_) => {
                let mut moved = self.inner.moved.subscribe();
                while self.now() < deadline {
                    if moved.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

pub fn to_utc(at: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(at).single().unwrap_or_default()
}

/// RFC 3339 with millisecond precision, the form every API response and log line uses.
pub fn rfc3339(at: Millis) -> String {
    to_utc(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lets every other task on this (current-thread) runtime run until it waits again.
    async fn let_others_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced_and_not_before_their_deadline() {
        let clock = Clock::manual(1_000);
        let mut waiter = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(61_000).await }
        });
        // The waiter has run and is parked on the clock.
        let_others_run().await;
        assert_eq!(clock.inner.moved.receiver_count(), 1, "the waiter waits");
        assert!(!waiter.is_finished());

        // Woken by a move that falls short of its deadline, it goes back to waiting.
        clock.advance(std::time::Duration::from_secs(30));
        let_others_run().await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiter)
                .await
                .is_err(),
            "the waiter finished 30 s before its deadline"
        );
        assert!(!waiter.is_finished());
        assert_eq!(clock.inner.moved.receiver_count(), 1, "still waiting");

        clock.advance(std::time::Duration::from_secs(30));
        tokio::time::timeout(std::time::Duration::from_secs(60), waiter)
            .await
            .expect("sleeper woke")
            .expect("task ran");
        assert_eq!(clock.now(), 61_000);
    }
}
