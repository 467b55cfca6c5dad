-- The event log's JSON columns hold the text the dispatcher wrote, as it
-- wrote it, and an item's body moves out of the payload into a column of
-- its own. Nothing queries the JSON by key: readers decode whole events,
-- so parsing every value into jsonb at insert (and printing it back at
-- read) was work for nobody, and it was a tenth of a busy commit; a reader
-- that leaves bodies out (every dispatcher's log tail) now simply does not
-- select the column. The migration rewrites the events table twice (the
-- bodies split out, then the column types) under one exclusive lock held
-- to its commit; the table holds only the retained tail of the log, and
-- commits wait for the lock meanwhile. Dispatchers of an older build must
-- be stopped first: their log tails strip bodies with a jsonb operator.
ALTER TABLE events ADD COLUMN body bytea;
UPDATE events SET body = decode(payload->>'body', 'base64') WHERE payload ? 'body';
ALTER TABLE events
    ALTER COLUMN ownership TYPE text,
    ALTER COLUMN payload TYPE text USING (payload - 'body')::text,
    ALTER COLUMN error TYPE text,
    ALTER COLUMN metadata TYPE text,
    ALTER COLUMN metadata SET DEFAULT '{}';
