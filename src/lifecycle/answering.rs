//! The decisions this replica is answering right now. People waiting on an answer come before
//! the background work their decisions start: an apply waits until no decision is being
//! answered here, or for [`MOST`] at the longest, so a burst of approvals is answered first and
//! applied just after, and a steady stream of decisions cannot hold an apply back for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest an apply waits for the decisions being answered.
pub const MOST: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Answering {
    count: AtomicUsize,
    quiet: Notify,
}

/// One decision being answered; it is answered when this is dropped, however it ends.
pub struct Answer(Arc<Answering>);

impl Answering {
    pub fn begin(self: &Arc<Self>) -> Answer {
        self.count.fetch_add(1, Ordering::SeqCst);
        Answer(self.clone())
    }

    /// Returns once no decision is being answered, or after [`MOST`].
    pub async fn wait_quiet(&self) {
        let deadline = tokio::time::Instant::now() + MOST;
        loop {
            let quiet = self.quiet.notified();
            tokio::pin!(quiet);
            // Registered before the count is read, so the last answer's wake is not missed.
            quiet.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                () = quiet => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_the_last_answer_and_no_longer() {
        let answering = Arc::new(Answering::default());
        let (first, second) = (answering.begin(), answering.begin());
        let waiter = tokio::spawn({
            let answering = answering.clone();
            async move { answering.wait_quiet().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one answer is still being given");
        drop(second);
        tokio::time::timeout(Duration::from_millis(500), waiter)
            .await
            .expect("quiet once the last answer is given")
            .expect("the waiter ran");
    }

    #[tokio::test]
    async fn an_answer_that_never_ends_holds_nobody_past_the_limit() {
        let answering = Arc::new(Answering::default());
        let _stuck = answering.begin();
        let began = tokio::time::Instant::now();
        answering.wait_quiet().await;
        let waited = began.elapsed();
        assert!(waited >= MOST && waited < MOST * 3, "{waited:?}");
    }
}
