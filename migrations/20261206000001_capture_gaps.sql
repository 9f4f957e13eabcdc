-- Capture continuity. Logical capture records which slot it streams, the
-- highest position it let that slot confirm, and which database system
-- (and timeline) it streamed from. At every connect the slot is checked
-- against that record; a slot that was lost, invalidated or consumed by
-- someone else means changes were committed that no slot will deliver: a
-- capture gap. The relay then stores a gap marker (an outbox row that no
-- room receives) and every resume from before it answers `gap: true`.

ALTER TABLE realtime.state
    ADD COLUMN IF NOT EXISTS slot_name      text,     -- logical: the slot streamed
    ADD COLUMN IF NOT EXISTS slot_confirmed pg_lsn,   -- logical: highest position it may have confirmed
    ADD COLUMN IF NOT EXISTS system_id      text,     -- the database system streamed from
    ADD COLUMN IF NOT EXISTS timeline       integer,  -- its timeline when last connected
    ADD COLUMN IF NOT EXISTS gap_seq        bigint NOT NULL DEFAULT 0; -- seq of the newest gap marker

-- One row per capture gap (and per outbox that lost its newest events in a
-- failover), under the seq of its marker.
CREATE TABLE IF NOT EXISTS realtime.capture_gaps (
    seq         bigint      PRIMARY KEY,
    detected_at timestamptz NOT NULL DEFAULT now(),
    slot        text,                  -- the slot, for a slot gap
    last_lsn    pg_lsn,                -- the last position the relay had
    reason      text        NOT NULL
);
REVOKE ALL ON realtime.capture_gaps FROM PUBLIC;

-- A position stored by logical capture means nothing once no slot of this
-- database is left and trigger capture runs (a slot dropped by a switch to
-- triggers before this migration): forget it, so a later switch back to
-- logical starts fresh instead of reporting a gap.
UPDATE realtime.state
SET source_lsn = NULL, source_changes = 0, source_done = true
WHERE capture_mode IS DISTINCT FROM 'logical'
  AND NOT EXISTS (SELECT 1 FROM pg_replication_slots
                  WHERE database = current_database() AND plugin = 'pgoutput');
