-- Collaborative documents (Yjs, over the y-websocket protocol). Every
-- update a writer sends is stored here before anyone else sees it; opening
-- a document replays its rows in id order, and merges them into one row
-- once there are many.

CREATE TABLE IF NOT EXISTS realtime.doc_updates (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc        text        NOT NULL,   -- the document's name, a room name
    data       bytea       NOT NULL,   -- one Yjs update (v1 encoding)
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS doc_updates_doc ON realtime.doc_updates (doc, id);

REVOKE ALL ON realtime.doc_updates FROM PUBLIC;

-- Who may edit a document. Reading is joining room `name`
-- (realtime.authorize); this default lets whoever may read also write. A
-- deployer's own function is never replaced.
DO $do$
BEGIN
    IF to_regprocedure('realtime.authorize_edit(text,text,jsonb)') IS NULL THEN
        CREATE FUNCTION realtime.authorize_edit(sub text, name text, claims jsonb)
        RETURNS boolean LANGUAGE sql STABLE
        SET search_path = pg_catalog, pg_temp
        AS $f$
            SELECT realtime.authorize(sub, name, claims)
        $f$;
    END IF;
END
$do$;
