-- rowcast's own schema. Everything lives in `realtime`; the application's
-- tables are never altered except for the capture triggers rowcast installs.

CREATE SCHEMA IF NOT EXISTS realtime;

-- Changes waiting for the relay. Trigger capture writes one row per changed
-- row in the writer's own transaction; realtime.publish() writes one row per
-- published event (op 'P'). The relay deletes rows in the same transaction
-- that stores their events, so a row is consumed exactly once and never
-- skipped, whatever order the writers' sequence values committed in.
CREATE TABLE IF NOT EXISTS realtime.capture (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tbl         text        NOT NULL,   -- 'schema.table'; '' for publish
    op          "char"      NOT NULL,   -- I, U, D, or P (publish)
    old         jsonb,
    new         jsonb,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A queue table: rows are inserted and deleted all day, so vacuum it often.
ALTER TABLE realtime.capture SET (autovacuum_vacuum_scale_factor = 0,
                                  autovacuum_vacuum_threshold = 5000,
                                  autovacuum_vacuum_cost_delay = 0);

-- Takes (deletes and returns) the oldest captured rows with id < bound, at
-- most lim, whatever order their transactions committed in. An index walk
-- finds them and a TID scan deletes them, and the plan is pinned: a plan
-- made while the table was small (a seq scan testing every row against the
-- list) would otherwise be kept and scan the whole backlog for every batch.
CREATE OR REPLACE FUNCTION realtime.take_captured(lim bigint, bound bigint)
RETURNS TABLE (id bigint, tbl text, op "char", old jsonb, new jsonb, captured_at timestamptz)
LANGUAGE sql
VOLATILE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
    DELETE FROM realtime.capture c
    WHERE c.ctid = ANY (ARRAY(SELECT ctid FROM realtime.capture
                              WHERE realtime.capture.id < take_captured.bound
                              ORDER BY realtime.capture.id
                              LIMIT take_captured.lim))
    RETURNING c.id, c.tbl, c.op, c.old, c.new, c.captured_at
$$;

-- Deletes the captured rows with these ids (logical capture consumes the
-- rows of realtime.publish it read from the stream); returns the ids found.
-- Pinned to the primary key for the same reason as take_captured.
CREATE OR REPLACE FUNCTION realtime.consume_captured(ids bigint[])
RETURNS SETOF bigint
LANGUAGE sql
VOLATILE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
    DELETE FROM realtime.capture c WHERE c.id = ANY (consume_captured.ids) RETURNING c.id
$$;

-- Whether the relay waits for a NOTIFY. A NOTIFY serializes committing
-- transactions, so writers send one only while the relay sleeps; while it
-- is awake it keeps reading the capture table. Unlogged: after a crash the
-- row is gone and writers notify, which is always safe.
CREATE UNLOGGED TABLE IF NOT EXISTS realtime.wakeup (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    sleeping boolean NOT NULL DEFAULT true
);
INSERT INTO realtime.wakeup DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Wakes the relay if it sleeps (see realtime.wakeup).
CREATE OR REPLACE FUNCTION realtime.wake()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF coalesce((SELECT sleeping FROM realtime.wakeup), true) THEN
        PERFORM pg_notify('realtime_capture', '');
    END IF;
END
$$;

-- Every stored event, once, under its global sequence number.
CREATE TABLE IF NOT EXISTS realtime.outbox (
    seq          bigint      PRIMARY KEY,
    event        text        NOT NULL,
    rooms        text[]      NOT NULL,
    data         json        NOT NULL,  -- json keeps the exact text clients receive
    old          json,
    count        integer,               -- set on coalesced events: changes merged
    committed_at timestamptz NOT NULL
);

-- Which rooms each event went to, ordered for replay by (room, seq).
CREATE TABLE IF NOT EXISTS realtime.outbox_rooms (
    room text   NOT NULL,
    seq  bigint NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE INDEX IF NOT EXISTS outbox_rooms_seq ON realtime.outbox_rooms USING brin (seq);

-- The single writer's bookkeeping, one row. Each outbox transaction locks and
-- updates it, so seq is assigned in commit order with no hole and two relays
-- can never interleave.
CREATE TABLE IF NOT EXISTS realtime.state (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    head           bigint  NOT NULL DEFAULT 0,     -- last seq stored
    oldest         bigint  NOT NULL DEFAULT 1,     -- first seq still retained
    source_lsn     pg_lsn,                         -- logical: last source transaction applied
    source_changes bigint  NOT NULL DEFAULT 0,     -- logical: changes of it applied so far
    source_done    boolean NOT NULL DEFAULT true,  -- logical: whether all of it is applied
    capture_mode   text,
    triggers_active boolean NOT NULL DEFAULT false, -- logical: capture triggers were active at source_lsn
    drain_before   bigint,                         -- logical: capture rows below this id predate the slot
    drained        boolean NOT NULL DEFAULT true   -- logical: those rows were read from the table
) WITH (fillfactor = 10);
ALTER TABLE realtime.state SET (autovacuum_vacuum_scale_factor = 0,
                                autovacuum_vacuum_threshold = 1000,
                                autovacuum_vacuum_cost_delay = 0);
INSERT INTO realtime.state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Coalescing routes hold a burst here, durably, until its window closes and
-- it becomes one stored event carrying the latest row and a count.
CREATE TABLE IF NOT EXISTS realtime.pending (
    key          text        PRIMARY KEY,   -- event name and rooms
    event        text        NOT NULL,
    rooms        text[]      NOT NULL,
    data         json        NOT NULL,
    old          json,
    count        integer     NOT NULL,
    committed_at timestamptz NOT NULL,
    flush_at     timestamptz NOT NULL
);

-- History, readable with SQL: one row per (event, room).
CREATE OR REPLACE VIEW realtime.events AS
SELECT o.seq, o.event, r.room, o.data::jsonb AS data, o.old::jsonb AS old, o.committed_at
FROM realtime.outbox o
JOIN realtime.outbox_rooms r ON r.seq = o.seq;

-- One page of a room's history, for replay: its events with
-- after < seq <= upto, oldest first, at most lim. The plan is pinned to an
-- ordered walk of the room's index entries with one outbox lookup each, so
-- a page costs the same whatever the statistics say: with stale statistics
-- (a busy outbox between analyzes) the planner would otherwise read and
-- sort the room's whole remaining range for every page.
CREATE OR REPLACE FUNCTION realtime.room_page(room text, after bigint, upto bigint, lim bigint)
RETURNS TABLE (seq bigint, event text, data text, old text, count integer,
               committed_at timestamptz)
LANGUAGE sql
STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    SELECT o.seq, o.event, o.data::text, o.old::text, o.count, o.committed_at
    FROM realtime.outbox_rooms r
    JOIN realtime.outbox o ON o.seq = r.seq
    WHERE r.room = room_page.room AND r.seq > room_page.after AND r.seq <= room_page.upto
    ORDER BY r.seq
    LIMIT room_page.lim
$$;

-- Stores an event that is delivered if and only if the calling transaction
-- commits: the row goes through the capture table like any captured change.
CREATE OR REPLACE FUNCTION realtime.publish(rooms text[], event text, data jsonb)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF rooms IS NULL OR cardinality(rooms) = 0 THEN
        RAISE EXCEPTION 'realtime.publish: rooms must not be empty' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(rooms) AS r(room)
               WHERE room IS NULL OR room !~ '^[A-Za-z0-9_.:@-]{1,200}$') THEN
        RAISE EXCEPTION 'realtime.publish: invalid room name' USING ERRCODE = '22023';
    END IF;
    IF event IS NULL OR event !~ '^[A-Za-z0-9_.:-]{1,100}$' THEN
        RAISE EXCEPTION 'realtime.publish: invalid event name' USING ERRCODE = '22023';
    END IF;
    IF data IS NOT NULL AND jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'realtime.publish: data must be a JSON object' USING ERRCODE = '22023';
    END IF;
    INSERT INTO realtime.capture (tbl, op, new)
    VALUES ('', 'P', jsonb_build_object('rooms', to_jsonb(rooms), 'event', event,
                                        'data', coalesce(data, '{}'::jsonb)));
    PERFORM realtime.wake();
END
$$;

-- Users the relay has told the world are online. A relay that stopped
-- without closing its connections (a crash) finds them here at start-up and
-- stores their `offline`, so nobody stays online forever.
CREATE TABLE IF NOT EXISTS realtime.online (
    sub   text        PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

-- The join authorization rule. This default only knows `broadcast`, the
-- caller's own user room and service tokens; sql/authorize.sql installs the
-- demo application's full rule. A deployer's own function is never replaced.
DO $do$
BEGIN
    IF to_regprocedure('realtime.authorize(text,text,jsonb)') IS NULL THEN
        CREATE FUNCTION realtime.authorize(sub text, room text, claims jsonb)
        RETURNS boolean LANGUAGE sql STABLE AS $f$
            SELECT room = 'broadcast'
                OR room = 'user_' || sub
                OR coalesce(claims ->> 'role', '') = 'service'
        $f$;
    END IF;
    -- Presence: called when a user's first connection opens ('online') or
    -- last one closes ('offline'); returns the rooms to tell.
    IF to_regprocedure('realtime.presence(text,text)') IS NULL THEN
        CREATE FUNCTION realtime.presence(sub text, status text)
        RETURNS text[] LANGUAGE sql AS $f$
            SELECT ARRAY['user_' || sub]
        $f$;
    END IF;
END
$do$;
