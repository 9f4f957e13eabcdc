//! `/socket.io/`: the Socket.IO v5 protocol (websocket and polling
//! transports) on the gateway's port, so that an unchanged
//! `socket.io-client` 4.x is a rowcast connection.
//!
//! A Socket.IO connection is one rowcast connection, run by the same
//! [`lifecycle::run`] as `/v1/ws`: the same admission (token from
//! `auth: { token }`, a refusal being a `connect_error`), the same send
//! queue bound and slow-client handling, the same reader and writer. Only
//! the ends differ: client events are translated into protocol v1 frames
//! for the reader ([`inbound`]), and the writer's frames into Socket.IO
//! events and acknowledgements ([`outbound`]).

mod inbound;
mod outbound;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Message;
use axum::extract::ConnectInfo;
use axum::Router;
use futures_util::StreamExt;
use serde_json::Value;
use socketioxide::extract::{AckSender, Event, HttpExtension, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::{SocketIo, TransportType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::lifecycle::{self, Admission, Transport};
use super::{Live, LiveState};
use crate::protocol;
use inbound::translate;
use outbound::{Outbound, Pending};

/// Where Socket.IO clients connect (`socket.io-client`'s default path).
const PATH: &str = "/socket.io/";
/// Client events waiting for the reader; beyond this a client is sending
/// faster than its requests are answered, and is refused at once.
const INBOX: usize = 64;
/// Packets the Socket.IO buffer of a connection holds before writes wait.
const BUFFER: usize = 64;

/// The Socket.IO service at `/socket.io/`, and shutdown for its
/// connections (every transport is closed, so clients reconnect to
/// another node).
pub(super) fn router<S: Clone + Send + Sync + 'static>(state: Live) -> Router<S> {
    let limits = &state.config.limits;
    let (service, io) = SocketIo::builder()
        .transports([TransportType::Polling, TransportType::Websocket])
        .max_payload(limits.max_frame_bytes as u64)
        .max_buffer_size(BUFFER)
        .ws_read_buffer_size(super::ws::READ_BUFFER)
        .ws_max_message_size(limits.max_frame_bytes)
        .ws_max_frame_size(limits.max_frame_bytes)
        .build_svc();
    let admit_state = state.clone();
    let admit = move |socket: SocketRef,
                      HttpExtension(ConnectInfo(peer)): HttpExtension<ConnectInfo<SocketAddr>>,
                      TryData(auth): TryData<Value>| {
        let state = admit_state.clone();
        async move { admit(&state, &socket, peer, auth.ok()) }
    };
    let run_state = state.clone();
    let connected = move |socket: SocketRef| {
        let state = run_state.clone();
        async move { connected(state, socket).await }
    };
    io.ns("/", connected.with(admit));
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        shutdown.wait().await;
        io.close().await;
    });
    Router::new().route_service(PATH, service)
}

/// Why a Socket.IO connection was refused: the `connect_error` message,
/// `"<code>: <message>"` with the same code as the HTTP refusal of
/// `/v1/ws`.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An admitted socket, handed from the connect middleware to the connect
/// handler.
#[derive(Clone)]
struct Admitted(Arc<Mutex<Option<Prepared>>>);

/// What the middleware prepared for an admitted socket: its client events
/// are already being received (the handlers are in place before the socket
/// can deliver any), and wait in the inbox until the reader starts.
struct Prepared {
    /// The admission (token, place under the caps).
    admission: Admission,
    /// The reader's inbox, for the writer's heartbeats.
    inbox: mpsc::Sender<Message>,
    /// The reader's end of the inbox.
    inbox_rx: mpsc::Receiver<Message>,
    /// Requests waiting for their reply.
    pending: Arc<Pending>,
    /// Cancelled when the socket disconnects.
    gone: CancellationToken,
}

fn admit(
    state: &LiveState,
    socket: &SocketRef,
    peer: SocketAddr,
    auth: Option<Value>,
) -> Result<(), Refused> {
    let headers = &socket.req_parts().headers;
    let origin = headers
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    let token = auth
        .as_ref()
        .and_then(|auth| auth.get("token"))
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .map(str::to_string)
        .or_else(|| super::auth::token_from(headers, socket.req_parts().uri.query()));
    let admission = lifecycle::admit(state, peer.ip(), origin, token)
        .map_err(|e| Refused(format!("{}: {}", e.code.as_str(), e.message)))?;
    let prepared = receive(socket, admission);
    socket
        .extensions
        .insert(Admitted(Arc::new(Mutex::new(Some(prepared)))));
    Ok(())
}

/// Starts receiving an admitted socket's client events. The socket joins
/// its namespace only after the middleware, so nothing it sends is missed.
fn receive(socket: &SocketRef, admission: Admission) -> Prepared {
    let (inbox, inbox_rx) = mpsc::channel(INBOX);
    let pending = Arc::new(Pending::default());
    let gone = CancellationToken::new();
    let inbound = Inbound {
        inbox: inbox.clone(),
        pending: pending.clone(),
        next: Arc::new(AtomicU64::new(1)),
    };
    socket.on_fallback(
        move |Event(event): Event,
              TryData(data): TryData<Value>,
              AckRequested(wants_ack): AckRequested,
              ack: AckSender| {
            inbound.receive(&event, data.ok(), wants_ack.then_some(ack));
            std::future::ready(())
        },
    );
    let on_gone = gone.clone();
    socket.on_disconnect(move || {
        on_gone.cancel();
        std::future::ready(())
    });
    Prepared {
        admission,
        inbox,
        inbox_rx,
        pending,
        gone,
    }
}

/// Whether the client asked for an acknowledgement.
struct AckRequested(bool);

impl FromMessageParts<socketioxide::adapter::LocalAdapter> for AckRequested {
    type Error = Infallible;

    fn from_message_parts(
        _: &Arc<socketioxide::socket::Socket>,
        _: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Self(ack_id.is_some()))
    }
}

/// The receiving end of one connection's client events (cloned into the
/// socket's handler).
#[derive(Clone)]
struct Inbound {
    /// The reader's inbox.
    inbox: mpsc::Sender<Message>,
    /// Requests waiting for their reply.
    pending: Arc<Pending>,
    /// The next internal `ref`.
    next: Arc<AtomicU64>,
}

impl Inbound {
    /// Hands a client event to the reader (or refuses it at once). Runs in
    /// the order the events arrived: Socket.IO calls it before spawning.
    fn receive(&self, event: &str, data: Option<Value>, ack: Option<AckSender>) {
        let mut frame = match translate(event, data) {
            Ok(frame) => frame,
            Err(refusal) => return refuse(ack, protocol::error(None, &refusal)),
        };
        let reference = self.next.fetch_add(1, Ordering::Relaxed);
        frame.insert("ref".into(), reference.into());
        let text = protocol::text(Value::Object(frame));
        self.pending.insert(reference, ack);
        if self.inbox.try_send(Message::Text(text)).is_err() {
            if let Some(Some(ack)) = self.pending.take(reference) {
                let refusal = protocol::Refusal::new(
                    protocol::Code::RateLimited,
                    "too many requests waiting; slow down",
                );
                refuse(Some(ack), protocol::error(None, &refusal));
            }
        }
    }
}

/// Acknowledges a request with a refusal (dropped without a callback).
fn refuse(ack: Option<AckSender>, reply: axum::extract::ws::Utf8Bytes) {
    if let (Some(ack), Ok(reply)) = (ack, serde_json::from_str::<Value>(reply.as_str())) {
        let _ = ack.send(&reply);
    }
}

/// Runs an admitted Socket.IO connection to its end.
async fn connected(state: Live, socket: SocketRef) {
    let prepared = socket
        .extensions
        .remove::<Admitted>()
        .and_then(|admitted| admitted.0.lock().ok()?.take());
    let Some(Prepared {
        admission,
        inbox,
        inbox_rx,
        pending,
        gone,
    }) = prepared
    else {
        let _ = socket.disconnect();
        return;
    };
    let stream = Box::pin(
        ReceiverStream::new(inbox_rx)
            .map(Ok::<_, Infallible>)
            .take_until(gone.cancelled_owned()),
    );
    lifecycle::run(
        state,
        admission,
        Transport::SocketIo,
        move |closer| {
            let outbound = Outbound::new(socket, pending, inbox, closer);
            Box::pin(futures_util::sink::unfold(
                outbound,
                |mut outbound, message: Message| async move {
                    outbound.send(message).await.map(|()| outbound)
                },
            ))
        },
        stream,
    )
    .await;
}
