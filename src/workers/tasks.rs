//! One task of this process per key at a time (a request, a notification endpoint): starting
//! a key whose task still runs does nothing, and a task that ends, however it ends (a panic
//! included), frees its key and wakes the loop that waits for it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

#[derive(Default)]
pub struct Tasks {
    in_flight: Mutex<HashSet<String>>,
    finished: Notify,
}

impl Tasks {
    /// Runs `work` on a task of its own, unless a task for `key` runs already.
    pub fn start<F>(self: &Arc<Self>, key: String, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        if fresh {
            let done = Done {
                tasks: self.clone(),
                key,
            };
            tokio::spawn(async move {
                work.await;
                drop(done);
            });
        }
    }

    /// The keys whose tasks run now.
    pub fn busy(&self) -> HashSet<String> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves when a task ends (or [`Tasks::wake`] is called).
    pub fn finished(&self) -> Notified<'_> {
        self.finished.notified()
    }

    /// Wakes whoever waits on [`Tasks::finished`], as if a task had ended.
    pub fn wake(&self) {
        self.finished.notify_one();
    }
}

/// Frees a task's key when the task ends, however it ends: dropped on unwinding too.
struct Done {
    tasks: Arc<Tasks>,
    key: String,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.tasks
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        self.tasks.finished.notify_one();
    }
}
