-- Requests, their decisions, what was applied, and the hash-chained audit history.

CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    namespace TEXT NOT NULL,
    ticket TEXT NOT NULL,
    justification TEXT NOT NULL,
    requester_subject TEXT NOT NULL,
    requester_name TEXT NOT NULL,
    manifest TEXT NOT NULL,
    objects TEXT NOT NULL,
    duration_seconds BIGINT NOT NULL,
    digest TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    decide_by BIGINT NOT NULL,
    applied_at BIGINT,
    expires_at BIGINT,
    ended_at BIGINT,
    end_requested TEXT,
    last_error TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    version BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX requests_state ON requests (state);
CREATE INDEX requests_ticket ON requests (ticket);
CREATE INDEX requests_requester ON requests (requester_subject);

CREATE TABLE approvals (
    request_id TEXT NOT NULL REFERENCES requests (id),
    approver_subject TEXT NOT NULL,
    approver_name TEXT NOT NULL,
    approver_groups TEXT NOT NULL,
    decision TEXT NOT NULL,
    digest TEXT NOT NULL,
    comment TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (request_id, approver_subject)
);

CREATE TABLE applied_objects (
    request_id TEXT NOT NULL REFERENCES requests (id),
    position BIGINT NOT NULL,
    api_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    before_apply TEXT,
    applied_version TEXT,
    PRIMARY KEY (request_id, position)
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT,
    ticket TEXT,
    target TEXT,
    namespace TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_request ON audit_events (request_id, seq);
CREATE INDEX audit_events_ticket ON audit_events (ticket, seq);
CREATE INDEX audit_events_actor ON audit_events (actor, seq);
CREATE INDEX audit_events_at ON audit_events (at);

-- The chain's head; updating it first serialises every writer of the chain.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
