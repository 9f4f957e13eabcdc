//! The hub without sockets: members are plain channels.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::*;

fn member(conn: ConnId, capacity: usize) -> (Member, mpsc::Receiver<Outgoing>) {
    let (queue, rx) = mpsc::channel(capacity);
    let closer = Arc::new(Closer::default());
    (
        Member {
            conn,
            queue,
            closer,
        },
        rx,
    )
}

fn stored(seq: i64, rooms: &[&str]) -> Arc<StoredEvent> {
    Arc::new(StoredEvent {
        seq,
        name: Arc::from("content-updated"),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        data: "{\"id\":1}".into(),
        old: None,
        at: OffsetDateTime::now_utc(),
        count: None,
    })
}

fn frame_of(item: Outgoing) -> (String, i64, String) {
    match item {
        Outgoing::Event(event) => (event.room.to_string(), event.seq, event.frame.to_string()),
        other => panic!("not an event: {other:?}"),
    }
}

#[test]
fn events_reach_members_of_their_rooms_only() {
    let hub = Hub::new(0);
    let (a, mut a_rx) = member(1, 8);
    let (b, mut b_rx) = member(2, 8);
    hub.join("content_1", a.clone());
    hub.join("user_1", a);
    hub.join("user_2", b);
    hub.stored(&[stored(1, &["content_1", "user_1"]), stored(2, &["user_3"])]);
    let (room, seq, frame) = frame_of(a_rx.try_recv().unwrap());
    assert_eq!((room.as_str(), seq), ("content_1", 1));
    assert!(frame.contains("\"room\":\"content_1\""));
    let (room, seq, _) = frame_of(a_rx.try_recv().unwrap());
    assert_eq!((room.as_str(), seq), ("user_1", 1));
    assert!(a_rx.try_recv().is_err());
    assert!(b_rx.try_recv().is_err());
    assert_eq!(hub.head(), 2);
}

#[test]
fn members_of_a_room_share_one_serialized_frame() {
    let hub = Hub::new(0);
    let (a, mut a_rx) = member(1, 8);
    let (b, mut b_rx) = member(2, 8);
    hub.join("broadcast", a);
    hub.join("broadcast", b);
    hub.stored(&[stored(5, &["broadcast"])]);
    let (_, _, fa) = frame_of(a_rx.try_recv().unwrap());
    let (_, _, fb) = frame_of(b_rx.try_recv().unwrap());
    assert_eq!(fa, fb);
}

#[test]
fn a_full_queue_closes_its_connection_as_too_slow() {
    let hub = Hub::new(0);
    let (slow, _slow_rx) = member(1, 2);
    let closer = slow.closer.clone();
    let (fast, mut fast_rx) = member(2, 64);
    hub.join("room_1", slow);
    hub.join("room_1", fast);
    for seq in 1..=10 {
        hub.stored(&[stored(seq, &["room_1"])]);
    }
    assert_eq!(closer.code(), Some(crate::gateway::close::TOO_SLOW));
    let mut seen = 0;
    while fast_rx.try_recv().is_ok() {
        seen += 1;
    }
    assert_eq!(seen, 10, "the healthy member got everything");
}

#[test]
fn emits_skip_the_sender_and_leaving_stops_delivery() {
    let hub = Hub::new(0);
    let (a, mut a_rx) = member(1, 8);
    let (b, mut b_rx) = member(2, 8);
    hub.join("content_1", a);
    hub.join("content_1", b);
    assert_eq!(hub.emit("content_1", Utf8Bytes::from("{}"), 1), 1);
    assert!(a_rx.try_recv().is_err());
    assert!(matches!(b_rx.try_recv(), Ok(Outgoing::Frame(_))));
    hub.leave("content_1", 2);
    hub.stored(&[stored(1, &["content_1"])]);
    assert!(b_rx.try_recv().is_err());
    assert!(a_rx.try_recv().is_ok());
    hub.leave("content_1", 1);
    assert_eq!(hub.room_count(), 0);
}

#[test]
fn close_all_reaches_every_connection() {
    let hub = Hub::new(0);
    let closers: Vec<Arc<Closer>> = (0..3).map(|_| Arc::new(Closer::default())).collect();
    for closer in &closers {
        hub.connect(closer.clone());
    }
    assert_eq!(hub.connection_count(), 3);
    hub.close_all(1001);
    assert!(closers.iter().all(|c| c.code() == Some(1001)));
}

#[test]
fn a_send_queue_slot_is_two_words() {
    // A stalled client fills its whole queue: each slot must stay small.
    assert!(std::mem::size_of::<Outgoing>() <= 16);
}
