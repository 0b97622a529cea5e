//! The queue that hands a request to the workers the moment a transition makes work for them
//! (an approval that completes the rule, a close), instead of at their next look at the store.

use tokio::sync::mpsc;

/// Hands request ids to the worker.
#[derive(Clone)]
pub struct WorkQueue(mpsc::UnboundedSender<String>);

impl WorkQueue {
    pub fn push(&self, request_id: &str) {
        // A closed queue means the process is shutting down; the next start picks the work up.
        let _ = self.0.send(request_id.to_owned());
    }
}

pub fn queue() -> (WorkQueue, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (WorkQueue(tx), rx)
}
