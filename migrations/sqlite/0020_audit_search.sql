-- Search by every filter the auditor's view offers, newest first: each index ends in seq so a
-- filtered page is read straight off the index in order, without sorting the matches.
CREATE INDEX audit_events_target ON audit_events (target, seq);
CREATE INDEX audit_events_namespace ON audit_events (namespace, seq);
CREATE INDEX audit_events_action ON audit_events (action, seq);
