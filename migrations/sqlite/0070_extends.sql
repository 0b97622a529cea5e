-- An extension is a request of its own that, once approved, moves the end of the breakglass it
-- extends; it names that request here. NULL for every other request.
ALTER TABLE requests ADD COLUMN extends TEXT;
CREATE INDEX requests_extends ON requests (extends);
