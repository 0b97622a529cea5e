-- The requester's post-incident review of a breakglass that ended: what broke, the postmortem,
-- whether the image has been attested since. NULL until written; written once.
ALTER TABLE requests ADD COLUMN review TEXT;
ALTER TABLE requests ADD COLUMN reviewed_at BIGINT;
CREATE INDEX requests_requester_target ON requests (requester_subject, target);
