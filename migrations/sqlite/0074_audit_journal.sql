-- The audit journal: a change writes its audit events here, in its own transaction, and they
-- take their place in the chain (audit_events) just after it commits, many at a time. Writers
-- no longer queue on the chain's head for the length of their transactions: only the one
-- that chains a batch holds it.
CREATE TABLE audit_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    actor_issuer TEXT,
    actor_subject TEXT,
    action TEXT NOT NULL,
    request_id TEXT,
    ticket TEXT,
    target TEXT,
    namespace TEXT,
    -- Canonical JSON, as the chain stores it.
    detail TEXT NOT NULL
);
-- Notifications are ordered by the entry of the event they announce (outbox.seq, which held
-- the event's place in the chain before): entries start above every place already taken.
INSERT INTO sqlite_sequence (name, seq) SELECT 'audit_journal', seq FROM audit_head WHERE id = 1;
