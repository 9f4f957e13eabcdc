//! The reader against a channel stream, a real hub and a stand-in rule.

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::*;
use crate::config::{JwtConfig, Secret};
use crate::db::DbError;
use crate::fanout::ConnId;
use crate::gateway::connection::Closer;

/// Allows rooms starting with `ok_`.
struct Rule;

impl Authorize for Rule {
    async fn authorize(&self, _claims: &Claims, room: &str) -> Result<bool, DbError> {
        Ok(room.starts_with("ok_"))
    }
}

fn limits() -> Limits {
    Limits {
        send_queue: 64,
        max_frame_bytes: 4096,
        frames_per_sec: 50,
        joins_per_sec: 20,
        emits_per_sec: 20,
        connects_per_sec: 10,
        history_per_sec: 10,
        abuse_strikes: 5,
        max_rooms: 3,
        max_connections: 10,
        max_connections_per_user: 20,
        max_connections_per_ip: 30,
        typing_throttle: Duration::from_millis(200),
        auth_cache_ttl: Duration::from_secs(1),
        auth_recheck: Duration::from_secs(60),
    }
}

fn claims(sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        exp: u64::MAX / 2,
        service: false,
        all: json!({"sub": sub}),
    }
}

struct Client {
    input: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    output: mpsc::Receiver<Outgoing>,
    closer: Arc<Closer>,
    reader: tokio::task::JoinHandle<Ended>,
}

fn connect(hub: &Arc<Hub>, conn: ConnId, sub: &str, limits: Limits) -> Client {
    let (queue, output) = ConnQueue::new(conn, 256);
    let closer = queue.closer.clone();
    hub.join(BROADCAST, queue.member());
    let verifier = Arc::new(
        Verifier::new(&JwtConfig {
            algorithm: jsonwebtoken::Algorithm::HS256,
            secret: Some(Secret::new("session-test-secret-0123456789")),
            public_key_pem: None,
            audience: None,
            issuer: None,
            leeway: Duration::ZERO,
        })
        .unwrap(),
    );
    let config = Arc::new(ReaderConfig {
        limits,
        heartbeat: Duration::from_secs(3600),
        client_events: vec!["user-typing".into(), "message".into()],
        throttled_events: vec!["user-typing".into()],
    });
    let reader = ConnReader::new(
        ConnState::new(queue, claims(sub)),
        hub.clone(),
        Arc::new(Rule),
        verifier,
        config,
    );
    let (input, rx) = mpsc::unbounded_channel();
    let stream = tokio_stream_of(rx);
    Client {
        input,
        output,
        closer,
        reader: tokio::spawn(reader.run(stream)),
    }
}

/// Users 1 and 2, both joined to `ok_1`.
async fn two_members_of_ok_1() -> (Client, Client) {
    let hub = Arc::new(Hub::new(0));
    let mut a = connect(&hub, 1, "1", limits());
    let mut b = connect(&hub, 2, "2", limits());
    for c in [&mut a, &mut b] {
        c.say(json!({"type": "join", "room": "ok_1"}));
        c.next().await;
    }
    (a, b)
}

fn tokio_stream_of(
    mut rx: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
) -> impl futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

impl Client {
    fn say(&self, frame: Value) {
        self.input
            .send(Ok(Message::Text(Utf8Bytes::from(frame.to_string()))))
            .unwrap();
    }

    fn say_raw(&self, text: &str) {
        self.input
            .send(Ok(Message::Text(Utf8Bytes::from(text))))
            .unwrap();
    }

    /// The next frame sent to the client (controls are skipped).
    async fn next(&mut self) -> Value {
        loop {
            match self.output.recv().await.expect("an outgoing item") {
                Outgoing::Frame(frame) => return serde_json::from_str(&frame).unwrap(),
                Outgoing::Event(event) => return serde_json::from_str(&event.frame).unwrap(),
                Outgoing::Control(_) => continue,
            }
        }
    }

    async fn next_control(&mut self) -> Control {
        loop {
            if let Outgoing::Control(c) = self.output.recv().await.expect("an item") {
                return *c;
            }
        }
    }
}

#[tokio::test]
async fn allowed_joins_subscribe_refused_joins_do_not() {
    let hub = Arc::new(Hub::new(41));
    let mut c = connect(&hub, 1, "7", limits());
    c.say(json!({"type": "join", "room": "ok_1", "ref": "a"}));
    assert!(matches!(
        c.next_control().await,
        Control::Join { replay: false, .. }
    ));
    let reply = c.next().await;
    assert_eq!(
        reply,
        json!({"type": "reply", "ref": "a", "ok": true, "room": "ok_1", "head": 41, "replayed": 0})
    );
    c.say(json!({"type": "join", "room": "secret_1", "ref": "b"}));
    let reply = c.next().await;
    assert_eq!(reply["error"]["code"], "forbidden");
    assert_eq!(
        hub.emit("secret_1", Utf8Bytes::from("{}"), 99),
        0,
        "the refused room has no member"
    );
    assert_eq!(hub.emit("ok_1", Utf8Bytes::from("{}"), 99), 1);
}

#[tokio::test]
async fn joins_with_since_ask_the_writer_for_a_replay_up_to_the_head() {
    let hub = Arc::new(Hub::new(10));
    let mut c = connect(&hub, 1, "7", limits());
    c.say(json!({"type": "join", "room": "ok_1", "since": 3, "ref": "r"}));
    assert!(matches!(
        c.next_control().await,
        Control::Join { replay: true, .. }
    ));
    match c.next_control().await {
        Control::Replay {
            after,
            until,
            reply,
            ..
        } => {
            assert_eq!((after, until), (3, 10));
            assert_eq!(reply["ref"], "r");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_the_connection_keeps_working() {
    let hub = Arc::new(Hub::new(0));
    let mut c = connect(&hub, 1, "7", limits());
    for text in [
        "garbage",
        "{\"type\":\"fly\"}",
        "{\"type\":\"join\"}",
        "{\"type\":\"join\",\"room\":1}",
    ] {
        c.say_raw(text);
        assert_eq!(c.next().await["error"]["code"], "bad_request", "{text}");
    }
    c.say(json!({"type": "join", "room": "content_1; DROP TABLE users", "ref": "x"}));
    assert_eq!(c.next().await["error"]["code"], "bad_request");
    c.say(json!({"type": "ping", "ref": "p"}));
    assert_eq!(c.next().await, json!({"type": "pong", "ref": "p"}));
}

#[tokio::test]
async fn emits_reach_other_members_of_joined_rooms_only() {
    let (mut a, mut b) = two_members_of_ok_1().await;
    a.say(json!({"type": "emit", "room": "ok_1", "event": "message", "data": {"text": "hi"}, "ref": "e"}));
    assert_eq!(a.next().await["ok"], true);
    let got = b.next().await;
    assert_eq!(
        got,
        json!({"type": "event", "room": "ok_1", "event": "message", "from": "1", "data": {"text": "hi"}})
    );
    a.say(json!({"type": "emit", "room": "ok_1", "event": "content-created", "data": {}}));
    assert_eq!(a.next().await["error"]["code"], "forbidden");
    a.say(json!({"type": "emit", "room": "ok_2", "event": "message", "data": {}}));
    assert_eq!(a.next().await["error"]["code"], "forbidden");
    a.say(json!({"type": "emit", "room": "broadcast", "event": "message", "data": {}}));
    assert_eq!(a.next().await["error"]["code"], "forbidden");
    assert!(
        a.output.try_recv().is_err(),
        "the sender never gets its own emit"
    );
}

#[tokio::test]
async fn typing_bursts_are_throttled_into_one_delivery_with_a_count() {
    let (mut a, mut b) = two_members_of_ok_1().await;
    for i in 0..5 {
        a.say(json!({"type": "emit", "room": "ok_1", "event": "user-typing", "data": {"n": i}}));
        a.next().await;
    }
    let first = b.next().await;
    assert_eq!(first["data"]["n"], 0);
    let trailing = b.next().await;
    assert_eq!(trailing["data"]["n"], 4);
    assert_eq!(trailing["count"], 4);
}

#[tokio::test]
async fn floods_are_rate_limited_then_closed_with_4029() {
    let hub = Arc::new(Hub::new(0));
    let mut l = limits();
    l.frames_per_sec = 5;
    let mut c = connect(&hub, 1, "7", l);
    for _ in 0..200 {
        c.say(json!({"type": "ping"}));
    }
    let mut limited = 0;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(2), c.output.recv()).await {
        if let Outgoing::Frame(f) = item {
            let v: Value = serde_json::from_str(&f).unwrap();
            if v["error"]["code"] == "rate_limited" {
                limited += 1;
            }
        }
    }
    assert!(limited >= 1, "floods get rate_limited replies");
    assert_eq!(c.reader.await.unwrap(), Ended::Close(close::RATE_LIMITED));
    let _ = c.closer;
}

#[tokio::test]
async fn auth_refuses_a_token_for_another_user() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let hub = Arc::new(Hub::new(0));
    let mut c = connect(&hub, 1, "7", limits());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let key = EncodingKey::from_secret(b"session-test-secret-0123456789");
    let other = encode(&Header::default(), &json!({"sub": "8", "exp": exp}), &key).unwrap();
    c.say(json!({"type": "auth", "token": other, "ref": "t"}));
    assert_eq!(c.next().await["error"]["code"], "unauthorized");
    let same = encode(&Header::default(), &json!({"sub": 7, "exp": exp}), &key).unwrap();
    c.say(json!({"type": "auth", "token": same, "ref": "t"}));
    assert_eq!(c.next().await["ok"], true);
}

#[tokio::test]
async fn room_limits_and_leaving() {
    let hub = Arc::new(Hub::new(0));
    let mut c = connect(&hub, 1, "7", limits());
    for room in ["ok_1", "ok_2", "ok_3"] {
        c.say(json!({"type": "join", "room": room}));
        assert_eq!(c.next().await["ok"], true);
    }
    c.say(json!({"type": "join", "room": "ok_4"}));
    assert_eq!(c.next().await["error"]["code"], "bad_request");
    c.say(json!({"type": "leave", "room": "ok_1", "ref": "l"}));
    assert_eq!(
        c.next().await,
        json!({"type": "reply", "ref": "l", "ok": true, "room": "ok_1"})
    );
    c.say(json!({"type": "leave", "room": "ok_1"}));
    assert_eq!(c.next().await["error"]["code"], "not_found");
    drop(c.input);
    assert_eq!(c.reader.await.unwrap(), Ended::ByClient);
    assert_eq!(
        hub.room_count(),
        0,
        "a finished connection leaves every room"
    );
}
