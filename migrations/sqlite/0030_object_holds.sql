-- One breakglass per object: a request holds each of its objects from the approval that
-- completes its rule until its end. The primary key makes a second holder impossible, even
-- for two replicas approving two requests at the same moment.
CREATE TABLE object_holds (
    target TEXT NOT NULL,
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    request_id TEXT NOT NULL REFERENCES requests (id),
    PRIMARY KEY (target, namespace, kind, name)
);
CREATE INDEX object_holds_request ON object_holds (request_id);
