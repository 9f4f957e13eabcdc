//! `/socket.io/` with an unchanged `socket.io-client` 4.8.4 (run by Node):
//! `auth.token`, joins acknowledged with the protocol's reply, stored events
//! as Socket.IO events named after them, resume with `since` across a relay
//! restart with no gap and no duplicate, the polling transport, client
//! events relayed between Socket.IO and `/v1/ws` clients, and the seed's
//! own event names. Skipped, with a message, where node is not installed.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::driver::Driver;
use common::ws::*;
use common::*;
use serde_json::{json, Value};

/// Whether the Node clients can run here (says why not when they cannot).
fn node_available() -> bool {
    common::required("node", common::node::missing().map(str::to_string))
}

async fn update_content(client: &tokio_postgres::Client, times: usize) {
    for i in 0..times {
        client
            .execute(
                "UPDATE content SET title = $1 WHERE id = 10",
                &[&format!("title {i} {}", now())],
            )
            .await
            .unwrap();
    }
}

/// Seqs of stored events of room `content_10` after `after`, in order.
async fn stored_seqs(client: &tokio_postgres::Client, after: i64) -> Vec<i64> {
    let head = head(client).await;
    stored_between(client, after, head)
        .await
        .into_iter()
        .filter(|e| e.rooms.iter().any(|r| r == "content_10"))
        .map(|e| e.seq)
        .collect()
}

/// `sio` emits `user-typing` to `content_10`; returns the frame `ws` gets.
async fn typing_reaches(sio: &mut Driver, ws: &mut Ws) -> Value {
    let reply = sio
        .request(
            "user-typing",
            json!({"room": "content_10", "data": {"typing": true}}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    ws.next_event("user-typing").await
}

fn seqs(frames: &[Value]) -> Vec<i64> {
    frames.iter().map(|f| f["seq"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_joins_receives_and_resumes_across_a_restart() {
    if !node_available() {
        return;
    }
    let (db, client) = public_posts_db().await;
    let port = rowcast_devkit::process::free_port();
    let (relay, addr) = spawn_relay_on(&db, "trigger", port, &[]).await;
    let mut sio = Driver::socket_io(addr, &token("2"), &["websocket"]).await;
    let welcome = sio.wait_events("welcome", 1).await;
    assert_eq!(welcome[0]["user"], "2");

    let reply = sio.request("join", json!({"room": "content_10"})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["room"], "content_10");
    assert_eq!(reply["replayed"], 0);
    assert!(
        reply.get("ref").is_none(),
        "internal refs stay inside: {reply}"
    );
    let joined_at = reply["head"].as_i64().unwrap();

    update_content(&client, 5).await;
    let live = sio.wait_events("content-updated", 5).await;
    for frame in &live {
        assert_eq!(frame["type"], "event");
        assert_eq!(frame["room"], "content_10");
        assert_eq!(frame["event"], "content-updated");
        assert!(frame["data"]["title"].is_string());
    }
    assert_eq!(seqs(&live), stored_seqs(&client, joined_at).await);
    let last = *seqs(&live).last().unwrap();

    // The relay stops; writes go on; a new relay starts on the same port.
    relay.stop(Duration::from_secs(20)).await;
    sio.nth("disconnect", 1).await;
    update_content(&client, 4).await;
    let (_relay, _) = spawn_relay_on(&db, "trigger", port, &[]).await;
    let connect = sio.nth("connect", 2).await;
    assert_eq!(connect["transport"], "websocket");

    let reply = sio
        .request("join", json!({"room": "content_10", "since": last}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["replayed"], 4, "{reply}");
    assert!(reply.get("gap").is_none() || reply["gap"] == false);
    update_content(&client, 3).await;
    let all = sio.wait_events("content-updated", 5 + 4 + 3).await;
    let after = seqs(&all[5..]);
    assert_eq!(
        after,
        stored_seqs(&client, last).await,
        "no gap, no duplicate"
    );
    let unique: BTreeSet<i64> = seqs(&all).into_iter().collect();
    assert_eq!(unique.len(), all.len(), "no seq twice: {:?}", seqs(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_connect_error() {
    if !node_available() {
        return;
    }
    let (db, _client) = public_posts_db().await;
    let (_relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let expired = rowcast_devkit::token::sign(
        &json!({"sub": "1", "exp": now() - 60}),
        jsonwebtoken::Algorithm::HS256,
        SECRET,
    );
    let wrong_key = rowcast_devkit::token::sign(
        &json!({"sub": "1", "exp": now() + 600}),
        jsonwebtoken::Algorithm::HS256,
        "another-secret-0123456789abcdef",
    );
    for (token, says) in [
        (expired.as_str(), "token expired"),
        (wrong_key.as_str(), "bad signature"),
        ("", "missing token"),
    ] {
        let mut sio = Driver::socket_io(addr, token, &["websocket"]).await;
        let error = sio.nth("connect_error", 1).await;
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with("unauthorized: "), "{message}");
        assert!(message.contains(says), "{message}");
        assert!(!message.contains(SECRET) && !message.contains(token) || token.is_empty());
        assert_eq!(sio.count("connect"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_polling_transport_joins_and_receives() {
    if !node_available() {
        return;
    }
    let (db, client) = public_posts_db().await;
    let (_relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let mut sio = Driver::socket_io(addr, &token("3"), &["polling"]).await;
    let connect = sio.nth("connect", 1).await;
    assert_eq!(connect["transport"], "polling");
    let reply = sio.request("join", json!({"room": "content_10"})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let joined_at = reply["head"].as_i64().unwrap();
    update_content(&client, 5).await;
    let live = sio.wait_events("content-updated", 5).await;
    assert_eq!(seqs(&live), stored_seqs(&client, joined_at).await);
    let refused = sio.request("join", json!({"room": "user_1"})).await;
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["code"], "forbidden");
}

/// `socket.io-client`'s default: polling first, then the upgrade to a
/// WebSocket, with nothing lost across the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_transports_upgrade_from_polling_to_websocket() {
    if !node_available() {
        return;
    }
    let (db, client) = public_posts_db().await;
    let (_relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let mut sio = Driver::socket_io(addr, &token("3"), &["polling", "websocket"]).await;
    // It opens with polling; the upgrade may already be done when
    // `connect` fires.
    sio.nth("connect", 1).await;
    let reply = sio.request("join", json!({"room": "content_10"})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let joined_at = reply["head"].as_i64().unwrap();
    update_content(&client, 3).await;
    assert_eq!(sio.nth("upgrade", 1).await["transport"], "websocket");
    update_content(&client, 3).await;
    let live = sio.wait_events("content-updated", 6).await;
    assert_eq!(seqs(&live), stored_seqs(&client, joined_at).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_goes_between_socket_io_and_websocket_clients() {
    if !node_available() {
        return;
    }
    let (db, _client) = public_posts_db().await;
    let (_relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let mut sio = Driver::socket_io(addr, &token("1"), &["websocket"]).await;
    assert_eq!(
        sio.request("join", json!({"room": "content_10"})).await["ok"],
        true
    );
    let mut ws = open(addr, &token("2")).await;
    assert_eq!(ws.join("content_10").await["ok"], true);

    let typing = typing_reaches(&mut sio, &mut ws).await;
    assert_eq!(typing["from"], "1");
    assert_eq!(typing["room"], "content_10");
    assert_eq!(typing["data"], json!({"typing": true}));
    assert!(typing.get("seq").is_none());

    let reply = ws
        .request(json!({"type": "emit", "room": "content_10", "event": "user-typing", "data": {"typing": false}}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let typing = sio.wait_events("user-typing", 1).await;
    assert_eq!(typing[0]["from"], "2");
    assert_eq!(typing[0]["data"], json!({"typing": false}));

    // A name off the allowlist is refused, as over `/v1/ws`.
    let refused = sio
        .request(
            "payment-completed",
            json!({"room": "content_10", "data": {}}),
        )
        .await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_event_names_work_as_aliases() {
    if !node_available() {
        return;
    }
    let (db, client) = public_posts_db().await;
    let (_relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let mut sio = Driver::socket_io(addr, &token("1"), &["websocket"]).await;
    let reply = sio.request("join-content", json!(10)).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["room"], "content_10");
    assert_eq!(sio.request("join-user", json!(1)).await["ok"], true);
    update_content(&client, 1).await;
    let updated = sio.wait_events("content-updated", 1).await;
    assert_eq!(updated[0]["room"], "content_10");

    // `send-message` reaches the recipient's other connections.
    let mut other = open(addr, &token("1")).await;
    assert_eq!(other.join("user_1").await["ok"], true);
    let reply = sio
        .request(
            "send-message",
            json!({"recipientId": 1, "message": "Hello!"}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let message = other.next_event("message").await;
    assert_eq!(message["room"], "user_1");
    assert_eq!(message["data"], json!({"text": "Hello!"}));

    // A refusal of a request sent without a callback is an `error` event.
    sio.emit("join-user", json!(2)).await;
    let errors = sio.wait_events("error", 1).await;
    assert_eq!(errors[0]["ok"], false);
    assert_eq!(errors[0]["error"]["code"], "forbidden");

    // A new token before the first expires (same user only).
    let renewed = sio.request("auth", json!({"token": token("1")})).await;
    assert_eq!(renewed["ok"], true, "{renewed}");
    assert!(renewed["exp"].as_u64().unwrap() > now());
    let other_user = sio.request("auth", json!({"token": token("2")})).await;
    assert_eq!(other_user["error"]["code"], "unauthorized", "{other_user}");

    assert_eq!(sio.request("leave-content", json!(10)).await["ok"], true);
    let bad = sio.request("join-content", json!({"title": "x"})).await;
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_io_connection_is_a_rowcast_connection() {
    if !node_available() {
        return;
    }
    let (db, client) = public_posts_db().await;
    let (_relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let mut sio = Driver::socket_io(addr, &token("3"), &["websocket"]).await;
    for room in ["content_10", "content_11"] {
        assert_eq!(sio.request("join", json!({"room": room})).await["ok"], true);
    }

    // Presence: the user is online while the socket is open.
    wait_for("user 3 online", Duration::from_secs(20), || async {
        let online = scalar(
            &client,
            "SELECT count(*) FROM realtime.events WHERE event = 'user-status-changed'
                 AND room = 'user_3' AND data->>'status' = 'online'",
        )
        .await?;
        (online == 1).then_some(())
    })
    .await;

    // The protocol 1.1 notice when the rule takes a room away.
    make_private(&client, 10).await;
    let left = sio.wait_events("left", 1).await;
    assert_eq!(
        left[0],
        json!({"type": "left", "room": "content_10", "reason": "forbidden"})
    );
    update_content(&client, 1).await;
    client
        .execute("UPDATE content SET title = 'after' WHERE id = 11", &[])
        .await
        .unwrap();
    sio.wait("content_11's update", |reports| {
        reports
            .iter()
            .any(|r| r["name"] == "content-updated" && r["args"][0]["room"] == "content_11")
            .then_some(())
    })
    .await;
    let left_at = sio
        .reports
        .iter()
        .position(|r| r["name"] == "left")
        .unwrap();
    assert!(
        sio.reports[left_at..]
            .iter()
            .filter(|r| r["name"] == "content-updated")
            .all(|r| r["args"][0]["room"] == "content_11"),
        "nothing more of the room it left: {:#?}",
        sio.reports
    );

    // Counted under its transport.
    let (_, metrics) = rowcast_devkit::http::request(addr, "GET", "/metrics", None, None)
        .await
        .unwrap();
    assert!(
        metrics.contains("rowcast_connections_opened_total{transport=\"socketio\"} 1"),
        "{metrics}"
    );
}

/// A Socket.IO client that stops reading, spoken by hand (Engine.IO 4 over a
/// WebSocket with a tiny receive buffer): like a stalled `/v1/ws` client it
/// is closed as too slow (4008), the relay's memory stays bounded, and what
/// it gets when it reads again is a prefix of the room's events in order,
/// then the `close` notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_io_client_that_stops_reading_is_closed_as_too_slow() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let (db, client) = public_posts_db().await;
    let (relay, addr) = spawn_listening_relay(
        &db,
        "trigger",
        &[("ROWCAST_SEND_QUEUE", "256"), ("ROWCAST_BATCH_SIZE", "50")],
    )
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let next_text = async |ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>| loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(WsMessage::Text(text)))) if text.as_str() == "2" => {
                ws.send(WsMessage::text("3")).await.unwrap()
            }
            Ok(Some(Ok(WsMessage::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    };
    assert!(
        next_text(&mut ws).await.unwrap().starts_with('0'),
        "Engine.IO open"
    );
    let connect = format!("40{}", json!({"token": token("1")}));
    ws.send(WsMessage::text(connect)).await.unwrap();
    assert!(
        next_text(&mut ws).await.unwrap().starts_with("40{"),
        "namespace connected"
    );
    ws.send(WsMessage::text(r#"421["join",{"room":"content_10"}]"#))
        .await
        .unwrap();
    let joined = loop {
        let text = next_text(&mut ws).await.unwrap();
        if let Some(ack) = text.strip_prefix("431") {
            break serde_json::from_str::<Value>(ack).unwrap();
        }
    };
    assert_eq!(joined[0]["ok"], true, "{joined}");

    // The client reads nothing while about 48 MB of events are stored.
    let rss_before = rss_kib(relay.id());
    publish_backlog(&client, "content_10").await;
    queue_overflowed(addr).await;
    let growth_mib = (rss_kib(relay.id()) as f64 - rss_before as f64) / 1024.0;
    assert!(
        growth_mib < 16.0,
        "relay RSS grew {growth_mib:.1} MiB for a 48 MB backlog"
    );

    // Reading again: events in seq order, then `close` 4008 and the disconnect.
    let mut seqs = Vec::new();
    let close = loop {
        let text = next_text(&mut ws)
            .await
            .expect("the close notice before the end");
        let Some(event) = text.strip_prefix("42") else {
            continue;
        };
        let event: Value = serde_json::from_str(event).unwrap();
        match event[0].as_str().unwrap() {
            "bulk" => seqs.push(event[1]["seq"].as_i64().unwrap()),
            "close" => break event[1].clone(),
            _ => {}
        }
    };
    assert_eq!(close["code"], 4008, "{close}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order");
    assert!(seqs.len() < 3000, "the backlog was dropped, not delivered");
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("41"),
        "then disconnected"
    );
}

/// Any node: a Socket.IO client on a follower gets the leader's captures,
/// its typing reaches a `/v1/ws` client on the other node, and after its
/// node stops it resumes on the other node with `since`, losing and
/// repeating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_clients_resume_on_another_node() {
    if !node_available() {
        return;
    }
    let (db, client) = public_posts_db().await;
    let (_a, addr_a) = spawn_listening_relay(&db, "trigger", &[]).await;
    let (b, addr_b) = spawn_listening_relay(&db, "trigger", &[]).await;
    let mut on_b = Driver::socket_io(addr_b, &token("2"), &["websocket"]).await;
    let joined = on_b.request("join", json!({"room": "content_10"})).await;
    assert_eq!(joined["ok"], true, "{joined}");
    let start = joined["head"].as_i64().unwrap();
    let mut ws_a = open(addr_a, &token("1")).await;
    assert_eq!(ws_a.join("content_10").await["ok"], true);

    let typing = typing_reaches(&mut on_b, &mut ws_a).await;
    assert_eq!(typing["from"], "2");

    update_content(&client, 3).await;
    let seen = on_b.wait_events("content-updated", 3).await;
    let last = *seqs(&seen).last().unwrap();
    b.stop(Duration::from_secs(20)).await;
    update_content(&client, 2).await;

    let mut on_a = Driver::socket_io(addr_a, &token("2"), &["websocket"]).await;
    let reply = on_a
        .request("join", json!({"room": "content_10", "since": last}))
        .await;
    assert_eq!(reply["replayed"], 2, "{reply}");
    update_content(&client, 1).await;
    let resumed = on_a.wait_events("content-updated", 3).await;
    let mut all = seqs(&seen);
    all.extend(seqs(&resumed));
    assert_eq!(
        all,
        stored_seqs(&client, start).await,
        "no gap, no duplicate"
    );
}

/// Bad input over Socket.IO: a payload over `ROWCAST_MAX_FRAME_BYTES` ends
/// that connection (Socket.IO has no close code for it), malformed requests
/// get `bad_request`, and the relay keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_relay_keeps_serving() {
    if !node_available() {
        return;
    }
    let (db, _client) = public_posts_db().await;
    let (_relay, addr) =
        spawn_listening_relay(&db, "trigger", &[("ROWCAST_MAX_FRAME_BYTES", "4096")]).await;
    let mut sio = Driver::socket_io(addr, &token("1"), &["websocket"]).await;
    sio.nth("connect", 1).await;
    for (event, data) in [
        ("join", json!("content_10")),
        ("join", json!({"room": "no spaces allowed"})),
        ("leave", json!({"room": "content_10"})),
        ("user-typing", json!([1, 2])),
    ] {
        let reply = sio.request(event, data.clone()).await;
        assert_eq!(reply["ok"], false, "{event} {data}: {reply}");
        let code = reply["error"]["code"].as_str().unwrap();
        assert!(
            ["bad_request", "not_found"].contains(&code),
            "{event} {data}: {reply}"
        );
    }
    sio.emit(
        "join",
        json!({"room": "content_10", "pad": "x".repeat(10_000)}),
    )
    .await;
    let gone = sio.nth("disconnect", 1).await;
    assert!(
        gone["reason"].as_str().unwrap().starts_with("transport"),
        "{gone}"
    );
    let mut again = Driver::socket_io(addr, &token("1"), &["websocket"]).await;
    assert_eq!(
        again.request("join", json!({"room": "content_10"})).await["ok"],
        true
    );
}
