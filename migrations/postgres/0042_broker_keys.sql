-- Keys the replicas of one broker share, made by the first to start: e.g. the key that seals
-- a sign-in in flight into its browser's cookie, so that nothing is stored for a sign-in
-- before the provider answers.
CREATE TABLE broker_keys (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
