-- The last verification of the audit chain by a broker replica, for the audit page to show
-- without walking a long history on every view. Display only: the proof is `audit verify`
-- with checkpoints from the log, which someone editing this row cannot change.
CREATE TABLE audit_checks (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    checked_at BIGINT NOT NULL,
    verified_through BIGINT NOT NULL,
    head_seq BIGINT NOT NULL,
    head_hash TEXT NOT NULL,
    first_bad_seq BIGINT,
    problem TEXT
);
