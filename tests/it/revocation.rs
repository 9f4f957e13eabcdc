//! Protocol 1.1 `left`: a member whose right to a room is taken away by a
//! commit (content made private, a friendship ended, an invite rejected) is
//! removed from the room and told so, and receives nothing more of it,
//! while members who keep the right go on receiving.

use crate::common;

use common::ws::*;
use common::*;
use serde_json::Value;
use tokio_postgres::Client;

async fn setup(client: &Client) {
    insert_basic_rows(client).await;
    client
        .batch_execute(
            "INSERT INTO content (id, author_id, title, body, visibility) VALUES
                (40, 1, 'open', 'b', 'public'), (41, 1, 'for friends', 'b', 'friends');
             INSERT INTO calendars (id, owner_id, name) VALUES (20, 1, 'cal');
             INSERT INTO calendar_events (id, calendar_id, title) VALUES (21, 20, 'ev');
             INSERT INTO calendar_invites (id, event_id, calendar_id, inviter_id, invitee_id)
                 VALUES (22, 21, 20, 1, 4);",
        )
        .await
        .expect("setup");
}

/// Reads until the `left` frame for `room`; returns it.
async fn left_frame(ws: &mut Ws, room: &str) -> Value {
    loop {
        let frame = ws.frame().await;
        if frame["type"] == "left" && frame["room"] == room {
            return frame;
        }
    }
}

/// Writes `change` in the revoked room, then a notification for `user`;
/// once the notification arrived, checks that nothing of `room` did.
async fn nothing_more_of(ws: &mut Ws, client: &Client, room: &str, change: &str, user: &str) {
    client.batch_execute(change).await.expect("change");
    client
        .execute(
            "INSERT INTO notifications (user_id, kind, body) VALUES ($1::text::bigint, 'marker', 'm')",
            &[&user],
        )
        .await
        .expect("marker");
    loop {
        let frame = ws.frame().await;
        assert_ne!(frame["room"], room, "delivered after left: {frame}");
        if frame["event"] == "notification" && frame["data"]["kind"] == "marker" {
            return;
        }
    }
}

async fn rights_taken_away_by_a_commit_remove_the_member(capture: &str) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    setup(&client).await;
    let relay = start_relay(&db, capture).await;

    let mut author = open(relay.addr, &token("1")).await;
    let mut stranger = open(relay.addr, &token("3")).await;
    let mut friend = open(relay.addr, &token("2")).await;
    let mut invitee = open(relay.addr, &token("4")).await;
    for (ws, room) in [
        (&mut author, "content_40"),
        (&mut stranger, "content_40"),
        (&mut friend, "content_41"),
        (&mut invitee, "calendar_20"),
    ] {
        assert_eq!(ws.join(room).await["ok"], true, "join {room}");
    }
    for (ws, user) in [
        (&mut stranger, "3"),
        (&mut friend, "2"),
        (&mut invitee, "4"),
    ] {
        assert_eq!(ws.join(&format!("user_{user}")).await["ok"], true);
    }

    // Public content made private: the stranger goes, the author stays.
    client
        .batch_execute("UPDATE content SET visibility = 'private' WHERE id = 40")
        .await
        .unwrap();
    let left = left_frame(&mut stranger, "content_40").await;
    assert_eq!(left["reason"], "forbidden");
    nothing_more_of(
        &mut stranger,
        &client,
        "content_40",
        "UPDATE content SET title = 'after' WHERE id = 40",
        "3",
    )
    .await;
    let seen: Vec<Value> = author.drain().await;
    assert!(
        seen.iter()
            .any(|f| f["event"] == "content-updated" && f["data"]["title"] == "after"),
        "the author keeps the room: {seen:?}"
    );
    assert!(seen.iter().all(|f| f["type"] != "left"));

    // A friendship ends: friends-only content of the other is gone.
    client
        .batch_execute("DELETE FROM friendships WHERE user_a = 1 AND user_b = 2")
        .await
        .unwrap();
    left_frame(&mut friend, "content_41").await;
    nothing_more_of(
        &mut friend,
        &client,
        "content_41",
        "UPDATE content SET title = 'still friends only' WHERE id = 41",
        "2",
    )
    .await;

    // An invite rejected no longer counts for the calendar.
    client
        .batch_execute("UPDATE calendar_invites SET status = 'rejected' WHERE id = 22")
        .await
        .unwrap();
    left_frame(&mut invitee, "calendar_20").await;
    nothing_more_of(
        &mut invitee,
        &client,
        "calendar_20",
        "UPDATE calendar_events SET title = 'moved' WHERE id = 21",
        "4",
    )
    .await;

    // The removed member may not simply come back.
    let again = stranger.join("content_40").await;
    assert_eq!(again["ok"], false);
    assert_eq!(again["error"]["code"], "forbidden");
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_taken_away_by_a_commit_remove_the_member_in_trigger_mode() {
    rights_taken_away_by_a_commit_remove_the_member("trigger").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_taken_away_by_a_commit_remove_the_member_in_logical_mode() {
    rights_taken_away_by_a_commit_remove_the_member("logical").await;
}
