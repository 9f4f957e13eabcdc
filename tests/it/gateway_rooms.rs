//! Rooms and replay end to end, in both capture modes: every catalog event
//! reaches the joined clients, a client that rejoins with `since` gets
//! exactly what it missed (also under concurrent writers), and emits reach
//! the other members of a room only.

use crate::common;

use std::collections::BTreeSet;

use common::catalog::CASES;
use common::ws::*;
use common::*;
use serde_json::{json, Value};

in_both_modes! {
    every_catalog_event_reaches_joined_clients => catalog_over_websocket,
    rejoining_with_since_replays_exactly_what_was_missed => replay_after_disconnect,
    replay_under_concurrent_writers_has_no_gap_or_duplicate => replay_under_writers,
}

async fn catalog_over_websocket(mode: &str) {
    let (_db, client, relay) = basic_relay(mode).await;
    let mut ws = open(relay.addr, &service_token()).await;
    let rooms: BTreeSet<&str> = CASES
        .iter()
        .flat_map(|c| c.expect.iter().flat_map(|(_, rooms)| rooms.iter().copied()))
        .filter(|r| *r != "broadcast")
        .collect();
    for room in &rooms {
        assert_eq!(ws.join(room).await["ok"], true);
    }
    let mut last = barrier(&client).await;
    ws.drain().await;
    for case in CASES {
        client.batch_execute(case.sql).await.unwrap();
        let now = barrier_delivered(&client, &relay).await;
        let frames: Vec<Value> = ws
            .drain()
            .await
            .into_iter()
            .filter(|f| f["type"] == "event")
            .collect();
        let mut got: Vec<(String, String)> = frames
            .iter()
            .map(|f| {
                (
                    f["event"].as_str().unwrap().to_string(),
                    f["room"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        let mut expected: Vec<(String, String)> = case
            .expect
            .iter()
            .flat_map(|(e, rooms)| rooms.iter().map(move |r| (e.to_string(), r.to_string())))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "after `{}`", case.sql);
        let stored = stored_between(&client, last, now).await;
        for frame in &frames {
            let seq = frame["seq"].as_i64().unwrap();
            let event = stored
                .iter()
                .find(|e| e.seq == seq)
                .expect("a frame for a stored event");
            assert_eq!(frame["data"], event.data);
            assert_eq!(frame.get("old").cloned(), event.old);
            assert!(frame["at"].as_str().unwrap().ends_with('Z'));
            let text = frame.to_string();
            for secret in ["email", "password_hash", "card_token", "secret", "hash-"] {
                assert!(!text.contains(secret), "a secret reached a frame: {text}");
            }
        }
        last = now;
    }
    stop_relay(relay).await;
}

fn seqs(frames: &[Value], room: &str) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f["type"] == "event" && f["room"] == room)
        .map(|f| f["seq"].as_i64().unwrap())
        .collect()
}

async fn replay_after_disconnect(mode: &str) {
    let (_db, client, relay) = seeded_relay(mode).await;
    let mut ws = open(relay.addr, &token("1")).await;
    ws.join("content_10").await;
    client
        .batch_execute("UPDATE content SET title = 'before' WHERE id = 10")
        .await
        .unwrap();
    barrier_delivered(&client, &relay).await;
    let before = ws.drain().await;
    let last = *seqs(&before, "content_10").last().expect("a live event");
    drop(ws);

    for i in 0..100 {
        client
            .execute(
                "UPDATE content SET title = $1 WHERE id = 10",
                &[&format!("t{i}")],
            )
            .await
            .unwrap();
    }
    barrier(&client).await;
    let mut ws = open(relay.addr, &token("1")).await;
    let reply = ws
        .request(json!({"type": "join", "room": "content_10", "since": last}))
        .await;
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["replayed"], 100);
    assert!(reply.get("gap").is_none());
    let replayed = ws.drain().await;
    let titles: Vec<String> = replayed
        .iter()
        .filter(|f| f["room"] == "content_10")
        .map(|f| f["data"]["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        titles,
        (0..100).map(|i| format!("t{i}")).collect::<Vec<_>>()
    );
    let got = seqs(&replayed, "content_10");
    assert!(got.windows(2).all(|w| w[0] < w[1]) && got[0] > last);

    client
        .batch_execute("UPDATE content SET title = 'live' WHERE id = 10")
        .await
        .unwrap();
    barrier_delivered(&client, &relay).await;
    let live = ws.drain().await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["data"]["title"], "live");
    assert!(live[0]["seq"].as_i64().unwrap() > *got.last().unwrap());
    stop_relay(relay).await;
}

async fn replay_under_writers(mode: &str) {
    let (db, client, relay) = seeded_relay(mode).await;
    client
        .batch_execute("UPDATE content SET body = '0' WHERE id = 10")
        .await
        .unwrap();
    let since = barrier(&client).await;
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move {
                let c = connect(&url).await;
                for _ in 0..60 {
                    c.execute(
                        "UPDATE content SET body = (body::int + 1)::text WHERE id = 10",
                        &[],
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    // Join while the writers run.
    let mut ws = open(relay.addr, &token("1")).await;
    let reply = ws
        .request(json!({"type": "join", "room": "content_10", "since": since}))
        .await;
    assert_eq!(reply["ok"], true);
    for writer in writers {
        writer.await.unwrap();
    }
    barrier_delivered(&client, &relay).await;
    let frames = ws.drain().await;
    let got = seqs(&frames, "content_10");
    let bodies: Vec<i64> = frames
        .iter()
        .filter(|f| f["room"] == "content_10")
        .map(|f| f["data"]["body"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        bodies,
        (1..=480).collect::<Vec<i64>>(),
        "every change once, in commit order"
    );
    let stored: Vec<i64> = client
        .query(
            "SELECT seq FROM realtime.outbox_rooms WHERE room = 'content_10' AND seq > $1 ORDER BY seq",
            &[&since],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        got, stored,
        "no gap and no duplicate between replay and live"
    );
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emits_reach_the_other_members_only() {
    let (_db, _client, relay) = seeded_relay("trigger").await;
    let mut alice = open(relay.addr, &token("1")).await;
    let mut bob = open(relay.addr, &token("2")).await;
    let mut carol = open(relay.addr, &token("3")).await;
    alice.join("content_11").await;
    bob.join("content_11").await;
    carol.join("content_10").await;
    let reply = alice
        .request(json!({"type": "emit", "room": "content_11", "event": "message", "data": {"text": "hi"}}))
        .await;
    assert_eq!(reply["ok"], true);
    let got = bob.frame().await;
    assert_eq!(
        got,
        json!({"type": "event", "room": "content_11", "event": "message", "from": "1", "data": {"text": "hi"}})
    );
    assert!(got.get("seq").is_none(), "ephemeral events carry no seq");
    assert!(
        alice.drain().await.is_empty(),
        "the sender does not get its own emit"
    );
    assert!(carol.drain().await.is_empty());
    let refused = alice
        .request(
            json!({"type": "emit", "room": "content_11", "event": "content-deleted", "data": {}}),
        )
        .await;
    assert_eq!(refused["error"]["code"], "forbidden");
    let refused = alice
        .request(json!({"type": "emit", "room": "content_10", "event": "message", "data": {}}))
        .await;
    assert_eq!(
        refused["error"]["code"], "forbidden",
        "a room the sender has not joined"
    );
    stop_relay(relay).await;
}

/// A stranger in a public album's room sees public media come and go, and
/// never anything of private media: not live, not in history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_media_in_a_public_album_reaches_no_album_member() {
    let (_db, client, relay) = seeded_relay("trigger").await;
    let mut stranger = open(relay.addr, &token("3")).await;
    assert_eq!(stranger.join("album_30").await["ok"], true);
    assert_eq!(stranger.join("user_3").await["ok"], true);
    client
        .batch_execute(
            "INSERT INTO media (id, owner_id, album_id, url, caption, visibility)
                 VALUES (60, 1, 30, 'u', 'hidden caption', 'private');
             UPDATE media SET caption = 'still hidden' WHERE id = 60;
             INSERT INTO media (id, owner_id, album_id, url, caption, visibility)
                 VALUES (61, 1, 30, 'u', 'shown', 'public');
             UPDATE media SET visibility = 'private', caption = 'now hidden' WHERE id = 61;
             INSERT INTO notifications (user_id, kind, body) VALUES (3, 'marker', 'm');",
        )
        .await
        .unwrap();
    let mut album = Vec::new();
    loop {
        let frame = stranger.frame().await;
        if frame["event"] == "notification" {
            break;
        }
        if frame["room"] == "album_30" {
            album.push(frame);
        }
    }
    let text = serde_json::to_string(&album).unwrap();
    assert!(!text.contains("hidden"), "{text}");
    assert!(album.iter().all(|f| f["data"]["id"] == 61), "{text}");
    assert_eq!(
        album.len(),
        2,
        "uploaded public, then left the album: {text}"
    );
    let (status, history) = rowcast_devkit::http::json(
        relay.addr,
        "GET",
        "/v1/rooms/album_30/events",
        Some(&token("3")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(!history.to_string().contains("hidden"), "{history}");
    stop_relay(relay).await;
}
