-- Who made the change an outbox event comes from (an API key id), for the line logged when the
-- event is published. Rows written before this have none.
ALTER TABLE outbox ADD COLUMN actor TEXT NOT NULL DEFAULT '';
