//! `GET /v1/sse` end to end: stored events as messages whose ids are their
//! seqs, resume with `Last-Event-ID` (and `?since=`) across rooms, one
//! message per event however many of the rooms it was stored for, 403
//! before the stream for a refused room, `gap`, `left`, the final `error`
//! when the token expires, and a browser's own `EventSource` resuming
//! across a relay restart.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::driver::Driver;
use common::ws::*;
use common::*;
use rowcast_devkit::sse::{Message, Refused, SseStream};
use serde_json::{json, Value};

/// How long a test waits for one message.
const DEADLINE: Duration = Duration::from_secs(20);

async fn update(client: &tokio_postgres::Client, id: i64, times: usize) {
    for i in 0..times {
        client
            .execute(
                "UPDATE content SET title = $1 WHERE id = $2",
                &[&format!("title {i}"), &id],
            )
            .await
            .unwrap();
    }
}

async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseStream {
    SseStream::open(addr, path, headers)
        .await
        .expect("connect")
        .unwrap_or_else(|refused| panic!("refused: {} {}", refused.status, refused.body))
}

async fn refused(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Refused {
    match SseStream::open(addr, path, headers).await.expect("connect") {
        Ok(_) => panic!("{path} was not refused"),
        Err(refused) => refused,
    }
}

/// The next message with an id (stored events), skipping others.
async fn next_stored(stream: &mut SseStream) -> Message {
    loop {
        let message = stream
            .next_before(DEADLINE)
            .await
            .expect("a message before the deadline")
            .expect("the stream is open");
        if message.id.is_some() {
            return message;
        }
    }
}

async fn stored(stream: &mut SseStream, n: usize) -> Vec<Message> {
    let mut messages = Vec::new();
    for _ in 0..n {
        messages.push(next_stored(stream).await);
    }
    messages
}

fn ids(messages: &[Message]) -> Vec<i64> {
    messages
        .iter()
        .map(|m| m.id.as_deref().unwrap().parse().unwrap())
        .collect()
}

/// Seqs of the stored events of any of `rooms` after `after`.
async fn stored_seqs(client: &tokio_postgres::Client, rooms: &[&str], after: i64) -> Vec<i64> {
    let head = head(client).await;
    stored_between(client, after, head)
        .await
        .into_iter()
        .filter(|e| e.rooms.iter().any(|r| rooms.contains(&r.as_str())))
        .map(|e| e.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_writes_are_five_messages_whose_ids_are_their_seqs() {
    let (_db, client, relay) = {
        let (db, client) = public_posts_db().await;
        let relay = start_relay(&db, "trigger").await;
        (db, client, relay)
    };
    let start = head(&client).await;
    let path = format!("/v1/sse?rooms=content_10&token={}", token("3"));
    let mut stream = open(relay.addr, &path, &[]).await;
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    update(&client, 10, 5).await;
    let messages = stored(&mut stream, 5).await;
    assert_eq!(
        ids(&messages),
        stored_seqs(&client, &["content_10"], start).await
    );
    for message in &messages {
        assert_eq!(message.event, "content-updated");
        let frame: Value = serde_json::from_str(&message.data).unwrap();
        assert_eq!(frame["type"], "event");
        assert_eq!(frame["room"], "content_10");
        assert_eq!(frame["event"], "content-updated");
        assert_eq!(frame["seq"].to_string(), *message.id.as_ref().unwrap());
        assert!(frame["data"]["title"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_exactly_after_it_across_rooms() {
    let (_db, client) = public_posts_db().await;
    let relay = start_relay(&_db, "trigger").await;
    let start = head(&client).await;
    // content_10's events are also user_1's (its author): one message each.
    // (A service token: a user's own stream would also store its presence.)
    let rooms = ["content_10", "user_1", "content_11"];
    let path = format!(
        "/v1/sse?rooms={}&token={}",
        rooms.join(","),
        service_token()
    );
    let mut first = open(relay.addr, &path, &[]).await;
    update(&client, 10, 3).await;
    update(&client, 11, 3).await;
    let seen = stored(&mut first, 6).await;
    assert_eq!(ids(&seen), stored_seqs(&client, &rooms, start).await);
    drop(first);

    // Missed while away: more of both posts.
    update(&client, 11, 2).await;
    update(&client, 10, 2).await;
    let resume_at = ids(&seen)[2];
    let mut resumed = open(
        relay.addr,
        &path,
        &[("Last-Event-ID", &resume_at.to_string())],
    )
    .await;
    update(&client, 10, 1).await;
    barrier(&client).await;
    let expected = stored_seqs(&client, &rooms, resume_at).await;
    assert_eq!(expected.len(), 3 + 4 + 1);
    let got = stored(&mut resumed, expected.len()).await;
    assert_eq!(
        ids(&got),
        expected,
        "in seq order, none missing, none twice"
    );
    let mut sorted = ids(&got);
    sorted.dedup();
    assert_eq!(sorted.len(), got.len());

    // `?since=` is the same position for clients that cannot set headers.
    let since = format!("{path}&since={resume_at}");
    let mut by_query = open(relay.addr, &since, &[]).await;
    assert_eq!(ids(&stored(&mut by_query, expected.len()).await), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_before_the_stream() {
    let (db, _client) = public_posts_db().await;
    let relay = start_relay(&db, "trigger").await;
    let forbidden = refused(
        relay.addr,
        &format!("/v1/sse?rooms=content_10,user_2&token={}", token("1")),
        &[],
    )
    .await;
    assert_eq!(forbidden.status, 403);
    let body: Value = serde_json::from_str(&forbidden.body).unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("user_2"));

    let unauthorized = refused(relay.addr, "/v1/sse?rooms=content_10&token=nope", &[]).await;
    assert_eq!(unauthorized.status, 401);
    let no_rooms = refused(relay.addr, &format!("/v1/sse?token={}", token("1")), &[]).await;
    assert_eq!(no_rooms.status, 400);
    let bearer = format!("Bearer {}", token("1"));
    let bad_id = refused(
        relay.addr,
        "/v1/sse?rooms=content_10",
        &[("Authorization", &bearer), ("Last-Event-ID", "x")],
    )
    .await;
    assert_eq!(bad_id.status, 400);
    // The Bearer header is a token too.
    let mut ok = open(
        relay.addr,
        "/v1/sse?rooms=content_10",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(ok.header("content-type"), Some("text/event-stream"));
    assert!(
        ok.next_before(Duration::from_millis(10)).await.is_err(),
        "nothing yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_retention_is_a_gap() {
    let (db, client) = public_posts_db().await;
    let mut config = config_for(&db.url, "trigger");
    config.retention.max_events = 5;
    config.retention.interval = Duration::from_millis(200);
    let relay = start_relay_with(config).await;
    update(&client, 10, 20).await;
    let last = barrier(&client).await;
    wait_for("retention", DEADLINE, || async {
        let oldest: i64 = client
            .query_one("SELECT oldest FROM realtime.state", &[])
            .await
            .ok()?
            .get(0);
        (oldest > last - 10).then_some(())
    })
    .await;
    let path = format!("/v1/sse?rooms=content_10&since=1&token={}", token("1"));
    let mut stream = open(relay.addr, &path, &[]).await;
    let gap = stream.next_before(DEADLINE).await.unwrap().unwrap();
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.id, None, "a gap does not move the position");
    assert_eq!(
        serde_json::from_str::<Value>(&gap.data).unwrap()["room"],
        "content_10"
    );
    let kept = stored_seqs(&client, &["content_10"], 1).await;
    assert!(!kept.is_empty() && kept.len() < 20);
    assert_eq!(ids(&stored(&mut stream, kept.len()).await), kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_ends_the_stream_with_an_error() {
    let (db, _client) = public_posts_db().await;
    let relay = start_relay(&db, "trigger").await;
    let short = sign(
        &json!({"sub": "1", "exp": now() + 2}),
        jsonwebtoken::Algorithm::HS256,
        SECRET,
    );
    let mut stream = open(
        relay.addr,
        &format!("/v1/sse?rooms=content_10&token={short}"),
        &[],
    )
    .await;
    let error = stream.next_before(DEADLINE).await.unwrap().unwrap();
    assert_eq!(error.event, "error");
    let body: Value = serde_json::from_str(&error.data).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["message"], "token expired");
    assert_eq!(
        stream.next_before(DEADLINE).await,
        Ok(None),
        "then the stream ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_taken_away_is_left() {
    let (db, client) = public_posts_db().await;
    let relay = start_relay(&db, "trigger").await;
    let path = format!("/v1/sse?rooms=content_10,content_11&token={}", token("3"));
    let mut stream = open(relay.addr, &path, &[]).await;
    make_private(&client, 10).await;
    let left = loop {
        let message = stream.next_before(DEADLINE).await.unwrap().unwrap();
        if message.event == "left" {
            break message;
        }
    };
    let body: Value = serde_json::from_str(&left.data).unwrap();
    assert_eq!(
        body,
        json!({"type": "left", "room": "content_10", "reason": "forbidden"})
    );
    // The other room still streams; the one left does not.
    update(&client, 10, 1).await;
    update(&client, 11, 1).await;
    let next = next_stored(&mut stream).await;
    let frame: Value = serde_json::from_str(&next.data).unwrap();
    assert_eq!(frame["room"], "content_11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_event_source_resumes_across_a_relay_restart() {
    if !common::required("node", common::node::missing().map(str::to_string)) {
        return;
    }
    let (db, client) = public_posts_db().await;
    let port = rowcast_devkit::process::free_port();
    let (relay, addr) = spawn_relay_on(&db, "trigger", port, &[]).await;
    let start = head(&client).await;
    let mut browser = Driver::start().await;
    let url = format!("http://{addr}/v1/sse?rooms=content_10&token={}", token("3"));
    browser
        .send(json!({"op": "eventsource", "origin": format!("http://{addr}/healthz"), "url": url}))
        .await;
    browser.nth("sse_open", 1).await;
    let messages = |reports: &[Value]| -> Vec<Value> {
        reports
            .iter()
            .filter(|r| r["type"] == "sse" && r["event"] == "content-updated")
            .cloned()
            .collect()
    };
    update(&client, 10, 3).await;
    browser
        .wait("3 messages", |r| (messages(r).len() >= 3).then_some(()))
        .await;

    relay.stop(Duration::from_secs(20)).await;
    update(&client, 10, 2).await;
    let (_relay, _) = spawn_relay_on(&db, "trigger", port, &[]).await;
    browser.nth("sse_open", 2).await;
    update(&client, 10, 1).await;
    let got = browser
        .wait("6 messages", |r| {
            let m = messages(r);
            (m.len() >= 6).then_some(m)
        })
        .await;
    let got_ids: Vec<i64> = got
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got_ids, stored_seqs(&client, &["content_10"], start).await);
    for message in &got {
        let frame: Value = serde_json::from_str(message["data"].as_str().unwrap()).unwrap();
        assert_eq!(frame["seq"].to_string(), message["id"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_keep_alive_comments() {
    let (db, client) = public_posts_db().await;
    let relay = start_relay(&db, "trigger").await;
    let path = format!("/v1/sse?rooms=content_10&token={}", token("3"));
    let mut stream = open(relay.addr, &path, &[]).await;
    // One interval (15 s) and a margin.
    assert!(stream.comment_before(Duration::from_secs(25)).await);
    // Still live after it.
    update(&client, 10, 1).await;
    assert_eq!(next_stored(&mut stream).await.event, "content-updated");
}
