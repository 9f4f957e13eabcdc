-- The demo application's authorization and presence rules. rowcast calls
-- these two functions; a deployer replaces them (CREATE OR REPLACE) to fit
-- their own schema, without touching the relay. Re-runnable, and safe to
-- apply before or after rowcast's migrations.
--
-- realtime.authorize(sub, room, claims) decides who may join a room:
--   broadcast      everyone
--   user_{id}      only that user
--   content_{id}   public content: anyone; its author; the author's friends
--                  when visibility is 'friends'
--   calendar_{id}  its owner, and anyone invited to one of its events
--                  (an invite that was rejected no longer counts)
--   media_{id}     the owner, or anyone when the media is public
--   album_{id}     the owner, or anyone when the album is public
--   diary_{id}     the owner only
--   chapter_{id}   (a chapter's collaborative document) whoever may join
--                  its content's room
--   anything else  refused
-- A token with "role": "service" may join any room.

CREATE SCHEMA IF NOT EXISTS realtime;

CREATE OR REPLACE FUNCTION realtime.authorize(sub text, room text, claims jsonb)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    kind   text;
    target bigint;
    uid    bigint;
BEGIN
    IF coalesce(claims ->> 'role', '') = 'service' THEN
        RETURN true;
    END IF;
    IF room = 'broadcast' THEN
        RETURN true;
    END IF;
    IF room !~ '^[a-z]+_[0-9]{1,18}$' OR sub !~ '^[0-9]{1,18}$' THEN
        RETURN false;
    END IF;
    kind := split_part(room, '_', 1);
    target := split_part(room, '_', 2)::bigint;
    uid := sub::bigint;

    CASE kind
    WHEN 'user' THEN
        RETURN target = uid;
    WHEN 'content' THEN
        RETURN EXISTS (
            SELECT 1 FROM public.content c
            WHERE c.id = target
              AND (c.visibility = 'public'
                   OR c.author_id = uid
                   OR (c.visibility = 'friends' AND public.are_friends(c.author_id, uid))));
    WHEN 'chapter' THEN
        -- A chapter's collaborative document: whoever may read its content.
        RETURN EXISTS (
            SELECT 1 FROM public.chapters ch
            WHERE ch.id = target
              AND realtime.authorize(sub, 'content_' || ch.content_id, claims));
    WHEN 'calendar' THEN
        RETURN EXISTS (SELECT 1 FROM public.calendars k WHERE k.id = target AND k.owner_id = uid)
            OR EXISTS (SELECT 1 FROM public.calendar_invites i
                       WHERE i.calendar_id = target AND i.invitee_id = uid AND i.status <> 'rejected');
    WHEN 'media' THEN
        RETURN EXISTS (SELECT 1 FROM public.media m
                       WHERE m.id = target AND (m.owner_id = uid OR m.visibility = 'public'));
    WHEN 'album' THEN
        RETURN EXISTS (SELECT 1 FROM public.albums a
                       WHERE a.id = target AND (a.owner_id = uid OR a.visibility = 'public'));
    WHEN 'diary' THEN
        RETURN EXISTS (SELECT 1 FROM public.diaries d WHERE d.id = target AND d.owner_id = uid);
    ELSE
        RETURN false;
    END CASE;
END
$$;

-- realtime.authorize_edit(sub, name, claims) decides who may edit a
-- collaborative document (reading it is realtime.authorize): a chapter's
-- document is edited by its content's author; a service token edits any.
CREATE OR REPLACE FUNCTION realtime.authorize_edit(sub text, name text, claims jsonb)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF coalesce(claims ->> 'role', '') = 'service' THEN
        RETURN true;
    END IF;
    IF name !~ '^chapter_[0-9]{1,18}$' OR sub !~ '^[0-9]{1,18}$' THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM public.chapters ch JOIN public.content c ON c.id = ch.content_id
        WHERE ch.id = split_part(name, '_', 2)::bigint AND c.author_id = sub::bigint);
END
$$;

-- Presence: rowcast calls this when a user's first connection opens
-- (status 'online') and when their last one closes ('offline'). The demo
-- keeps users.status current and tells the user's own room and each
-- friend's room.
CREATE OR REPLACE FUNCTION realtime.presence(sub text, status text)
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    uid bigint;
BEGIN
    IF sub !~ '^[0-9]{1,18}$' THEN
        RETURN ARRAY['user_' || sub];
    END IF;
    uid := sub::bigint;
    UPDATE public.users SET status = presence.status WHERE id = uid AND users.status IS DISTINCT FROM presence.status;
    RETURN ARRAY['user_' || sub] || coalesce((
        SELECT array_agg('user_' || CASE WHEN f.user_a = uid THEN f.user_b ELSE f.user_a END
                         ORDER BY CASE WHEN f.user_a = uid THEN f.user_b ELSE f.user_a END)
        FROM public.friendships f
        WHERE f.user_a = uid OR f.user_b = uid), ARRAY[]::text[]);
END
$$;
