-- The UID of the object the broker wrote: an object deleted and made again under the same
-- name by someone else is another object, and the end leaves it to the detector.
ALTER TABLE applied_objects ADD COLUMN applied_uid TEXT;
