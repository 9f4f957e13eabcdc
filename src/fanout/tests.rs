//! The hub without sockets: members are plain channels.

use std::sync::atomic::AtomicU16;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::*;
use crate::event::Event;

/// A mailbox over a bounded channel that remembers its close code.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<Delivery>,
    code: AtomicU16,
}

impl Mailbox for Queue {
    fn offer(&self, delivery: Delivery) -> bool {
        self.tx.try_send(delivery).is_ok()
    }

    fn close(&self, code: u16) {
        self.code.store(code, Ordering::Relaxed);
    }
}

fn queue(capacity: usize) -> (Arc<Queue>, mpsc::Receiver<Delivery>) {
    let (tx, rx) = mpsc::channel(capacity);
    let code = AtomicU16::new(0);
    (Arc::new(Queue { tx, code }), rx)
}

fn member(conn: ConnId, capacity: usize) -> (Member, mpsc::Receiver<Delivery>) {
    let (mailbox, rx) = queue(capacity);
    (Member { conn, mailbox }, rx)
}

fn stored(seq: i64, rooms: &[&str]) -> Arc<StoredEvent> {
    Arc::new(StoredEvent {
        seq,
        event: Event {
            name: Arc::from("content-updated"),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            data: "{\"id\":1}".into(),
            old: None,
            at: OffsetDateTime::now_utc(),
            count: None,
            coalesce: None,
        },
    })
}

fn frame_of(item: Delivery) -> (String, i64, String) {
    match item {
        Delivery::Event(event) => (event.room.to_string(), event.seq, event.frame.to_string()),
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
fn a_full_mailbox_does_not_hold_up_the_others() {
    let hub = Hub::new(0);
    let (slow, _slow_rx) = member(1, 2);
    let (fast, mut fast_rx) = member(2, 64);
    hub.join("room_1", slow);
    hub.join("room_1", fast);
    for seq in 1..=10 {
        hub.stored(&[stored(seq, &["room_1"])]);
    }
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
    assert!(matches!(b_rx.try_recv(), Ok(Delivery::Frame(_))));
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
    let queues: Vec<Arc<Queue>> = (0..3).map(|_| queue(1).0).collect();
    for queue in &queues {
        hub.connect(hub.next_conn(), queue.clone());
    }
    assert_eq!(hub.connection_count(), 3);
    hub.close_all(1001);
    assert!(queues
        .iter()
        .all(|q| q.code.load(Ordering::Relaxed) == 1001));
}

#[test]
fn large_rooms_keep_every_member_once_through_joins_and_leaves() {
    let hub = Hub::new(0);
    let mut receivers = Vec::new();
    for conn in 1..=100 {
        let (member, rx) = member(conn, 8);
        hub.join("broadcast", member.clone());
        hub.join("broadcast", member); // a second join replaces, never duplicates
        receivers.push(rx);
    }
    for conn in (1..=100).filter(|c| c % 3 == 0) {
        hub.leave("broadcast", conn);
    }
    hub.stored(&[stored(1, &["broadcast"])]);
    for (conn, rx) in (1..=100u64).zip(receivers.iter_mut()) {
        let got = std::iter::from_fn(|| rx.try_recv().ok()).count();
        assert_eq!(got, usize::from(conn % 3 != 0), "member {conn}");
    }
    let mut members = hub.members("broadcast");
    members.sort_unstable();
    assert_eq!(
        members,
        (1..=100).filter(|c| c % 3 != 0).collect::<Vec<_>>()
    );
}
