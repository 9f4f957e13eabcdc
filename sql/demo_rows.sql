-- Demo data for `rowcast dev`: four users, a friendship, and one of every
-- kind of thing the demo writer then keeps changing. Re-runnable.

INSERT INTO public.users (id, username, display_name, bio, email, password_hash) VALUES
    (1, 'alice', 'Alice', 'Writes serials.', 'alice@example.com', 'not-a-real-hash'),
    (2, 'bob',   'Bob',   'Reads everything.', 'bob@example.com', 'not-a-real-hash'),
    (3, 'carol', 'Carol', 'Takes photos.', 'carol@example.com', 'not-a-real-hash'),
    (4, 'dave',  'Dave',  'Sells ads.', 'dave@example.com', 'not-a-real-hash')
ON CONFLICT DO NOTHING;

INSERT INTO public.friendships (user_a, user_b) VALUES (1, 2) ON CONFLICT DO NOTHING;

INSERT INTO public.content (id, author_id, title, body, visibility) VALUES
    (1, 1, 'The Lighthouse', 'Chapter list inside.', 'public'),
    (2, 1, 'Notes for friends', 'Only friends see this.', 'friends'),
    (3, 1, 'Drafts', 'Private.', 'private')
ON CONFLICT DO NOTHING;
INSERT INTO public.chapters (id, content_id, title, body, position) VALUES
    (1, 1, 'Arrival', 'It was raining.', 1)
ON CONFLICT DO NOTHING;
INSERT INTO public.calendars (id, owner_id, name) VALUES (1, 1, 'Readings') ON CONFLICT DO NOTHING;
INSERT INTO public.calendar_events (id, calendar_id, title, starts_at, ends_at) VALUES
    (1, 1, 'Launch reading', now() + interval '7 days', now() + interval '7 days 2 hours')
ON CONFLICT DO NOTHING;
INSERT INTO public.calendar_invites (id, event_id, calendar_id, inviter_id, invitee_id) VALUES
    (1, 1, 1, 1, 2)
ON CONFLICT DO NOTHING;
INSERT INTO public.albums (id, owner_id, title, visibility) VALUES (1, 3, 'Coast', 'public') ON CONFLICT DO NOTHING;
INSERT INTO public.media (id, owner_id, album_id, url, caption) VALUES
    (1, 3, 1, 'https://example.com/coast-1.jpg', 'Morning')
ON CONFLICT DO NOTHING;
INSERT INTO public.diaries (id, owner_id, title) VALUES (1, 2, 'Reading log') ON CONFLICT DO NOTHING;
INSERT INTO public.ads (id, advertiser_id, title) VALUES (1, 4, 'Buy a lighthouse') ON CONFLICT DO NOTHING;

-- Identity columns continue after the explicit ids above.
SELECT setval(pg_get_serial_sequence('public.' || t, 'id'), 1000, false)
FROM unnest(ARRAY['users', 'content', 'chapters', 'calendars', 'calendar_events',
                  'calendar_invites', 'albums', 'media', 'diaries', 'ads']) AS t
WHERE (SELECT last_value FROM pg_sequences
       WHERE schemaname = 'public' AND sequencename = t || '_id_seq') IS NULL;
