-- A person is (issuer, subject): the issuer is recorded beside every subject, and audit
-- events name the person who acted, not only the name they showed. Rows from before this
-- migration keep an empty issuer (one issuer per broker then as now).
ALTER TABLE requests ADD COLUMN requester_issuer TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN approver_issuer TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN issuer TEXT NOT NULL DEFAULT '';
-- When the person last proved who they are at the provider (the ID token's auth_time, or the
-- sign-in itself): browser decisions need it to be recent.
ALTER TABLE sessions ADD COLUMN signed_in_at BIGINT NOT NULL DEFAULT 0;
-- A sign-in started for a decision asks the provider for a fresh authentication.
ALTER TABLE login_attempts ADD COLUMN max_age_seconds BIGINT;
ALTER TABLE audit_events ADD COLUMN actor_issuer TEXT;
ALTER TABLE audit_events ADD COLUMN actor_subject TEXT;
CREATE INDEX audit_events_actor_subject ON audit_events (actor_subject, seq);
