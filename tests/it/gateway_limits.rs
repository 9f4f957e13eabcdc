//! The gateway's limits end to end: bad and oversized frames, floods, and
//! a client that stops reading (closed with 4008 while the relay's memory
//! stays flat).

use crate::common;

use std::time::Duration;

use common::ws::*;
use common::*;
use serde_json::json;

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
    client.batch_execute(MATRIX_ROWS).await.unwrap();
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
    publish_backlog(&client, "content_10").await;
    let overflowed = queue_overflowed(addr).await;
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

/// 50 clients hammering the HTTP history neither slow live delivery nor
/// take the relay's readiness away: they are rate-limited (429), and
/// capture and the outbox writer have sessions of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_hammering_leaves_live_delivery_and_readiness_alone() {
    let (_db, client, relay) = seeded_relay("trigger").await;
    let addr = relay.addr;
    // Capture reports itself running a moment after startup: the claim is
    // that a ready relay stays ready.
    wait_for("the relay to be ready", Duration::from_secs(30), || async {
        let (status, _) = rowcast_devkit::http::request(addr, "GET", "/readyz", None, None)
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;
    let mut ws = open(addr, &token("1")).await;
    assert_eq!(ws.join("content_10").await["ok"], true);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The hammers run on a runtime of their own, on their own threads, as
    // clients on another machine would: they load the relay through its
    // socket, not by taking the worker threads it shares with this test.
    // Each sends 200 requests a second (10,000 in all, 500 times the
    // per-IP history rate).
    let hammers = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let hammers: Vec<_> = (0..50)
                    .map(|i| {
                        let stop = stop.clone();
                        let user = token(["1", "2", "3", "4"][i % 4]);
                        tokio::spawn(async move {
                            let (mut ok, mut limited) = (0u32, 0u32);
                            let mut connection = rowcast_devkit::http::KeepAlive::new(addr);
                            let mut pace = tokio::time::interval(Duration::from_millis(5));
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                pace.tick().await;
                                let path = "/v1/rooms/content_10/events?after=0&limit=1000";
                                match connection.request("GET", path, Some(&user)).await {
                                    Ok((200, _)) => ok += 1,
                                    Ok((429, _)) => limited += 1,
                                    Ok((status, body)) => {
                                        panic!("history answered {status}: {body}")
                                    }
                                    Err(_) => {}
                                }
                            }
                            (ok, limited)
                        })
                    })
                    .collect();
                let (mut ok, mut limited) = (0, 0);
                for hammer in hammers {
                    let (o, l) = hammer.await.unwrap();
                    ok += o;
                    limited += l;
                }
                (ok, limited)
            })
        }
    });
    let readiness = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut checks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) =
                    rowcast_devkit::http::request(addr, "GET", "/readyz", None, None)
                        .await
                        .expect("readyz answers");
                assert_eq!(status, 200, "ready while history is hammered: {body}");
                checks += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            checks
        }
    });
    for i in 0..300 {
        client
            .execute(
                "UPDATE content SET title = 'burst ' || $1::text WHERE id = 10",
                &[&i.to_string()],
            )
            .await
            .unwrap();
    }
    let mut titles = Vec::new();
    while titles.len() < 300 {
        let frame = ws.frame().await;
        if frame["event"] == "content-updated" {
            titles.push(frame["data"]["title"].as_str().unwrap().to_string());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(titles.last().map(String::as_str), Some("burst 299"));
    let (ok, limited) = tokio::task::spawn_blocking(move || hammers.join().unwrap())
        .await
        .unwrap();
    assert!(ok > 0 && limited > 0, "{ok} served, {limited} limited");
    assert!(readiness.await.unwrap() > 0);
    stop_relay(relay).await;
}

/// A client that sends headers a piece at a time (or nothing) is cut off
/// after `ROWCAST_HEADER_TIMEOUT`; a prompt one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::demo().await;
    let mut config = config_for(&db.url, "trigger");
    config.gateway.header_timeout = Duration::from_millis(500);
    let relay = start_relay_with(config).await;
    let mut slow = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    for socket in [&mut slow, &mut silent] {
        let mut buffer = Vec::new();
        let read = tokio::time::timeout(FRAME_DEADLINE, socket.read_to_end(&mut buffer))
            .await
            .expect("the relay closes the connection");
        assert!(read.is_ok());
        let text = String::from_utf8_lossy(&buffer);
        assert!(
            !text.contains("200 OK"),
            "no answer to unfinished headers: {text}"
        );
    }
    let (status, _) = rowcast_devkit::http::request(relay.addr, "GET", "/healthz", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    stop_relay(relay).await;
}
