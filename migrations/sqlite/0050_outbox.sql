-- Notifications: one row per message and endpoint, written in the transaction of the state
-- change it announces, so that a change that rolled back announces nothing and a committed
-- one is never lost. The id is the message's `webhook-id`, the same on every try.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- The audit event it announces, by its place in the chain: the order of delivery.
    seq BIGINT NOT NULL,
    request_id TEXT,
    -- The Standard Webhooks body {type, timestamp, data}, fixed when the row is written.
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- When the next try is due: at once, a reminder's time, or a retry's backoff.
    due_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_owner TEXT,
    lease_until BIGINT,
    -- Set once, when the row needs nothing more: delivered, given up, or not to be sent.
    done_at BIGINT,
    outcome TEXT
);
CREATE INDEX outbox_due ON outbox (due_at) WHERE done_at IS NULL;
CREATE INDEX outbox_request ON outbox (request_id);
-- Endpoints whose receiver answered 410 Gone: disabled until their configuration (by its
-- hash) changes.
CREATE TABLE disabled_endpoints (
    name TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL,
    disabled_at BIGINT NOT NULL
);
