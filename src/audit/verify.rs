//! Walking the chain from its start (or from a point verified before) and naming the first
//! event that is not what the broker wrote.
//!
//! Each event stores the hash of the one before (`prev_hash`) and its own hash over
//! `prev_hash` and its content, its place (`seq`) included. Walking in `seq` order with only
//! the previous event's place and hash in hand, memory stays constant however long the
//! history. What each kind of tampering leaves behind:
//!
//! - an event edited in place no longer matches its own hash;
//! - an event edited and given a recomputed hash matches itself, but the next event still
//!   names its old hash;
//! - a deleted event leaves a gap in `seq` (or, at the end, a head record that reaches
//!   further than the events);
//! - events moved to other places neither follow their new predecessor nor match their own
//!   hash, which covers their old place;
//! - a history rewritten consistently from some event on (every hash recomputed, the head
//!   record too) passes all of the above: only checkpoints taken from the log, which the
//!   rewriter could not change, catch it.

use std::fmt;

use serde::Serialize;

use crate::clock::Millis;
use crate::store::{
    AuditCheck, ChainHead, ChainRow, GENESIS_HASH, RangeSink, RowRef, Store, StoreError,
};

/// A point of the chain as the log recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    /// The line of the checkpoints file it came from, to point people at it.
    pub line: usize,
}

/// What is wrong with the chain, at the first place it goes wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The event's content (or its hash) was changed: they no longer match.
    Edited { seq: i64 },
    /// The event cannot even be read as an event: a column was given a value of another type.
    Unreadable { seq: i64, why: String },
    /// The event matches its own hash but the event after it names another hash for it: it
    /// was edited and its hash recomputed (or the next event's link was edited).
    Rewritten { seq: i64 },
    /// These events are gone.
    Missing { from: i64, to: i64 },
    /// The event neither follows the event before it nor matches its own hash: it was moved
    /// here from another place (reordered) or replaced.
    OutOfPlace { seq: i64 },
    /// The last event does not match the head record of the chain: it was rewritten with a
    /// recomputed hash, or the head record was edited.
    Head { seq: i64 },
    /// The chain disagrees with a checkpoint from the log at `seq`; it agreed with the one at
    /// `agreed` (0: none before). Events after `agreed`, up to `seq`, were rewritten.
    Checkpoint { seq: i64, agreed: i64, line: usize },
    /// The log holds a checkpoint at `seq`, but the chain ends at `end`: events were removed
    /// and the head record moved back.
    CheckpointBeyondEnd { seq: i64, end: i64, line: usize },
    /// An event lies past the chain's head record: the broker never chained it there. It
    /// was put into the database, and it takes the place the next events need, so they wait
    /// in the journal until it is gone.
    PastHead { seq: i64 },
}

impl Problem {
    /// The first event that is not as the broker wrote it (for a rewrite caught only by a
    /// checkpoint, the earliest one that may be).
    pub fn first_bad_seq(&self) -> i64 {
        match self {
            Problem::Edited { seq }
            | Problem::Unreadable { seq, .. }
            | Problem::Rewritten { seq }
            | Problem::OutOfPlace { seq }
            | Problem::Head { seq }
            | Problem::PastHead { seq } => *seq,
            Problem::Missing { from, .. } => *from,
            Problem::Checkpoint { agreed, .. } => agreed + 1,
            Problem::CheckpointBeyondEnd { end, .. } => end + 1,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Edited { seq } => write!(
                f,
                "event {seq} was edited: its content no longer matches its hash"
            ),
            Problem::Unreadable { seq, why } => {
                write!(f, "event {seq} was edited: it cannot be read ({why})")
            }
            Problem::Rewritten { seq } => write!(
                f,
                "event {seq} was rewritten: it matches a recomputed hash, but event {} still names the hash it had",
                seq + 1
            ),
            Problem::Missing { from, to } if from == to => {
                write!(f, "event {from} was deleted: the chain has no event {from}")
            }
            Problem::Missing { from, to } => write!(
                f,
                "events {from} to {to} were deleted: the chain has no events there"
            ),
            Problem::OutOfPlace { seq: 1 } => write!(
                f,
                "event 1 was replaced or moved: it does not start the chain and does not match its hash"
            ),
            Problem::OutOfPlace { seq } => write!(
                f,
                "event {seq} was reordered or replaced: it does not follow event {} and does not match its hash",
                seq - 1
            ),
            Problem::PastHead { seq } => write!(
                f,
                "event {seq} was added: it lies past the chain's head record, where the broker never wrote it, and holds up the events waiting to be chained"
            ),
            Problem::Head { seq } => write!(
                f,
                "event {seq}, the last, was rewritten: the chain's head record names another hash for it"
            ),
            Problem::Checkpoint { seq, agreed, line } if agreed + 1 == *seq => write!(
                f,
                "event {seq} was rewritten: its hash differs from the checkpoint logged for it (checkpoints line {line})"
            ),
            Problem::Checkpoint { seq, agreed, line } => write!(
                f,
                "the history was rewritten from event {} at the earliest: event {seq}'s hash differs from the checkpoint logged for it (checkpoints line {line}){}",
                agreed + 1,
                if *agreed > 0 {
                    format!(", the one at event {agreed} agrees")
                } else {
                    String::new()
                }
            ),
            Problem::CheckpointBeyondEnd { seq, end, line } => write!(
                f,
                "events {} to {seq} at least were deleted: the log holds a checkpoint at event {seq} (checkpoints line {line}) but the chain ends at event {end}",
                end + 1
            ),
        }
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Events this walk checked.
    pub events: u64,
    /// Every event up to this one is as the broker wrote it (0: none is known good).
    pub verified_through: i64,
    /// The head record when the walk began; events committed after that are for next time.
    pub head: ChainHead,
    /// Checkpoints compared with the chain.
    pub checkpoints: usize,
    pub problem: Option<Problem>,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }

    /// Where a later, incremental walk may start: the head, if the chain verified up to it.
    pub fn anchor(&self) -> Option<ChainHead> {
        self.is_intact().then(|| self.head.clone())
    }

    /// The report as the record of a check made at `at`.
    pub fn as_check(&self, at: Millis) -> AuditCheck {
        AuditCheck {
            checked_at: at,
            verified_through: self.verified_through,
            head_seq: self.head.seq,
            head_hash: self.head.hash.clone(),
            first_bad_seq: self.problem.as_ref().map(Problem::first_bad_seq),
            problem: self.problem.as_ref().map(ToString::to_string),
        }
    }

    /// One line for a terminal or a page.
    pub fn summary(&self) -> String {
        match &self.problem {
            None => format!(
                "audit chain intact: {} events verified through seq {}, head hash {}{}",
                self.events,
                self.head.seq,
                self.head.hash,
                match self.checkpoints {
                    0 => String::new(),
                    1 => "; 1 checkpoint agrees".to_owned(),
                    n => format!("; {n} checkpoints agree"),
                }
            ),
            Some(problem) => format!(
                "audit chain broken at seq {}: {problem}; verified through seq {}",
                problem.first_bad_seq(),
                self.verified_through
            ),
        }
    }
}

/// What the walk needs of one row: its place and links, and whether its content still
/// matches its own hash.
#[derive(Clone, Debug)]
pub enum Link {
    Event(EventLink),
    Unreadable { seq: Option<i64>, why: String },
}

#[derive(Clone, Debug)]
pub struct EventLink {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    /// The hash recomputed from the content is the stored one.
    pub consistent: bool,
}

impl Link {
    /// The link of a stored event, its hash recomputed.
    pub fn of(event: &crate::store::EventRef<'_>) -> Link {
        Link::Event(EventLink {
            seq: event.seq,
            prev_hash: event.prev_hash.to_owned(),
            hash: event.hash.to_owned(),
            consistent: event.recomputed_hash() == event.hash,
        })
    }
}

/// The walk's state: the place and hash of the last event checked, and the checkpoints not
/// yet reached. Pure, so the rules are tested without a database.
pub struct ChainWalk<'c> {
    last: ChainHead,
    events: u64,
    checkpoints: &'c [Checkpoint],
    next_checkpoint: usize,
    agreed: i64,
    compared: usize,
}

impl<'c> ChainWalk<'c> {
    /// A walk from `start` (the genesis when `None`), checking `checkpoints` (sorted by seq)
    /// that lie after it.
    pub fn new(start: Option<ChainHead>, checkpoints: &'c [Checkpoint]) -> Self {
        let last = start.unwrap_or_else(|| ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        });
        let next_checkpoint = checkpoints.partition_point(|c| c.seq <= last.seq);
        ChainWalk {
            agreed: last.seq,
            last,
            events: 0,
            checkpoints,
            next_checkpoint,
            compared: 0,
        }
    }

    /// Checks the next row; the first problem ends the walk.
    pub fn push(&mut self, row: &ChainRow) -> Result<(), Problem> {
        let link = match row {
            ChainRow::Event(event) => Link::of(&event.view()),
            ChainRow::Unreadable { seq, why } => Link::Unreadable {
                seq: *seq,
                why: why.clone(),
            },
        };
        self.push_link(&link)
    }

    /// Checks the next row, its hash already recomputed (by whoever read it, so that the
    /// hashing spreads over the readers).
    pub fn push_link(&mut self, link: &Link) -> Result<(), Problem> {
        let event = match link {
            Link::Event(event) => event,
            Link::Unreadable { seq, why } => {
                let expected = self.last.seq + 1;
                let seq = seq.unwrap_or(expected);
                if seq > expected {
                    return Err(Problem::Missing {
                        from: expected,
                        to: seq - 1,
                    });
                }
                return Err(Problem::Unreadable {
                    seq,
                    why: why.clone(),
                });
            }
        };
        let expected = self.last.seq + 1;
        if event.seq > expected {
            return Err(Problem::Missing {
                from: expected,
                to: event.seq - 1,
            });
        }
        if event.seq < expected {
            // Rows come in seq order and seq is the key, so only a walk fed out of order
            // lands here; say so rather than guess.
            return Err(Problem::OutOfPlace { seq: event.seq });
        }
        let linked = event.prev_hash == self.last.hash;
        let consistent = event.consistent;
        match (linked, consistent) {
            (true, true) => {}
            (true, false) => return Err(Problem::Edited { seq: event.seq }),
            (false, true) if self.last.seq > 0 => {
                return Err(Problem::Rewritten { seq: self.last.seq });
            }
            (false, _) => return Err(Problem::OutOfPlace { seq: event.seq }),
        }
        while let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint) {
            if checkpoint.seq != event.seq {
                break;
            }
            self.compared += 1;
            if checkpoint.hash != event.hash {
                return Err(Problem::Checkpoint {
                    seq: event.seq,
                    agreed: self.agreed,
                    line: checkpoint.line,
                });
            }
            self.agreed = event.seq;
            self.next_checkpoint += 1;
        }
        self.last = ChainHead {
            seq: event.seq,
            hash: event.hash.clone(),
        };
        self.events += 1;
        Ok(())
    }

    /// Checks the end of the walk against the head record and the checkpoints left over.
    pub fn finish(&self, head: &ChainHead) -> Result<(), Problem> {
        if self.last.seq < head.seq {
            return Err(Problem::Missing {
                from: self.last.seq + 1,
                to: head.seq,
            });
        }
        if self.last.hash != head.hash {
            return Err(Problem::Head { seq: self.last.seq });
        }
        if let Some(beyond) = self.checkpoints.get(self.next_checkpoint) {
            return Err(Problem::CheckpointBeyondEnd {
                seq: beyond.seq,
                end: self.last.seq,
                line: beyond.line,
            });
        }
        Ok(())
    }

    /// The report for a walk that ended here, with `problem` if it ended early.
    pub fn report(&self, head: ChainHead, problem: Option<Problem>) -> Report {
        let verified_through = match &problem {
            None => self.last.seq,
            Some(Problem::Checkpoint { agreed, .. }) => *agreed,
            Some(p) => (p.first_bad_seq() - 1).min(self.last.seq),
        };
        Report {
            events: self.events,
            verified_through,
            head,
            checkpoints: self.compared,
            problem,
        }
    }
}

/// Readers (and cores) a verification reads and hashes on.
const WORKERS: usize = 2;

/// Recomputes the hashes of the rows one reader reads, a range at a time.
#[derive(Default)]
struct Hasher {
    links: Vec<Link>,
}

impl RangeSink for Hasher {
    type Made = Vec<Link>;

    fn row(&mut self, row: RowRef<'_>) {
        self.links.push(match row {
            RowRef::Event(event) => Link::of(&event),
            RowRef::Unreadable { seq, why } => Link::Unreadable { seq, why },
        });
    }

    fn finish(&mut self) -> Vec<Link> {
        std::mem::take(&mut self.links)
    }
}

/// Verifies the whole chain, against `checkpoints` (sorted by seq) if any.
pub async fn verify_store(store: &Store, checkpoints: &[Checkpoint]) -> Result<Report, StoreError> {
    verify_from(store, None, checkpoints).await
}

/// Verifies the events after `from`, a point an earlier walk verified (its [`Report::anchor`]),
/// up to the head as it is now. A change at or before `from` since then still shows: the first
/// event after it would no longer follow the hash remembered for it.
pub async fn verify_from(
    store: &Store,
    from: Option<&ChainHead>,
    checkpoints: &[Checkpoint],
) -> Result<Report, StoreError> {
    let head = store.audit_head().await?;
    let mut walk = ChainWalk::new(from.cloned(), checkpoints);
    let start = from.map_or(0, |f| f.seq);
    if start > head.seq {
        let problem = Problem::Missing {
            from: head.seq + 1,
            to: start,
        };
        return Ok(walk.report(head, Some(problem)));
    }
    // Readers on connections of their own read ranges of the chain side by side and
    // recompute each row's hash as they read it; the walk takes the ranges back in order, so
    // it sees the rows exactly as one ordered read would give them, and names the first
    // problem in seq order. Dropping the ranges (a problem found) ends the readers.
    let sinks = (0..WORKERS).map(|_| Hasher::default()).collect();
    let mut ranges = store.audit_ranges(start, head.seq, sinks).await?;
    while let Some(links) = ranges.next().await {
        for link in &links? {
            if let Err(problem) = walk.push_link(link) {
                return Ok(walk.report(head, Some(problem)));
            }
        }
    }
    let mut problem = walk.finish(&head).err();
    if problem.is_none()
        && let Some(seq) = store.first_event_past(head.seq).await?
    {
        problem = Some(Problem::PastHead { seq });
    }
    Ok(walk.report(head, problem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuditAction;
    use crate::store::{NewEvent, StoredEvent, content_hash};

    /// A chain of `n` events as the store writes them.
    fn chain(n: i64) -> Vec<StoredEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let detail = serde_json::json!({ "n": seq });
                let event = NewEvent {
                    at: 1_000 * seq,
                    actor: "alice",
                    person: None,
                    action: AuditAction::Created,
                    request_id: Some("r"),
                    ticket: Some("INC-1"),
                    target: Some("t"),
                    namespace: Some("prod"),
                    detail: detail.clone(),
                };
                let hash = content_hash(&prev, &event, seq);
                let stored = StoredEvent {
                    seq,
                    at: event.at,
                    actor: "alice".into(),
                    actor_issuer: None,
                    actor_subject: None,
                    action: AuditAction::Created.as_str().into(),
                    request_id: Some("r".into()),
                    ticket: Some("INC-1".into()),
                    target: Some("t".into()),
                    namespace: Some("prod".into()),
                    detail: detail.to_string(),
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                stored
            })
            .collect()
    }

    fn head_of(events: &[StoredEvent]) -> ChainHead {
        events.last().map_or_else(
            || ChainHead {
                seq: 0,
                hash: GENESIS_HASH.into(),
            },
            |e| ChainHead {
                seq: e.seq,
                hash: e.hash.clone(),
            },
        )
    }

    fn walk(events: &[StoredEvent], head: &ChainHead, checkpoints: &[Checkpoint]) -> Report {
        let mut walk = ChainWalk::new(None, checkpoints);
        for event in events {
            if let Err(p) = walk.push(&ChainRow::Event(Box::new(event.clone()))) {
                return walk.report(head.clone(), Some(p));
            }
        }
        let problem = walk.finish(head).err();
        walk.report(head.clone(), problem)
    }

    /// Recomputes every hash from `from` on, as someone rewriting the history would.
    fn rehash_from(events: &mut [StoredEvent], from: usize) {
        for i in from..events.len() {
            if i > 0 {
                events[i].prev_hash = events[i - 1].hash.clone();
            }
            events[i].hash = events[i].recomputed_hash();
        }
    }

    #[test]
    fn an_untouched_chain_verifies_through_its_head() {
        let events = chain(5);
        let report = walk(&events, &head_of(&events), &[]);
        assert!(report.is_intact(), "{:?}", report.problem);
        assert_eq!((report.events, report.verified_through), (5, 5));
    }

    #[test]
    fn an_empty_chain_verifies() {
        let report = walk(&[], &head_of(&[]), &[]);
        assert!(report.is_intact());
        assert_eq!(report.events, 0);
    }

    #[test]
    fn an_edited_event_is_named() {
        let mut events = chain(5);
        events[2].actor = "mallory".into();
        let report = walk(&events, &head_of(&chain(5)), &[]);
        assert_eq!(report.problem, Some(Problem::Edited { seq: 3 }));
        assert_eq!(report.verified_through, 2);
    }

    #[test]
    fn an_edited_event_with_a_recomputed_hash_is_named_not_its_successor() {
        let mut events = chain(5);
        events[2].actor = "mallory".into();
        events[2].hash = events[2].recomputed_hash();
        let report = walk(&events, &head_of(&chain(5)), &[]);
        assert_eq!(report.problem, Some(Problem::Rewritten { seq: 3 }));
    }

    #[test]
    fn a_deleted_event_is_named() {
        let mut events = chain(5);
        events.remove(1);
        let report = walk(&events, &head_of(&chain(5)), &[]);
        assert_eq!(report.problem, Some(Problem::Missing { from: 2, to: 2 }));
    }

    #[test]
    fn a_deleted_last_event_is_named_by_the_head_record() {
        let events = chain(5);
        let report = walk(&events[..4], &head_of(&events), &[]);
        assert_eq!(report.problem, Some(Problem::Missing { from: 5, to: 5 }));
    }

    #[test]
    fn two_swapped_events_name_the_first_place() {
        let mut events = chain(5);
        events.swap(1, 2);
        events[1].seq = 2;
        events[2].seq = 3;
        let report = walk(&events, &head_of(&chain(5)), &[]);
        assert_eq!(report.problem, Some(Problem::OutOfPlace { seq: 2 }));
        assert_eq!(report.problem.map(|p| p.first_bad_seq()), Some(2));
    }

    #[test]
    fn a_consistent_rewrite_passes_alone_and_fails_against_a_checkpoint() {
        let original = chain(6);
        let mut events = original.clone();
        events[3].actor = "mallory".into();
        rehash_from(&mut events, 3);
        let head = head_of(&events);
        assert!(walk(&events, &head, &[]).is_intact(), "undetectable alone");

        let checkpoints = [
            Checkpoint {
                seq: 2,
                hash: original[1].hash.clone(),
                line: 1,
            },
            Checkpoint {
                seq: 5,
                hash: original[4].hash.clone(),
                line: 2,
            },
        ];
        let report = walk(&events, &head, &checkpoints);
        assert_eq!(
            report.problem,
            Some(Problem::Checkpoint {
                seq: 5,
                agreed: 2,
                line: 2
            })
        );
        assert_eq!(report.verified_through, 2);
        assert_eq!(report.problem.map(|p| p.first_bad_seq()), Some(3));
    }

    #[test]
    fn a_truncated_chain_with_a_moved_head_fails_against_a_later_checkpoint() {
        let events = chain(6);
        let checkpoints = [Checkpoint {
            seq: 6,
            hash: events[5].hash.clone(),
            line: 7,
        }];
        let report = walk(&events[..4], &head_of(&events[..4]), &checkpoints);
        assert_eq!(
            report.problem,
            Some(Problem::CheckpointBeyondEnd {
                seq: 6,
                end: 4,
                line: 7
            })
        );
    }

    #[test]
    fn a_walk_from_an_anchor_notices_a_rewrite_before_it() {
        let original = chain(6);
        let anchor = head_of(&original[..3]);
        let mut events = original.clone();
        events[1].actor = "mallory".into();
        rehash_from(&mut events, 1);
        let mut walk = ChainWalk::new(Some(anchor), &[]);
        let result = walk.push(&ChainRow::Event(Box::new(events[3].clone())));
        assert_eq!(result, Err(Problem::Rewritten { seq: 3 }));
    }

    #[test]
    fn problems_read_as_sentences_naming_the_event() {
        assert_eq!(
            Problem::Missing { from: 4, to: 4 }.to_string(),
            "event 4 was deleted: the chain has no event 4"
        );
        assert!(
            Problem::Edited { seq: 9 }
                .to_string()
                .starts_with("event 9 was edited")
        );
    }
}
