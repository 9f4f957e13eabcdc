//! Socket.IO events out: the connection's writer writes protocol v1 frames
//! as it does to a WebSocket, and [`Outbound`] turns each one into what a
//! Socket.IO client expects:
//!
//! | v1 frame | Socket.IO |
//! |---|---|
//! | `event` (stored or ephemeral) | an event named after it, the frame as its argument |
//! | `reply` | the acknowledgement of the request it answers; a refusal of a request sent without one is an `error` event |
//! | `welcome`, `left` | `welcome` and `left` events with the frame |
//! | close with a code | a `close` event `{code, reason}`, then a namespace disconnect |
//!
//! A full Socket.IO buffer makes writes wait, as a full socket buffer does
//! on a WebSocket: the connection's send queue then fills, and a client
//! that stays too slow is closed with 4008 like any other.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::{SendError, SocketError};
use tokio::sync::mpsc;

use crate::gateway::connection::{close, Closer};

/// Requests waiting for their reply: the internal `ref` given to each
/// translated request, and how to acknowledge it (none when the client
/// sent it without an acknowledgement callback).
#[derive(Default)]
pub struct Pending {
    /// By internal ref.
    map: Mutex<HashMap<u64, Option<AckSender>>>,
}

impl Pending {
    /// Records a request.
    pub fn insert(&self, reference: u64, ack: Option<AckSender>) {
        self.lock().insert(reference, ack);
    }

    /// Takes a request back when its reply arrives.
    pub fn take(&self, reference: u64) -> Option<Option<AckSender>> {
        self.lock().remove(&reference)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Option<AckSender>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The socket is gone: the writer stops.
#[derive(Debug)]
pub struct Gone;

/// The fields of a v1 frame that decide where it goes.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default, rename = "ref")]
    reference: Option<Value>,
    #[serde(default)]
    ok: Option<bool>,
}

/// Longest wait between two tries of a write into a full buffer.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// The writing end of one Socket.IO connection.
pub struct Outbound {
    /// The socket.
    socket: SocketRef,
    /// Requests waiting for their reply.
    pending: Arc<Pending>,
    /// The reader's inbox: a heartbeat the transport answers is a `Pong`
    /// there (Socket.IO keeps its own heartbeat).
    inbox: mpsc::Sender<Message>,
    /// The connection's closer.
    closer: Arc<Closer>,
}

impl Outbound {
    /// The writing end of `socket`.
    pub fn new(
        socket: SocketRef,
        pending: Arc<Pending>,
        inbox: mpsc::Sender<Message>,
        closer: Arc<Closer>,
    ) -> Self {
        Self {
            socket,
            pending,
            inbox,
            closer,
        }
    }

    /// Delivers one message of the writer.
    pub async fn send(&mut self, message: Message) -> Result<(), Gone> {
        match message {
            Message::Text(text) => self.frame(text.as_str()).await,
            Message::Ping(_) => {
                if !self.socket.connected() {
                    return Err(Gone);
                }
                // Engine.IO answers for the client; the reader only needs to
                // know the connection is alive.
                let _ = self.inbox.try_send(Message::Pong(Default::default()));
                Ok(())
            }
            Message::Close(frame) => self.close(frame).await,
            Message::Binary(_) | Message::Pong(_) => Ok(()),
        }
    }

    async fn frame(&self, text: &str) -> Result<(), Gone> {
        let head: Head = match serde_json::from_str(text) {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable frame not sent to a Socket.IO client");
                return Ok(());
            }
        };
        match head.kind.as_ref() {
            "reply" => {
                self.reply(text, head.reference, head.ok.unwrap_or(false))
                    .await
            }
            "pong" => self.reply(text, head.reference, true).await,
            kind @ ("event" | "welcome" | "left") => {
                let name = match (kind, &head.event) {
                    ("event", Some(event)) => event.as_ref(),
                    _ => kind,
                };
                match RawValue::from_string(text.to_string()) {
                    Ok(frame) => self.emit(name, &frame).await,
                    Err(_) => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Sends a reply as the acknowledgement of its request; a refusal of a
    /// request without one becomes an `error` event, a success is dropped.
    async fn reply(&self, text: &str, reference: Option<Value>, ok: bool) -> Result<(), Gone> {
        let Some(ack) = reference
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|r| self.pending.take(r))
        else {
            return Ok(());
        };
        let mut reply: Map<String, Value> = match serde_json::from_str(text) {
            Ok(reply) => reply,
            Err(_) => return Ok(()),
        };
        reply.remove("ref");
        match ack {
            Some(ack) => match ack.send(&reply) {
                Ok(()) => Ok(()),
                Err(SendError::Socket(SocketError::Closed)) => Err(Gone),
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    // An acknowledgement cannot wait for room: the client
                    // stopped reading, like a full send queue.
                    self.closer.close(close::TOO_SLOW);
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(error = %e, "acknowledgement not sent");
                    Ok(())
                }
            },
            None if !ok => self.emit("error", &reply).await,
            None => Ok(()),
        }
    }

    /// A close code becomes a `close` event and a namespace disconnect.
    /// `1001` (the relay stops, or the client went away) disconnects
    /// nothing here: on shutdown every Engine.IO transport is closed, which
    /// `socket.io-client` answers by reconnecting on its own.
    async fn close(&self, frame: Option<CloseFrame>) -> Result<(), Gone> {
        let Some(frame) = frame else {
            return Ok(());
        };
        if frame.code == close::GOING_AWAY || !self.socket.connected() {
            return Ok(());
        }
        let notice = serde_json::json!({"code": frame.code, "reason": frame.reason.as_str()});
        self.emit("close", &notice).await?;
        self.retry(|| self.socket.clone().disconnect().map_err(SendError::Socket))
            .await
    }

    async fn emit<T: serde::Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), Gone> {
        self.retry(|| self.socket.emit(event, data)).await
    }

    /// Runs `send` until it gets room in the Socket.IO buffer.
    async fn retry(&self, send: impl Fn() -> Result<(), SendError>) -> Result<(), Gone> {
        let mut wait = Duration::from_millis(1);
        loop {
            match send() {
                Ok(()) => return Ok(()),
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                Err(SendError::Socket(SocketError::Closed)) => return Err(Gone),
                Err(e) => {
                    tracing::debug!(error = %e, "frame not sent to a Socket.IO client");
                    return Ok(());
                }
            }
        }
    }
}
