-- Least privilege. Only the relay's own role (the owner of `realtime`) reads
-- or writes rowcast's tables. Application roles write their own tables: the
-- capture triggers run as their owner, so a writer needs no right on
-- `realtime` and cannot forge a change by writing the capture table.
-- Publishing an event from SQL is a right of its own: the NOLOGIN role
-- `rowcast_publisher`, granted to the roles that may call realtime.publish.

REVOKE ALL ON SCHEMA realtime FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA realtime FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA realtime FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA realtime FROM PUBLIC;
-- Functions created later in `realtime` (the capture trigger functions the
-- relay installs) start with no EXECUTE for PUBLIC either.
ALTER DEFAULT PRIVILEGES IN SCHEMA realtime REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- Roles belong to the cluster: another database may have created it, and a
-- role without CREATEROLE can still run rowcast (publish then stays with
-- the owner alone).
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rowcast_publisher') THEN
        CREATE ROLE rowcast_publisher NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'rowcast_publisher not created (no CREATEROLE): only the owner of realtime may publish';
END
$do$;

-- Wakes the relay if it sleeps (see realtime.wakeup). Runs as its owner
-- because the capture triggers and realtime.publish call it for any writer.
CREATE OR REPLACE FUNCTION realtime.wake()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce((SELECT sleeping FROM realtime.wakeup), true) THEN
        PERFORM pg_notify('realtime_capture', '');
    END IF;
END
$$;
REVOKE ALL ON FUNCTION realtime.wake() FROM PUBLIC;

-- Stores an event that is delivered if and only if the calling transaction
-- commits: the row goes through the capture table like any captured change.
-- It runs as its owner and writes only that one row; who may call it is
-- decided by EXECUTE (the owner and members of rowcast_publisher).
CREATE OR REPLACE FUNCTION realtime.publish(rooms text[], event text, data jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
REVOKE ALL ON FUNCTION realtime.publish(text[], text, jsonb) FROM PUBLIC;

DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rowcast_publisher') THEN
        GRANT USAGE ON SCHEMA realtime TO rowcast_publisher;
        GRANT EXECUTE ON FUNCTION realtime.publish(text[], text, jsonb) TO rowcast_publisher;
    END IF;
END
$do$;

-- The relay's helper functions read and write only rowcast's own tables;
-- pin their search_path so nothing on a caller's path can stand in.
ALTER FUNCTION realtime.take_captured(bigint, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION realtime.consume_captured(bigint[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION realtime.room_page(text, bigint, bigint, bigint) SET search_path = pg_catalog, pg_temp;
