//! The bus over NATS (`ROWCAST_BUS=nats://...`), with JetStream. Every
//! subject and the stream are named after `ROWCAST_NATS_STREAM` (`<stream>`
//! below), so deployments can share a server.
//!
//! - **Ephemeral frames** go over the core subject `rowcast.<stream>.emit`,
//!   in the Postgres bus's envelope: at most once, never to their own node.
//! - **Stored events**: the leader publishes each event it delivers, in seq
//!   order, to the JetStream stream `<stream>` (subject
//!   `rowcast.<stream>.events`) with `Nats-Msg-Id` = seq, so the stream's
//!   duplicate window drops what a new leader publishes again. Every node
//!   consumes new messages with an ordered push consumer and hands them to
//!   its outbox ([`EventStream`]), which delivers an event only when it
//!   follows what was delivered and reads any gap from the table: a lost
//!   publish, a full queue, a reconnect, or history older than the stream
//!   holds all fall back to the outbox.
//!
//! Only server features of NATS 2.9 are used (stream limits, the duplicate
//! window, ordered push consumers with flow control and heartbeats).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::{next_batch, node_name, BusError, Envelope, Received};
use crate::config::NatsConfig;
use crate::db::Backoff;
use crate::event::{Event, StoredEvent};
use crate::fanout::{Bus, Hub};
use crate::outbox::{EventStream, Subscriber};
use crate::shutdown::Shutdown;

/// Frames, or events, waiting to be sent, at most; and events received
/// and not yet taken by the outbox, at most.
const QUEUE: usize = 4096;

/// Events published before their acknowledgements are awaited, at most.
const BATCH: usize = 256;

/// How long the stream keeps events (older ones are read from the outbox).
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Events the stream keeps, at most.
const MAX_EVENTS: i64 = 1_000_000;

/// How long the stream remembers a `Nats-Msg-Id`, to drop a re-publish.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// This node's end of the NATS bus, for ephemeral frames.
pub struct NatsBus {
    /// This node's name on the bus.
    node: String,
    /// Payloads for the sender task.
    outbound: mpsc::Sender<Bytes>,
}

/// The subjects of one deployment.
#[derive(Clone)]
struct Subjects {
    /// Ephemeral frames (core NATS).
    emit: String,
    /// Stored events (the stream's only subject).
    events: String,
}

impl NatsBus {
    /// Connects (within `timeout`), makes sure the stream exists, and
    /// starts sending and receiving; frames of other nodes go to `hub`.
    pub async fn start(
        config: &NatsConfig,
        timeout: Duration,
        hub: Arc<Hub>,
        shutdown: &Shutdown,
    ) -> Result<(Arc<Self>, EventStream), BusError> {
        let connect = async_nats::ConnectOptions::new()
            .name("rowcast")
            .connection_timeout(timeout)
            .connect(config.url.as_str());
        let client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| BusError::Nats(format!("no answer within {timeout:?}")))?
            .map_err(|e| BusError::Nats(format!("cannot connect: {e}")))?;
        let subjects = Subjects {
            emit: format!("rowcast.{}.emit", config.stream),
            events: format!("rowcast.{}.events", config.stream),
        };
        let context = jetstream::new(client.clone());
        context
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![subjects.events.clone()],
                max_age: MAX_AGE,
                max_messages: MAX_EVENTS,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Nats(format!("stream {}: {e}", config.stream)))?;
        let emits = client
            .subscribe(subjects.emit.clone())
            .await
            .map_err(|e| BusError::Nats(format!("cannot subscribe: {e}")))?;
        tracing::info!(stream = %config.stream, "connected to the NATS bus");

        let node = node_name();
        let (outbound, frames) = mpsc::channel(QUEUE);
        tokio::spawn(send_frames(
            client.clone(),
            subjects.emit.clone(),
            frames,
            shutdown.clone(),
        ));
        tokio::spawn(receive_frames(emits, node.clone(), hub, shutdown.clone()));
        let (to_publish, queue) = mpsc::channel(QUEUE);
        tokio::spawn(publish_events(
            context.clone(),
            subjects.events.clone(),
            queue,
            shutdown.clone(),
        ));
        let (received, feed) = mpsc::channel(QUEUE);
        tokio::spawn(consume_events(
            context,
            client,
            config.stream.clone(),
            subjects.events,
            received,
            shutdown.clone(),
        ));
        let stream = EventStream {
            forward: Arc::new(Forward { queue: to_publish }),
            received: feed,
        };
        Ok((Arc::new(Self { node, outbound }), stream))
    }
}

impl Bus for NatsBus {
    fn emit(&self, room: &str, frame: &Utf8Bytes) {
        let payload = Envelope::encode(&self.node, room, frame.as_str());
        if self.outbound.try_send(Bytes::from(payload)).is_err() {
            metrics::counter!("rowcast_bus_dropped_total").increment(1);
        }
    }
}

/// Publishes queued ephemeral frames.
async fn send_frames(
    client: async_nats::Client,
    subject: String,
    mut frames: mpsc::Receiver<Bytes>,
    shutdown: Shutdown,
) {
    loop {
        let payload = tokio::select! {
            payload = frames.recv() => match payload {
                Some(payload) => payload,
                None => return,
            },
            _ = shutdown.wait() => return,
        };
        if let Err(error) = client.publish(subject.clone(), payload).await {
            metrics::counter!("rowcast_bus_dropped_total").increment(1);
            tracing::debug!(%error, "ephemeral frame not sent to other nodes");
        }
    }
}

/// Hands other nodes' ephemeral frames to this node's members (the client
/// subscribes again by itself after a reconnect).
async fn receive_frames(
    mut emits: async_nats::Subscriber,
    node: String,
    hub: Arc<Hub>,
    shutdown: Shutdown,
) {
    loop {
        let message = tokio::select! {
            message = emits.next() => match message {
                Some(message) => message,
                None => return,
            },
            _ = shutdown.wait() => return,
        };
        let Ok(received) = serde_json::from_slice::<Received>(&message.payload) else {
            continue;
        };
        if received.node != node {
            hub.emit_from_peer(&received.room, Utf8Bytes::from(received.frame));
        }
    }
}

/// The leader's side: every event it delivers, queued for the stream.
struct Forward {
    /// Events for the publisher task.
    queue: mpsc::Sender<Arc<StoredEvent>>,
}

impl Subscriber for Forward {
    fn stored(&self, events: &[Arc<StoredEvent>]) {
        for event in events {
            if self.queue.try_send(event.clone()).is_err() {
                // The other nodes read it from the outbox.
                metrics::counter!("rowcast_bus_dropped_total").increment(1);
            }
        }
    }
}

/// Publishes queued events to the stream, in seq order, a batch before
/// awaiting its acknowledgements.
async fn publish_events(
    context: jetstream::Context,
    subject: String,
    mut queue: mpsc::Receiver<Arc<StoredEvent>>,
    shutdown: Shutdown,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while next_batch(&mut queue, &mut batch, BATCH, &shutdown).await {
        let mut acks = Vec::with_capacity(batch.len());
        for event in &batch {
            let message = jetstream::message::PublishMessage::build()
                .message_id(event.seq.to_string())
                .payload(encode(event));
            match context.send_publish(subject.clone(), message).await {
                Ok(ack) => acks.push(ack),
                Err(error) => {
                    metrics::counter!("rowcast_bus_dropped_total").increment(1);
                    tracing::debug!(%error, seq = event.seq, "event not published to the stream");
                }
            }
        }
        for ack in acks {
            if let Err(error) = ack.await {
                metrics::counter!("rowcast_bus_dropped_total").increment(1);
                tracing::debug!(%error, "event not acknowledged by the stream");
            }
        }
    }
}

/// Consumes the stream until shutdown, from the newest message on (what
/// came before is in the outbox), starting over with backoff when the
/// consumer fails.
async fn consume_events(
    context: jetstream::Context,
    client: async_nats::Client,
    stream: String,
    subject: String,
    received: mpsc::Sender<Arc<StoredEvent>>,
    shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let consumed = tokio::select! {
            consumed = consume(&context, &client, &stream, &subject, &received, &mut backoff) => consumed,
            _ = shutdown.wait() => return,
        };
        tracing::warn!(error = %consumed, "the NATS stream consumer stopped; starting over");
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// One ordered consumer of the stream, until it fails (the reason).
async fn consume(
    context: &jetstream::Context,
    client: &async_nats::Client,
    stream: &str,
    subject: &str,
    received: &mpsc::Sender<Arc<StoredEvent>>,
    backoff: &mut Backoff,
) -> String {
    let messages = async {
        let stream = context
            .get_stream(stream)
            .await
            .map_err(|e| e.to_string())?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: subject.to_string(),
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        consumer.messages().await.map_err(|e| e.to_string())
    };
    let mut messages = match messages.await {
        Ok(messages) => messages,
        Err(error) => return error,
    };
    backoff.reset();
    loop {
        let message = match messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => return error.to_string(),
            None => return "the consumer ended".to_string(),
        };
        let Some(event) = decode(&message.payload) else {
            tracing::debug!("undecodable message on the stream");
            continue;
        };
        if received.try_send(Arc::new(event)).is_err() {
            // The outbox fills the gap when the next event arrives.
            metrics::counter!("rowcast_bus_dropped_total").increment(1);
        }
    }
}

/// A stored event on the stream (as sent).
#[derive(Serialize)]
struct WireOut<'a> {
    seq: i64,
    event: &'a str,
    rooms: &'a [String],
    data: &'a str,
    old: Option<&'a str>,
    /// Commit time, in microseconds since the epoch (what the outbox
    /// keeps, so a frame reads the same as when replayed).
    at: i64,
    count: Option<i32>,
}

/// A stored event on the stream (as received).
#[derive(Deserialize)]
struct WireIn {
    seq: i64,
    event: String,
    rooms: Vec<String>,
    data: String,
    old: Option<String>,
    at: i64,
    count: Option<i32>,
}

fn encode(event: &StoredEvent) -> Bytes {
    let wire = WireOut {
        seq: event.seq,
        event: &event.name,
        rooms: &event.rooms,
        data: &event.data,
        old: event.old.as_deref(),
        at: (event.at.unix_timestamp_nanos() / 1000) as i64,
        count: event.count,
    };
    Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
}

fn decode(payload: &[u8]) -> Option<StoredEvent> {
    let wire: WireIn = serde_json::from_slice(payload).ok()?;
    Some(StoredEvent {
        seq: wire.seq,
        event: Event {
            name: Arc::from(wire.event),
            rooms: wire.rooms,
            data: wire.data,
            old: wire.old,
            at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(wire.at) * 1000).ok()?,
            count: wire.count,
            coalesce: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_the_stream_unchanged() {
        let event = StoredEvent {
            seq: 42,
            event: Event {
                name: Arc::from("content-updated"),
                rooms: vec!["content_1".into(), "user_\"2".into()],
                data: r#"{"id":1,"title":"a \"b\""}"#.into(),
                old: Some(r#"{"title":"a"}"#.into()),
                at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap(),
                count: Some(3),
                coalesce: None,
            },
        };
        assert_eq!(decode(&encode(&event)), Some(event.clone()));
        assert_eq!(decode(b"{}"), None);
        // Times travel at the outbox's precision.
        let mut precise = event.clone();
        precise.event.at += time::Duration::nanoseconds(789);
        assert_eq!(decode(&encode(&precise)), Some(event));
    }
}
