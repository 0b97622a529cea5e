-- The detector's findings: one per breakglass the broker did not make, per object and
-- episode. An episode ends when the breakglass is gone from the target; a later one on the
-- same object is a new finding. The unique key lets several replicas insert the same finding
-- at once and keeps exactly one.
CREATE TABLE findings (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    episode BIGINT NOT NULL,
    reasons TEXT NOT NULL,
    images TEXT NOT NULL,
    writers TEXT NOT NULL,
    members TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    gone_at BIGINT,
    state TEXT NOT NULL DEFAULT 'open',
    acknowledged_by TEXT,
    acknowledged_at BIGINT,
    comment TEXT,
    removed TEXT,
    UNIQUE (target, uid, episode)
);
CREATE INDEX findings_state ON findings (state, first_seen);
