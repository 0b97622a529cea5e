-- What the cluster said of a request's objects when someone last looked (at filing, and when
-- a person asks to look again): pages show it with its age instead of asking the cluster at
-- every view. `claimed_at` is when the last look was started: at most one per request in a
-- short span, however many people ask at once.
CREATE TABLE cluster_looks (
    request_id TEXT PRIMARY KEY REFERENCES requests (id),
    claimed_at BIGINT NOT NULL,
    taken_at BIGINT,
    objects TEXT
);
