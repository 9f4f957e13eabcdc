//! The event catalog as plain SQL writes on the demo schema and the events
//! (name, rooms) each must produce. Applied in order on a database seeded
//! with [`super::insert_basic_rows`].

/// One write and the events it must produce (event, rooms), in any order.
pub struct Case {
    pub sql: &'static str,
    pub expect: &'static [(&'static str, &'static [&'static str])],
}

pub const CASES: &[Case] = &[
    Case { sql: "INSERT INTO content (id, author_id, title, body) VALUES (10, 1, 't', 'b')",
           expect: &[("content-created", &["content_10", "user_1"])] },
    Case { sql: "UPDATE content SET title = 't2' WHERE id = 10",
           expect: &[("content-updated", &["content_10", "user_1"])] },
    Case { sql: "INSERT INTO chapters (id, content_id, title) VALUES (20, 10, 'one')",
           expect: &[("chapter-created", &["content_10"])] },
    Case { sql: "UPDATE chapters SET title = 'uno' WHERE id = 20",
           expect: &[("chapter-updated", &["content_10"])] },
    Case { sql: "DELETE FROM chapters WHERE id = 20",
           expect: &[("chapter-deleted", &["content_10"])] },
    Case { sql: "INSERT INTO content_ratings (content_id, user_id, rating) VALUES (10, 2, 4)",
           expect: &[("content-rated", &["content_10"])] },
    Case { sql: "UPDATE content_ratings SET rating = 5 WHERE content_id = 10 AND user_id = 2",
           expect: &[("content-rated", &["content_10"])] },
    Case { sql: "UPDATE users SET display_name = 'Bobby', bio = 'hi' WHERE id = 2",
           expect: &[("user-profile-updated", &["user_2"])] },
    Case { sql: "UPDATE users SET email = 'new@secret.example', password_hash = 'hash-new' WHERE id = 2",
           expect: &[] },
    Case { sql: "UPDATE users SET status = 'online' WHERE id = 2", expect: &[] },
    Case { sql: "INSERT INTO friend_requests (id, requester_id, addressee_id) VALUES (30, 3, 4)",
           expect: &[("friend-request-sent", &["user_3"]), ("friend-request-received", &["user_4"])] },
    Case { sql: "UPDATE friend_requests SET status = 'accepted' WHERE id = 30",
           expect: &[("friend-request-accepted", &["user_3", "user_4"])] },
    Case { sql: "INSERT INTO friend_requests (id, requester_id, addressee_id) VALUES (31, 4, 1)",
           expect: &[("friend-request-sent", &["user_4"]), ("friend-request-received", &["user_1"])] },
    Case { sql: "UPDATE friend_requests SET status = 'rejected' WHERE id = 31",
           expect: &[("friend-request-rejected", &["user_4"])] },
    Case { sql: "DELETE FROM friendships WHERE user_a = 1 AND user_b = 2",
           expect: &[("friendship-ended", &["user_1", "user_2"])] },
    Case { sql: "INSERT INTO calendars (id, owner_id, name) VALUES (40, 1, 'c')", expect: &[] },
    Case { sql: "INSERT INTO calendar_events (id, calendar_id, title) VALUES (41, 40, 'e')",
           expect: &[("calendar-event-created", &["calendar_40"])] },
    Case { sql: "UPDATE calendar_events SET title = 'e2' WHERE id = 41",
           expect: &[("calendar-event-updated", &["calendar_40"])] },
    Case { sql: "INSERT INTO calendar_invites (id, event_id, calendar_id, inviter_id, invitee_id) VALUES (42, 41, 40, 1, 3)",
           expect: &[("calendar-invite-received", &["user_3"])] },
    Case { sql: "UPDATE calendar_invites SET status = 'accepted' WHERE id = 42",
           expect: &[("calendar-invite-accepted", &["user_1", "calendar_40"])] },
    Case { sql: "INSERT INTO calendar_invites (id, event_id, calendar_id, inviter_id, invitee_id) VALUES (43, 41, 40, 1, 4)",
           expect: &[("calendar-invite-received", &["user_4"])] },
    Case { sql: "UPDATE calendar_invites SET status = 'rejected' WHERE id = 43",
           expect: &[("calendar-invite-rejected", &["user_1", "calendar_40"])] },
    Case { sql: "DELETE FROM calendar_events WHERE id = 41",
           expect: &[("calendar-event-deleted", &["calendar_40"])] },
    Case { sql: "INSERT INTO albums (id, owner_id, title) VALUES (50, 3, 'a')",
           expect: &[("album-created", &["album_50", "user_3"])] },
    Case { sql: "UPDATE albums SET title = 'a2' WHERE id = 50",
           expect: &[("album-updated", &["album_50", "user_3"])] },
    Case { sql: "INSERT INTO media (id, owner_id, album_id, url) VALUES (60, 3, 50, 'u')",
           expect: &[("media-uploaded", &["media_60", "user_3", "album_50"])] },
    Case { sql: "INSERT INTO media (id, owner_id, url) VALUES (61, 3, 'u')",
           expect: &[("media-uploaded", &["media_61", "user_3"])] },
    Case { sql: "UPDATE media SET caption = 'c' WHERE id = 61",
           expect: &[("media-updated", &["media_61", "user_3"])] },
    Case { sql: "DELETE FROM media WHERE id = 61",
           expect: &[("media-deleted", &["media_61", "user_3"])] },
    // The media leaves the album (album_id set to NULL): the album's room
    // hears it left, the media's own rooms get the new row.
    Case { sql: "DELETE FROM albums WHERE id = 50",
           expect: &[("media-updated", &["media_60", "user_3"]),
                     ("media-updated", &["album_50"]),
                     ("album-deleted", &["album_50", "user_3"])] },
    Case { sql: "INSERT INTO diaries (id, owner_id, title) VALUES (70, 2, 'd')", expect: &[] },
    Case { sql: "INSERT INTO diary_entries (id, diary_id, body) VALUES (71, 70, 'x')",
           expect: &[("diary-entry-created", &["diary_70"])] },
    Case { sql: "UPDATE diary_entries SET body = 'y' WHERE id = 71",
           expect: &[("diary-entry-updated", &["diary_70"])] },
    Case { sql: "DELETE FROM diary_entries WHERE id = 71",
           expect: &[("diary-entry-deleted", &["diary_70"])] },
    Case { sql: "INSERT INTO messages (id, sender_id, recipient_id, body) VALUES (80, 1, 2, 'hi')",
           expect: &[("message-sent", &["user_1"]), ("message-received", &["user_2"])] },
    Case { sql: "INSERT INTO payments (id, user_id, amount_cents, card_token) VALUES (90, 2, 500, 'tok_secret_1')",
           expect: &[] },
    Case { sql: "UPDATE payments SET status = 'completed' WHERE id = 90",
           expect: &[("payment-completed", &["user_2"])] },
    Case { sql: "UPDATE payments SET amount_cents = 600 WHERE id = 90", expect: &[] },
    Case { sql: "INSERT INTO payments (id, user_id, amount_cents, status, card_token) VALUES (91, 2, 700, 'completed', 'tok_secret_2')",
           expect: &[("payment-completed", &["user_2"])] },
    Case { sql: "INSERT INTO subscriptions (id, user_id, plan, status) VALUES (100, 2, 'pro', 'active')",
           expect: &[("subscription-updated", &["user_2"])] },
    Case { sql: "UPDATE subscriptions SET status = 'cancelled' WHERE id = 100",
           expect: &[("subscription-updated", &["user_2"])] },
    Case { sql: "INSERT INTO ads (id, advertiser_id, title) VALUES (110, 4, 'ad')", expect: &[] },
    Case { sql: "INSERT INTO ad_views (id, ad_id, advertiser_id, viewer_id) VALUES (111, 110, 4, 2)",
           expect: &[("ad-view-logged", &["user_4"])] },
    Case { sql: "INSERT INTO notifications (id, user_id, kind, body) VALUES (120, 2, 'k', 'b')",
           expect: &[("notification", &["user_2"])] },
    Case { sql: "UPDATE notifications SET read_at = now() WHERE id = 120",
           expect: &[("notification-read", &["user_2"])] },
    Case { sql: "UPDATE notifications SET read_at = now() + interval '1 hour' WHERE id = 120", expect: &[] },
    Case { sql: "INSERT INTO announcements (id, title, body) VALUES (130, 'news', 'b')",
           expect: &[("announcement", &["broadcast"])] },
    Case { sql: "SELECT realtime.publish(ARRAY['broadcast', 'user_1'], 'custom-thing', '{\"k\": 1}')",
           expect: &[("custom-thing", &["broadcast", "user_1"])] },
    Case { sql: "DELETE FROM content WHERE id = 10",
           expect: &[("content-deleted", &["content_10", "user_1"])] },
];

/// Every event the repository's `routes.toml` can store, read from the
/// file itself (the cases above must produce each of them).
pub fn routed_events() -> std::collections::BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
    let router = rowcast::Router::from_path(&path).expect("routes.toml compiles");
    router
        .tables()
        .flat_map(|table| table.routes.iter().map(|route| route.event.to_string()))
        .collect()
}
