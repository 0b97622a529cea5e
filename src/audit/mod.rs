//! The auditor's side of the history: proving that it was not edited, checkpoints in the log
//! that someone with only database access cannot rewrite, and exports.
//!
//! The chain itself is written by the store ([`crate::store::Store::append_audit`]); this
//! module only reads it.

pub mod checkpoint;
pub mod cli;
pub mod export;
pub mod verify;

pub use checkpoint::{Checkpoint, log_checkpoint, log_event, read_checkpoints};
pub use verify::{Problem, Report, verify_from, verify_store};
