//! The WebSocket gateway end to end: a real Postgres, the relay, and real
//! WebSocket clients (tokio-tungstenite).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::catalog::CASES;
use common::ws::*;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attacks_are_refused_before_the_upgrade() {
    let db = TestDb::demo().await;
    let mut config = config_for(&db.url, "trigger");
    config.gateway.cors = rowcast::config::CorsOrigins::List(vec!["https://app.example".into()]);
    let relay = start_relay_with(config).await;
    let addr = relay.addr;
    let url = |token: &str| format!("ws://{addr}/v1/ws?token={token}");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"sub":"1","exp":{}}}"#, now() + 60))
    );
    let cases = [
        ("missing", format!("ws://{addr}/v1/ws")),
        (
            "bad signature",
            url(&sign(
                &json!({"sub": "1", "exp": now() + 60}),
                jsonwebtoken::Algorithm::HS256,
                "not-the-secret-at-all",
            )),
        ),
        ("alg none", url(&none)),
        (
            "other algorithm",
            url(&sign(
                &json!({"sub": "1", "exp": now() + 60}),
                jsonwebtoken::Algorithm::HS512,
                SECRET,
            )),
        ),
        (
            "no exp",
            url(&sign(
                &json!({"sub": "1"}),
                jsonwebtoken::Algorithm::HS256,
                SECRET,
            )),
        ),
        (
            "expired",
            url(&sign(
                &json!({"sub": "1", "exp": now() - 10}),
                jsonwebtoken::Algorithm::HS256,
                SECRET,
            )),
        ),
        ("garbage", url("not.a.token")),
    ];
    for (what, url) in cases {
        let (status, body) = refused(url).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
        assert!(!body.to_string().contains(SECRET));
    }
    let mut request = url(&token("1")).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let (status, body) = refused(request).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");

    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://app.example".parse().unwrap());
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", token("1")).parse().unwrap(),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("allowed origin and header token");
    let ws = Ws::started(stream).await;
    assert_eq!(ws.welcome["user"], "1");
    assert_eq!(ws.welcome["heartbeat_ms"], 25000);
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_matches_the_rule() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_SEED).await.unwrap();
    let relay = start_relay(&db, "trigger").await;
    let all = ["1", "2", "3", "4", "service"];
    let matrix: &[(&str, &[&str])] = &[
        ("broadcast", &all),
        ("user_1", &["1", "service"]),
        ("user_2", &["2", "service"]),
        ("content_10", &all),
        ("content_11", &["1", "2", "service"]),
        ("content_12", &["1", "service"]),
        ("calendar_20", &["1", "4", "service"]),
        ("album_30", &all),
        ("album_31", &["1", "service"]),
        ("media_40", &all),
        ("media_41", &["1", "service"]),
        ("diary_50", &["1", "service"]),
        ("content_999", &["service"]),
        ("foo_1", &["service"]),
    ];
    let mut clients = Vec::new();
    for viewer in all {
        let token = if viewer == "service" {
            service_token()
        } else {
            token(viewer)
        };
        let mut ws = open(relay.addr, &token).await;
        let mut joined = BTreeSet::new();
        for (room, allowed) in matrix {
            let reply = ws.join(room).await;
            let expected = allowed.contains(&viewer);
            assert_eq!(
                reply["ok"],
                json!(expected),
                "{viewer} joining {room}: {reply}"
            );
            if !expected {
                assert_eq!(reply["error"]["code"], "forbidden");
            } else {
                joined.insert(room.to_string());
            }
        }
        let reply = ws.join("content_1; DROP TABLE users").await;
        assert_eq!(reply["error"]["code"], "bad_request");
        clients.push((viewer, ws, joined));
    }
    let users: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 4, "the database is untouched");

    // One change in every room; each client sees exactly the rooms it joined.
    client
        .batch_execute(
            "UPDATE content SET title = title || '!';
             UPDATE calendar_events SET title = 'ev!';
             UPDATE albums SET title = title || '!';
             UPDATE media SET caption = 'c';
             INSERT INTO diary_entries (diary_id, body) VALUES (50, 'x');
             UPDATE users SET bio = 'b' WHERE id IN (1, 2);",
        )
        .await
        .unwrap();
    barrier(&client).await;
    for (viewer, ws, joined) in &mut clients {
        let rooms: BTreeSet<String> = ws
            .drain()
            .await
            .iter()
            .filter(|f| f["type"] == "event")
            .map(|f| f["room"].as_str().unwrap().to_string())
            .collect();
        assert!(
            rooms.is_subset(joined),
            "{viewer} got frames of rooms it may not join: {rooms:?}"
        );
        for room in ["content_10", "album_30", "media_40"] {
            assert!(rooms.contains(room), "{viewer} missed {room}");
        }
    }
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_close_with_4001_unless_refreshed() {
    let (_db, _client, relay) = seeded_relay("trigger").await;
    let short = |sub: &str, secs: u64| {
        sign(
            &json!({"sub": sub, "exp": now() + secs}),
            jsonwebtoken::Algorithm::HS256,
            SECRET,
        )
    };
    let mut expiring = open(relay.addr, &short("1", 2)).await;
    let mut refreshed = open(relay.addr, &short("2", 2)).await;
    let reply = refreshed
        .request(json!({"type": "auth", "token": short("2", 3600)}))
        .await;
    assert_eq!(reply["ok"], true);
    let wrong = refreshed
        .request(json!({"type": "auth", "token": short("1", 3600)}))
        .await;
    assert_eq!(wrong["error"]["code"], "unauthorized");
    assert_eq!(expiring.closed().await, 4001);
    assert_eq!(
        refreshed.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    stop_relay(relay).await;
}

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
        let now = barrier(&client).await;
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
    barrier(&client).await;
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
    barrier(&client).await;
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
    barrier(&client).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_bad_request_and_oversize_closes_with_1009() {
    let (_db, _client, relay) = seeded_relay("trigger").await;
    let mut ws = open(relay.addr, &token("1")).await;
    for text in [
        "garbage",
        "{\"type\":\"teleport\",\"ref\":\"1\"}",
        "{\"type\":\"join\",\"ref\":\"2\"}",
        "{\"type\":\"join\",\"room\":42,\"ref\":\"3\"}",
        "{\"type\":\"emit\",\"room\":\"content_10\",\"event\":\"message\",\"data\":\"text\"}",
    ] {
        ws.send_text(text).await;
        let reply = ws.frame().await;
        assert_eq!(reply["error"]["code"], "bad_request", "{text}: {reply}");
    }
    assert_eq!(
        ws.join("content_10").await["ok"],
        true,
        "the connection keeps working"
    );
    let big = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(70_000));
    ws.send_text(&big).await;
    assert_eq!(ws.closed().await, 1009);
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_and_others_stay_served() {
    let (_db, _client, relay) = seeded_relay("trigger").await;
    let mut flooder = open(relay.addr, &token("3")).await;
    let mut other = open(relay.addr, &token("2")).await;
    for _ in 0..400 {
        flooder.send_unchecked(json!({"type": "ping"})).await;
    }
    let mut limited = 0;
    let code = loop {
        match flooder.receive().await {
            Received::Frame(f) if f["error"]["code"] == "rate_limited" => limited += 1,
            Received::Frame(_) => {}
            Received::Closed(code) => break code,
            Received::Ended => panic!("ended without a close frame"),
        }
    };
    assert!(limited > 0);
    assert_eq!(code, 4029);
    let reply = other.request(json!({"type": "ping"})).await;
    assert!(reply.is_object());
    assert_eq!(
        other.join("content_10").await["ok"],
        true,
        "the others are still served"
    );
    stop_relay(relay).await;
}

/// A client that never reads is closed with 4008 once its queue is full,
/// while the relay's memory does not follow the backlog; it then resumes
/// from where it stopped with `since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_4008_and_memory_stays_flat() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_SEED).await.unwrap();
    // Small outbox batches, so the relay's own working set stays small and
    // what is measured is how memory follows the stalled client's backlog.
    let (mut relay, addr) = spawn_listening_relay(
        &db,
        "trigger",
        &[
            ("ROWCAST_SEND_QUEUE", "256"),
            ("ROWCAST_BATCH_SIZE", "50"),
            ("MALLOC_ARENA_MAX", "2"),
            ("RUST_BACKTRACE", "1"),
        ],
    )
    .await;
    let mut reader = slow_client(addr, &token("1")).await;
    assert_eq!(reader.join("content_10").await["ok"], true);
    let start = barrier(&client).await;
    let rss_before = rss_kib(relay.id());
    // About 48 MB of events for a client that reads nothing.
    let payload = "y".repeat(16_000);
    for _ in 0..30 {
        client
            .execute(
                "SELECT realtime.publish(ARRAY['content_10'], 'bulk', jsonb_build_object('pad', $1::text, 'n', g))
                 FROM generate_series(1, 100) g",
                &[&payload],
            )
            .await
            .unwrap();
    }
    let overflowed = wait_for(
        "the send queue to overflow",
        Duration::from_secs(60),
        || async {
            let overflows = metric(addr, "rowcast_queue_overflows_total").await;
            (overflows >= 1.0).then_some(overflows)
        },
    )
    .await;
    assert!(overflowed >= 1.0);
    let rss_after = rss_kib(relay.id());
    let growth_mib = (rss_after as f64 - rss_before as f64) / 1024.0;
    eprintln!("relay RSS growth during a 48 MB backlog: {growth_mib:.1} MiB");
    assert!(
        growth_mib < 16.0,
        "relay RSS grew {growth_mib:.1} MiB for a 48 MB backlog"
    );

    // The client now reads: a prefix of the events in order, then 4008.
    let mut received = Vec::new();
    let code = loop {
        match reader.receive().await {
            Received::Frame(f) if f["type"] == "event" => received.push(f["seq"].as_i64().unwrap()),
            Received::Frame(_) => {}
            Received::Closed(code) => break code,
            Received::Ended => panic!("ended without the close frame"),
        }
    };
    assert_eq!(code, 4008);
    assert!(received.len() < 3000, "the backlog was cut short");
    assert!(received.windows(2).all(|w| w[0] < w[1]));
    let last = *received.last().unwrap_or(&start);

    // Resume with since: the rest, exactly.
    // Resume once everything is stored: the rest comes as a replay.
    barrier(&client).await;
    let mut again = open(addr, &token("1")).await;
    let reply = again
        .request(json!({"type": "join", "room": "content_10", "since": last}))
        .await;
    let expected: i64 = client
        .query_one(
            "SELECT count(*) FROM realtime.outbox_rooms WHERE room = 'content_10' AND seq > $1",
            &[&last],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reply["replayed"], expected);
    relay.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_changes_once_per_user_not_per_tab() {
    let (_db, client, relay) = seeded_relay("trigger").await;
    let mut bob = open(relay.addr, &token("2")).await;
    bob.join("user_2").await;
    let start = barrier(&client).await;
    bob.drain().await;
    let tab1 = open(relay.addr, &token("1")).await;
    let tab2 = open(relay.addr, &token("1")).await;
    drop(tab1);
    drop(tab2);
    let statuses = wait_for("alice online then offline", Duration::from_secs(20), || async {
        let rows = client
            .query(
                "SELECT data->>'status' FROM realtime.events
                 WHERE event = 'user-status-changed' AND room = 'user_2' AND data->>'user_id' = '1' AND seq > $1
                 ORDER BY seq",
                &[&start],
            )
            .await
            .ok()?;
        let statuses: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        (statuses.len() >= 2).then_some(statuses)
    })
    .await;
    assert_eq!(statuses, vec!["online", "offline"]);
    barrier(&client).await;
    let frames: Vec<Value> = bob
        .drain()
        .await
        .into_iter()
        .filter(|f| f["event"] == "user-status-changed" && f["data"]["user_id"] == 1)
        .collect();
    let seen: Vec<&str> = frames
        .iter()
        .map(|f| f["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(seen, vec!["online", "offline"]);
    let status: String = client
        .query_one("SELECT status FROM users WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "offline");
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_left_online_by_a_crash_go_offline_when_the_relay_restarts() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_SEED).await.unwrap();
    let (mut relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let _alice = open(addr, &token("1")).await;
    wait_for("alice online", Duration::from_secs(20), || async {
        (statuses(&client, "1").await == ["online"]).then_some(())
    })
    .await;
    relay.kill();
    assert_eq!(statuses(&client, "1").await, ["online"], "no offline yet");
    let (mut relay, _) = spawn_listening_relay(&db, "trigger", &[]).await;
    wait_for("alice offline", Duration::from_secs(20), || async {
        (statuses(&client, "1").await == ["online", "offline"]).then_some(())
    })
    .await;
    let left: i64 = client
        .query_one("SELECT count(*) FROM realtime.online", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    relay.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publish_and_history() {
    let (_db, client, relay) = seeded_relay("trigger").await;
    let addr = relay.addr;
    let body = json!({"rooms": ["content_10", "broadcast"], "event": "announcement", "data": {"title": "hi"}});
    let (status, reply) = http(
        addr,
        "POST",
        "/v1/publish",
        Some(&token("1")),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    let (status, _) = http(addr, "POST", "/v1/publish", None, Some(body.clone())).await;
    assert_eq!(status, 401);
    let (status, reply) = http(
        addr,
        "POST",
        "/v1/publish",
        Some(&service_token()),
        Some(json!({"rooms": [], "event": "x"})),
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, reply) = http(
        addr,
        "POST",
        "/v1/publish",
        Some(&service_token()),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let seq = reply["seq"].as_i64().unwrap();
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM realtime.events WHERE seq = $1",
            &[&seq],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2);

    for i in 0..5 {
        client
            .execute(
                "UPDATE content SET title = $1 WHERE id = 10",
                &[&format!("h{i}")],
            )
            .await
            .unwrap();
    }
    barrier(&client).await;
    let (status, page) = http(
        addr,
        "GET",
        "/v1/rooms/content_10/events?limit=3",
        Some(&token("3")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["seq"], seq);
    assert_eq!(events[0]["room"], "content_10");
    assert_eq!(page["gap"], false);
    assert!(page["head"].as_i64().unwrap() >= seq + 5);
    let after = events[2]["seq"].as_i64().unwrap();
    let (_, next) = http(
        addr,
        "GET",
        &format!("/v1/rooms/content_10/events?after={after}"),
        Some(&token("3")),
        None,
    )
    .await;
    let titles: Vec<&str> = next["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["h2", "h3", "h4"]);
    let (status, body) = http(
        addr,
        "GET",
        "/v1/rooms/content_12/events",
        Some(&token("3")),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = http(
        addr,
        "GET",
        "/v1/rooms/bad%20room/events",
        Some(&token("1")),
        None,
    )
    .await;
    assert_eq!(status, 400);
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let (_db, client, relay) = seeded_relay("trigger").await;
    let addr = relay.addr;
    assert_eq!(http(addr, "GET", "/healthz", None, None).await.0, 200);
    let (status, ready) = wait_for("ready", Duration::from_secs(10), || async {
        let (status, body) = http(addr, "GET", "/readyz", None, None).await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(ready["capture"], true);
    let mut ws = open(addr, &token("3")).await;
    ws.join("content_12").await;
    client
        .batch_execute("UPDATE content SET title = 'm' WHERE id = 10")
        .await
        .unwrap();
    barrier(&client).await;
    let (status, text) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap_or_default().to_string();
    for metric in [
        "rowcast_connections",
        "rowcast_rooms",
        "rowcast_joins_total",
        "rowcast_events_stored_total",
        "rowcast_delivery_latency_seconds_bucket",
    ] {
        assert!(text.contains(metric), "/metrics lacks {metric}");
    }
    assert!(text.contains("result=\"forbidden\""));
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_client_with_1001() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_SEED).await.unwrap();
    let (mut relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let mut clients = Vec::new();
    for user in ["1", "2", "3"] {
        let mut ws = open(addr, &token(user)).await;
        ws.join(&format!("user_{user}")).await;
        clients.push(ws);
    }
    relay.terminate();
    for ws in &mut clients {
        assert_eq!(ws.closed().await, 1001);
    }
    let exited = wait_for("the relay to exit", Duration::from_secs(30), || {
        let exited = relay.try_wait();
        async move { exited }
    })
    .await;
    assert!(exited.success(), "clean exit: {exited}");
    // The closed connections' users went offline, and that was stored
    // before capture stopped.
    for user in ["1", "2", "3"] {
        assert_eq!(
            statuses(&client, user).await,
            ["online", "offline"],
            "user {user}"
        );
    }
}
