//! The queue that hands a request to the workers the moment a transition makes work for them
//! (an approval that completes the rule, a close), instead of at their next look at the store.

use tokio::sync::mpsc;

/// What a transition hands the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Fully approved just now: the worker applies it without reading it first (the apply
    /// claims it only while it is still `approved`).
    Apply(String),
    /// The worker reads the request and does what its state calls for.
    Look(String),
}

impl Work {
    pub fn request_id(&self) -> &str {
        match self {
            Work::Apply(id) | Work::Look(id) => id,
        }
    }
}

/// Hands work to the worker.
#[derive(Clone)]
pub struct WorkQueue(mpsc::UnboundedSender<Work>);

impl WorkQueue {
    pub fn push(&self, work: Work) {
        // A closed queue means the process is shutting down; the next start picks the work up.
        let _ = self.0.send(work);
    }
}

pub fn queue() -> (WorkQueue, mpsc::UnboundedReceiver<Work>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (WorkQueue(tx), rx)
}
