-- Notifications: each message names the destination it was written for (a hash of the
-- endpoint's kind and URL, never the URL, which may be a secret), so that a message is never
-- sent to another URL that later took its endpoint's name. NULL on rows written before.
ALTER TABLE outbox ADD COLUMN destination TEXT;
-- Delivery in order: a message waits while an older one of the same request and endpoint is
-- still open.
CREATE INDEX outbox_open_by_request ON outbox (request_id, endpoint, seq) WHERE done_at IS NULL;
