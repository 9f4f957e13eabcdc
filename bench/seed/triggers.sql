-- The seed's change notifications: every insert or update of a watched
-- table calls pg_notify('row_changes', ...) with the table, the operation
-- and the whole new row; `server.js` LISTENs and emits to Socket.IO rooms.
-- NOTIFY is sent when the transaction commits (nothing on rollback); its
-- payload is limited to 8000 bytes, and a longer one fails the transaction.

CREATE OR REPLACE FUNCTION public.seed_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'row_changes',
        json_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'row', row_to_json(NEW))::text
    );
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS seed_notify ON public.messages;
CREATE TRIGGER seed_notify AFTER INSERT ON public.messages
    FOR EACH ROW EXECUTE FUNCTION public.seed_notify_change();

DROP TRIGGER IF EXISTS seed_notify ON public.content;
CREATE TRIGGER seed_notify AFTER INSERT OR UPDATE ON public.content
    FOR EACH ROW EXECUTE FUNCTION public.seed_notify_change();
