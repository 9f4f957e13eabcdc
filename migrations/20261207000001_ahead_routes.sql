-- Delivery at WAL durability. Logical capture fans an event out once its
-- change is durable in the WAL, and writes its outbox row behind it; after
-- a crash the stream derives the same events under the same seqs again,
-- provided it is read with the same routes. `ahead_routes` is the routes
-- file the stream was last read with while events may have been delivered
-- ahead of their commit (NULL after a clean stop, when every delivered
-- event is stored). A relay that starts with a different file reads the
-- stream with these routes up to the WAL position at its start, then
-- records and uses its own.

ALTER TABLE realtime.state
    ADD COLUMN IF NOT EXISTS ahead_routes text;
