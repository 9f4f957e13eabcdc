//! A real WebSocket client of the relay's protocol (tokio-tungstenite):
//! it reads the welcome, sends requests with a fresh `ref` and waits for
//! their reply, keeps the frames that arrived meanwhile, and reports close
//! codes. Every wait is bounded by [`FRAME_DEADLINE`].

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What arrived on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A JSON frame.
    Frame(Value),
    /// A close frame with its code.
    Closed(u16),
    /// The connection ended without a close frame.
    Ended,
}

/// A connected client.
pub struct Ws {
    /// The socket.
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The welcome frame.
    pub welcome: Value,
    /// Frames read while waiting for something else, in order.
    backlog: std::collections::VecDeque<Value>,
    /// Reference counter.
    next_ref: u64,
}

/// How long a test waits for one frame.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(20);

/// Connects with a token in the query and reads the welcome.
pub async fn open(addr: SocketAddr, token: &str) -> Ws {
    let url = format!("ws://{addr}/v1/ws?token={token}");
    let (stream, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket connect");
    Ws::started(stream).await
}

/// Tries an upgrade request; returns the HTTP status and body of a refusal.
pub async fn refused(request: impl IntoClientRequest + Unpin) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            (status, body)
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

impl Ws {
    /// Wraps a connected socket and reads the welcome.
    pub async fn started(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        let mut ws = Self {
            stream,
            welcome: Value::Null,
            backlog: Default::default(),
            next_ref: 0,
        };
        let welcome = ws.frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws.welcome = welcome;
        ws
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    /// Sends a frame, ignoring a connection the server already closed.
    pub async fn send_unchecked(&mut self, frame: Value) {
        let _ = self
            .stream
            .send(Message::Text(frame.to_string().into()))
            .await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next thing that arrives (pings and pongs skipped).
    pub async fn receive(&mut self) -> Received {
        if let Some(frame) = self.backlog.pop_front() {
            return Received::Frame(frame);
        }
        loop {
            let message = tokio::time::timeout(FRAME_DEADLINE, self.stream.next())
                .await
                .expect("a frame within the deadline");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Received::Frame(serde_json::from_str(&text).unwrap())
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(1005))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Ended,
            }
        }
    }

    /// The next event frame named `event`, skipping other frames.
    pub async fn next_event(&mut self, event: &str) -> Value {
        loop {
            let frame = self.frame().await;
            if frame["type"] == "event" && frame["event"] == event {
                return frame;
            }
        }
    }

    /// The next JSON frame; panics on close.
    pub async fn frame(&mut self) -> Value {
        match self.receive().await {
            Received::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Sends a request with a fresh `ref` and returns its reply (or pong); frames
    /// that arrive first are kept for [`frame`](Self::frame).
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_ref += 1;
        let reference = format!("r{}", self.next_ref);
        frame["ref"] = json!(reference);
        self.send(frame).await;
        let mut skipped = Vec::new();
        let reply = loop {
            let frame = self.frame().await;
            let answers = frame["type"] == "reply" || frame["type"] == "pong";
            if answers && frame["ref"] == json!(reference) {
                break frame;
            }
            skipped.push(frame);
        };
        for frame in skipped.into_iter().rev() {
            self.backlog.push_front(frame);
        }
        reply
    }

    /// Joins a room; returns the reply.
    pub async fn join(&mut self, room: &str) -> Value {
        self.request(json!({"type": "join", "room": room})).await
    }

    /// Every frame received until a `pong`: all that was queued before it.
    pub async fn drain(&mut self) -> Vec<Value> {
        self.next_ref += 1;
        let reference = format!("drain{}", self.next_ref);
        self.send(json!({"type": "ping", "ref": reference})).await;
        let mut frames = Vec::new();
        loop {
            let frame = self.frame().await;
            if frame["type"] == "pong" && frame["ref"] == json!(reference) {
                return frames;
            }
            frames.push(frame);
        }
    }

    /// Waits for a close frame; returns its code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            match self.receive().await {
                Received::Frame(_) => continue,
                Received::Closed(code) => return code,
                Received::Ended => panic!("the connection ended without a close frame"),
            }
        }
    }
}

/// The close code helper for tungstenite's enum.
pub fn code(code: CloseCode) -> u16 {
    u16::from(code)
}

/// A client whose socket has a tiny receive buffer, so that when it stops
/// reading the relay's side fills up quickly.
pub async fn slow_client(addr: SocketAddr, token: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/v1/ws?token={token}");
    let (stream, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("WebSocket handshake");
    Ws::started(stream).await
}
