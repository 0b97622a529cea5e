-- Time windows, newest first: with seq beside at in the index, the newest events of a window
-- are picked from the index alone, without reading every row in the window. Replaces the index
-- on at alone, which this one covers.
DROP INDEX audit_events_at;
CREATE INDEX audit_events_at_seq ON audit_events (at, seq);
