-- The audit journal: a change writes its audit events here, in its own transaction, and they
-- take their place in the chain (audit_events) just after it commits, many at a time. Writers
-- no longer queue on the chain's head for the length of their transactions: only the one
-- that chains a batch holds it.
CREATE TABLE audit_journal (
    id BIGSERIAL PRIMARY KEY,
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
SELECT setval(
    pg_get_serial_sequence('audit_journal', 'id'),
    (SELECT seq FROM audit_head WHERE id = 1) + 1,
    false
);
