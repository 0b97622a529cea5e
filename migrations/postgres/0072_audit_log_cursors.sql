-- How far the broker has read each target's Cloud Audit Logs: the timestamp (milliseconds,
-- Google's clock) of the newest entry it has judged. A restart reads on from here (less a
-- margin for entries that arrive late) instead of from the beginning. Replicas share it;
-- reading an entry twice is harmless, since findings are unique per object and episode.
CREATE TABLE audit_log_cursors (
    target TEXT PRIMARY KEY,
    read_to BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
