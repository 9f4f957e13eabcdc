//! Capture → routes → outbox against a real Postgres, in both capture modes:
//! every stored event of the catalog from a plain SQL write, secrets never
//! stored, rollbacks storing nothing, coalescing, and exactly-once under 8
//! concurrent writers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Declares one test per capture mode for an `async fn(&str)` body.
macro_rules! in_both_modes {
    ($($name:ident => $body:ident),* $(,)?) => {
        mod trigger_mode {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$body("trigger").await })*
        }
        mod logical_mode {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$body("logical").await })*
        }
    };
}

in_both_modes! {
    every_catalog_event_reaches_exactly_its_rooms => catalog,
    rolled_back_transactions_store_nothing => rollback,
    publish_stores_only_on_commit => publish,
    bursts_of_views_coalesce_into_one_event => coalesce,
    concurrent_writers_are_stored_exactly_once_in_commit_order => concurrent_writers,
}

/// One write and the events it must produce (event, rooms), in any order.
struct Case {
    sql: &'static str,
    expect: &'static [(&'static str, &'static [&'static str])],
}

const CASES: &[Case] = &[
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
    Case { sql: "DELETE FROM albums WHERE id = 50",
           expect: &[("media-updated", &["media_60", "user_3", "album_50"]),
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

fn normalized(events: &[(String, Vec<String>)]) -> Vec<(String, Vec<String>)> {
    let mut events = events.to_vec();
    events.sort();
    events
}

async fn catalog(mode: &str) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    seed_basic(&client).await;
    let relay = start_relay(&db, mode).await;
    let mut last = barrier(&client).await;
    for case in CASES {
        client
            .batch_execute(case.sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.sql));
        let now = barrier(&client).await;
        let got: Vec<(String, Vec<String>)> = stored_between(&client, last, now)
            .await
            .into_iter()
            .map(|e| (e.event, e.rooms))
            .collect();
        let expected: Vec<(String, Vec<String>)> = case
            .expect
            .iter()
            .map(|(e, rooms)| (e.to_string(), rooms.iter().map(|r| r.to_string()).collect()))
            .collect();
        assert_eq!(
            normalized(&got),
            normalized(&expected),
            "after `{}`",
            case.sql
        );
        last = now;
    }

    let all = stored_between(&client, 0, last).await;
    let update = all.iter().find(|e| e.event == "content-updated").unwrap();
    assert_eq!(update.old, Some(json!({"title": "t"})));
    assert_eq!(update.data["title"], "t2");
    let profile = all
        .iter()
        .find(|e| e.event == "user-profile-updated")
        .unwrap();
    assert_eq!(
        profile.old,
        Some(json!({"display_name": null, "bio": null}))
    );
    let deleted = all.iter().find(|e| e.event == "content-deleted").unwrap();
    assert_eq!(deleted.data["id"], 10);
    let custom = all.iter().find(|e| e.event == "custom-thing").unwrap();
    assert_eq!(custom.data, json!({"k": 1}));

    let leaked: i64 = client
        .query_one(
            "SELECT count(*) FROM realtime.outbox
             WHERE data::text ~ '(email|password_hash|card_token|secret|hash-)'
                OR coalesce(old::text, '') ~ '(email|password_hash|card_token|secret|hash-)'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "a secret column reached a stored event");
    stop_relay(relay).await;
}

async fn rollback(mode: &str) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    seed_basic(&client).await;
    let relay = start_relay(&db, mode).await;
    let before = barrier(&client).await;
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO content (id, author_id, title) VALUES (1, 1, 'never');
             UPDATE users SET display_name = 'never' WHERE id = 1;
             DELETE FROM friendships;
             ROLLBACK;",
        )
        .await
        .unwrap();
    let after = barrier(&client).await;
    assert!(stored_between(&client, before, after).await.is_empty());
    assert_eq!(
        after,
        before + 1,
        "no seq was used by the rolled-back transaction"
    );
    stop_relay(relay).await;
}

async fn publish(mode: &str) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    let relay = start_relay(&db, mode).await;
    let before = barrier(&client).await;
    client
        .batch_execute(
            "BEGIN;
             SELECT realtime.publish(ARRAY['broadcast'], 'announcement', '{\"title\": \"rolled back\"}');
             ROLLBACK;
             BEGIN;
             SELECT realtime.publish(ARRAY['broadcast'], 'announcement', '{\"title\": \"kept\"}');
             COMMIT;",
        )
        .await
        .unwrap();
    let after = barrier(&client).await;
    let events = stored_between(&client, before, after).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].data, json!({"title": "kept"}));
    assert_eq!(events[0].rooms, vec!["broadcast"]);

    let bad = client
        .execute("SELECT realtime.publish(ARRAY['a b'], 'x', '{}')", &[])
        .await
        .unwrap_err();
    let message = bad
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("invalid room name"), "{bad:?}");
    stop_relay(relay).await;
}

async fn coalesce(mode: &str) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    seed_basic(&client).await;
    client
        .batch_execute("INSERT INTO content (id, author_id, title) VALUES (5, 1, 'x'), (6, 1, 'y')")
        .await
        .unwrap();
    let relay = start_relay(&db, mode).await;
    let before = barrier(&client).await;
    for _ in 0..25 {
        client
            .batch_execute("INSERT INTO content_views (content_id, user_id) VALUES (5, 2)")
            .await
            .unwrap();
    }
    client
        .batch_execute("INSERT INTO content_views (content_id, user_id) VALUES (6, 3)")
        .await
        .unwrap();
    let views = wait_for("coalesced view events", Duration::from_secs(15), || async {
        let events: Vec<Stored> = stored_between(&client, before, i64::MAX)
            .await
            .into_iter()
            .filter(|e| e.event == "content-viewed")
            .collect();
        let total: i32 = events.iter().map(|e| e.count.unwrap_or(0)).sum();
        (total == 26).then_some(events)
    })
    .await;
    assert!(
        views.len() <= 4,
        "a burst of 25 views should coalesce: {views:?}"
    );
    let for_5: Vec<&Stored> = views.iter().filter(|e| e.rooms == ["content_5"]).collect();
    let for_6: Vec<&Stored> = views.iter().filter(|e| e.rooms == ["content_6"]).collect();
    assert_eq!(for_6.len(), 1);
    assert_eq!(for_6[0].count, Some(1));
    assert_eq!(for_5.iter().map(|e| e.count.unwrap()).sum::<i32>(), 25);
    let last_view: i64 = client
        .query_one(
            "SELECT max(id) FROM content_views WHERE content_id = 5",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        for_5.last().unwrap().data["id"],
        last_view,
        "the latest row is carried"
    );
    let pending: i64 = client
        .query_one("SELECT count(*) FROM realtime.pending", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0);
    stop_relay(relay).await;
}

async fn concurrent_writers(mode: &str) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    burst::setup(&client).await;
    let relay = start_relay(&db, mode).await;
    let writers = burst::start(&db.url, 8, 500);
    burst::join(writers).await;
    let until = barrier(&client).await;
    burst::verify(&client, until).await;
    stop_relay(relay).await;
}
