//! The writer against a channel sink and an in-memory history.

use std::sync::Arc;

use axum::extract::ws::Message;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::*;
use crate::event::StoredEvent;

/// Every room holds `seqs`; a replay from 0 answers `gap`.
fn every_room(seqs: Vec<i64>) -> MemoryHistory {
    MemoryHistory(vec![("*", seqs, 2)])
}

fn live(room: &Arc<str>, seq: i64) -> Outgoing {
    Outgoing::Event(Arc::new(RoomFrame {
        room: room.clone(),
        seq,
        event: Arc::from("test-event"),
        frame: frame::stored_frame(room, &StoredEvent::tick(seq, room)),
    }))
}

struct Harness {
    queue: mpsc::Sender<Outgoing>,
    closer: Arc<Closer>,
    out: futures_channel::mpsc::UnboundedReceiver<Message>,
}

fn start(history: Vec<i64>) -> Harness {
    start_paged(history, 1000)
}

fn start_paged(history: Vec<i64>, page: i64) -> Harness {
    let (queue, rx) = mpsc::channel(64);
    let closer = Arc::new(Closer::default());
    let (sink, out) = futures_channel::mpsc::unbounded::<Message>();
    let writer = ConnWriter::new(
        Arc::new(every_room(history)),
        rx,
        closer.clone(),
        8,
        Duration::from_secs(3600),
    )
    .replay_page(page);
    tokio::spawn(writer.run(
        sink.sink_map_err(|_| ()),
        Utf8Bytes::from_static("{\"type\":\"welcome\"}"),
    ));
    Harness { queue, closer, out }
}

impl Harness {
    async fn next(&mut self) -> Value {
        match self.out.next().await.expect("a frame") {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            Message::Close(Some(frame)) => json!({"close": frame.code}),
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn send(&self, item: Outgoing) {
        self.queue.send(item).await.unwrap();
    }
}

#[tokio::test]
async fn welcome_comes_first_and_only_joined_rooms_are_delivered() {
    let mut h = start(vec![]);
    let room: Arc<str> = Arc::from("content_1");
    let other: Arc<str> = Arc::from("content_2");
    h.send(Outgoing::from(Control::Join {
        room: room.clone(),
        replay: false,
    }))
    .await;
    h.send(live(&other, 1)).await;
    h.send(live(&room, 2)).await;
    assert_eq!(h.next().await["type"], "welcome");
    let event = h.next().await;
    assert_eq!(
        (event["room"].as_str(), event["seq"].as_i64()),
        (Some("content_1"), Some(2))
    );
    h.send(Outgoing::from(Control::Leave(room.clone()))).await;
    h.send(live(&room, 3)).await;
    h.send(Outgoing::frame(Utf8Bytes::from_static(
        "{\"type\":\"pong\"}",
    )))
    .await;
    assert_eq!(
        h.next().await["type"],
        "pong",
        "events after leave are dropped"
    );
}

#[tokio::test]
async fn replay_then_held_live_events_without_gap_or_duplicate() {
    let mut h = start(vec![1, 2, 3, 4, 5]);
    let room: Arc<str> = Arc::from("content_1");
    h.send(Outgoing::from(Control::Join {
        room: room.clone(),
        replay: true,
    }))
    .await;
    // Live events fanned out while the join was underway: 4 and 5 are also
    // in the stored history up to head 5, 6 is newer.
    h.send(live(&room, 4)).await;
    h.send(live(&room, 5)).await;
    h.send(live(&room, 6)).await;
    let mut reply = serde_json::Map::new();
    reply.insert("type".into(), "reply".into());
    h.send(Outgoing::from(Control::Replay {
        room: room.clone(),
        after: 2,
        until: 5,
        reply,
    }))
    .await;
    h.send(live(&room, 7)).await;
    assert_eq!(h.next().await["type"], "welcome");
    let mut seqs = Vec::new();
    loop {
        let frame = h.next().await;
        if frame["type"] == "reply" {
            assert_eq!(frame["replayed"], 3);
            assert!(frame.get("gap").is_none());
            break;
        }
        seqs.push(frame["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, vec![3, 4, 5, 6]);
    assert_eq!(h.next().await["seq"], 7);
}

#[tokio::test]
async fn a_replay_from_before_retention_reports_the_gap() {
    let mut h = start(vec![1, 2]);
    let room: Arc<str> = Arc::from("r");
    h.send(Outgoing::from(Control::Join {
        room: room.clone(),
        replay: true,
    }))
    .await;
    h.send(Outgoing::from(Control::Replay {
        room,
        after: 0,
        until: 2,
        reply: Default::default(),
    }))
    .await;
    assert_eq!(h.next().await["type"], "welcome");
    h.next().await;
    h.next().await;
    assert_eq!(h.next().await["gap"], true);
}

#[tokio::test]
async fn close_requests_send_their_code() {
    let mut h = start(vec![]);
    assert_eq!(h.next().await["type"], "welcome");
    h.closer.close(close::TOO_SLOW);
    assert_eq!(h.next().await["close"], 4008);
}

/// A socket that never takes another byte: a client that stopped reading.
struct Stuck;

impl Sink<Message> for Stuck {
    type Error = ();

    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ()>> {
        std::task::Poll::Pending
    }

    fn start_send(self: std::pin::Pin<&mut Self>, _: Message) -> Result<(), ()> {
        Ok(())
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ()>> {
        std::task::Poll::Pending
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ()>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_too_slow_connection_frees_its_queue_while_the_close_frame_waits() {
    let (queue, rx) = mpsc::channel(64);
    let closer = Arc::new(Closer::default());
    let writer = ConnWriter::new(
        Arc::new(every_room(vec![])),
        rx,
        closer.clone(),
        8,
        Duration::from_secs(3600),
    );
    let task = tokio::spawn(writer.run(Stuck, Utf8Bytes::from_static("{}")));
    let room: Arc<str> = Arc::from("r");
    let shared = Arc::new(RoomFrame {
        room: room.clone(),
        seq: 1,
        event: Arc::from("test-event"),
        frame: Utf8Bytes::from_static("{}"),
    });
    for _ in 0..32 {
        queue.send(Outgoing::Event(shared.clone())).await.unwrap();
    }
    assert_eq!(Arc::strong_count(&shared), 33);
    closer.close(close::TOO_SLOW);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !queue.is_closed() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the queue is closed");
    // Nothing queued is held any more, although the writer still waits to
    // get its close frame out.
    assert_eq!(Arc::strong_count(&shared), 1);
    assert!(!task.is_finished());
    task.abort();
}

#[tokio::test]
async fn holding_too_many_live_events_closes_as_too_slow() {
    let mut h = start(vec![]);
    let room: Arc<str> = Arc::from("r");
    h.send(Outgoing::from(Control::Join {
        room: room.clone(),
        replay: true,
    }))
    .await;
    for seq in 1..=9 {
        h.send(live(&room, seq)).await;
    }
    assert_eq!(h.next().await["type"], "welcome");
    assert_eq!(h.next().await["close"], 4008);
}

#[tokio::test]
async fn long_replays_read_page_after_page_in_order() {
    let mut h = start_paged((1..=25).collect(), 4);
    let room: Arc<str> = Arc::from("r");
    h.send(Outgoing::from(Control::Join {
        room: room.clone(),
        replay: true,
    }))
    .await;
    h.send(live(&room, 26)).await;
    h.send(Outgoing::from(Control::Replay {
        room,
        after: 0,
        until: 25,
        reply: Default::default(),
    }))
    .await;
    assert_eq!(h.next().await["type"], "welcome");
    let mut seqs = Vec::new();
    loop {
        let frame = h.next().await;
        if frame.get("replayed").is_some() {
            assert_eq!(frame["replayed"], 25);
            break;
        }
        seqs.push(frame["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, (1..=26).collect::<Vec<_>>());
}
