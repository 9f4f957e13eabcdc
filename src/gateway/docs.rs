//! `GET /v1/docs/{name}`: a Yjs document over the y-websocket protocol, so
//! an unchanged `WebsocketProvider("ws://host/v1/docs", name, ydoc,
//! { params: { token } })` syncs with it.
//!
//! Before the upgrade: the checks of `/v1/ws` (origin, rates, capacity,
//! token, caps), then reading is joining room `name` (`realtime.authorize`,
//! 403 when refused) and writing is `realtime.authorize_edit`. A reader's
//! updates are never applied or relayed: the first one gets a y-protocol
//! permission-denied message. A writer's update is stored, then applied,
//! then relayed to the document's other sessions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRef, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use yrs::block::ClientID;
use yrs::encoding::read::Cursor;
use yrs::sync::{Message, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact, Update};

use super::auth::token_from;
use super::connection::reader::Authorize as _;
use super::error::ApiError;
use super::lifecycle::{self, Admission};
use super::{GatewayState, Live};
use crate::doc::{DocError, Docs, Handle};
use crate::protocol::Code;

/// Close code for a session whose relay queue overflowed (it resyncs on
/// reconnect) or whose message was not y-protocol.
const CLOSE_POLICY: u16 = 1008;

/// What the documents endpoint uses.
#[derive(Clone)]
pub(super) struct DocsApi {
    live: Live,
    docs: Arc<Docs>,
}

impl FromRef<Arc<GatewayState>> for DocsApi {
    fn from_ref(state: &Arc<GatewayState>) -> Self {
        Self {
            live: state.live.clone(),
            docs: state.docs.clone(),
        }
    }
}

/// Session ids, for not relaying a message back to its sender.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Checks the request, opens the document and upgrades.
pub(super) async fn upgrade(
    State(api): State<DocsApi>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    match admit(&api, &name, peer, query.as_deref(), &headers).await {
        Ok((admission, can_edit, doc)) => {
            let max = api.live.config.limits.max_frame_bytes;
            ws.read_buffer_size(super::ws::READ_BUFFER)
                .max_message_size(max)
                .max_frame_size(max)
                .on_upgrade(move |socket| session(api, admission, doc, can_edit, socket))
        }
        Err(error) => error.into_response(),
    }
}

async fn admit(
    api: &DocsApi,
    name: &str,
    peer: SocketAddr,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Admission, bool, Handle), ApiError> {
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a document name is 1 to 200 characters, none of them control characters",
        ));
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let token = token_from(headers, query);
    let admission = lifecycle::admit(&api.live, peer.ip(), origin, token)?;
    let reads = &api.live.reads;
    let may_read = reads
        .authorize(&admission.claims, name)
        .await
        .map_err(ApiError::internal)?;
    if !may_read {
        return Err(ApiError::forbidden(format!("not allowed to open {name}")));
    }
    let can_edit = reads
        .authorize_edit(&admission.claims, name)
        .await
        .map_err(ApiError::internal)?;
    let doc = api.docs.open(name).await.map_err(|e| match e {
        DocError::Malformed(why) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            format!("the document's stored updates are unusable: {why}"),
        ),
        DocError::Database(e) => ApiError::internal(e),
    })?;
    Ok((admission, can_edit, doc))
}

/// One editor or reader of a document until either side closes.
async fn session(
    api: DocsApi,
    admission: Admission,
    doc: Handle,
    can_edit: bool,
    socket: WebSocket,
) {
    let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
    let user = admission.claims.sub.clone();
    let mut relayed = doc.subscribe();
    let (mut sink, mut stream) = socket.split();
    // The server's half of the handshake: its state vector and who is here.
    let start = doc.with(|state| {
        let sv = state.doc().transact().state_vector();
        let mut out = vec![Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()];
        if let Ok(awareness) = state.update() {
            if !awareness.clients.is_empty() {
                out.push(Message::Awareness(awareness).encode_v1());
            }
        }
        out
    });
    for message in start {
        if sink.send(WsMessage::Binary(message.into())).await.is_err() {
            return;
        }
    }
    let mut session = Session {
        api: &api,
        doc: &doc,
        id,
        can_edit,
        denied: false,
        clients: Vec::new(),
    };
    let shutdown = api.live.shutdown.clone();
    let close = loop {
        tokio::select! {
            incoming = stream.next() => {
                let data = match incoming {
                    Some(Ok(WsMessage::Binary(data))) => data,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => continue,
                };
                match session.handle(&data).await {
                    Ok(replies) => {
                        for reply in replies {
                            if sink.send(WsMessage::Binary(reply.into())).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(why) => break Some((CLOSE_POLICY, why)),
                }
            }
            message = relayed.recv() => match message {
                Ok((from, _)) if from == id => {}
                Ok((_, message)) => {
                    if sink.send(WsMessage::Binary(message.to_vec().into())).await.is_err() {
                        break None;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    break Some((CLOSE_POLICY, "too far behind the document: reconnect".to_string()))
                }
                Err(RecvError::Closed) => break None,
            },
            _ = shutdown.wait() => break Some((1001, "the relay is stopping".to_string())),
        }
    };
    if let Some((code, reason)) = close {
        let _ = sink
            .send(WsMessage::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    session.leave();
    tracing::debug!(doc = %doc.name, %user, "document session ended");
}

/// One session's state.
struct Session<'a> {
    api: &'a DocsApi,
    doc: &'a Handle,
    id: u64,
    can_edit: bool,
    /// The reader was told once that its edits are dropped.
    denied: bool,
    /// Awareness clients this session announced, removed when it ends.
    clients: Vec<ClientID>,
}

impl Session<'_> {
    /// Handles one WebSocket message (one or more y-protocol messages);
    /// returns the replies, or why the session must close.
    async fn handle(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut decoder = DecoderV1::new(Cursor::new(data));
        let messages: Vec<Message> = MessageReader::new(&mut decoder)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not a y-protocol message: {e}"))?;
        let mut replies = Vec::new();
        for message in messages {
            match message {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    let update = self
                        .doc
                        .with(|state| state.doc().transact().encode_state_as_update_v1(&sv));
                    replies.push(Message::Sync(SyncMessage::SyncStep2(update)).encode_v1());
                }
                Message::Sync(SyncMessage::SyncStep2(update))
                | Message::Sync(SyncMessage::Update(update)) => {
                    if let Some(reply) = self.update(update).await? {
                        replies.push(reply);
                    }
                }
                Message::Awareness(update) => {
                    self.clients.extend(update.clients.keys().copied());
                    self.clients.sort_unstable();
                    self.clients.dedup();
                    let message: Arc<[u8]> = Message::Awareness(update.clone()).encode_v1().into();
                    self.doc
                        .with(|state| state.apply_update(update))
                        .map_err(|e| format!("not an awareness update: {e}"))?;
                    self.doc.relay(self.id, message);
                }
                Message::AwarenessQuery => {
                    if let Ok(update) = self.doc.with(|state| state.update()) {
                        replies.push(Message::Awareness(update).encode_v1());
                    }
                }
                Message::Auth(_) | Message::Custom(..) => {}
            }
        }
        Ok(replies)
    }

    /// A client's update: stored, applied and relayed when it may edit;
    /// dropped otherwise (the first time with a permission-denied reply).
    async fn update(&mut self, data: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        let update = Update::decode_v1(&data).map_err(|e| format!("not a Yjs update: {e}"))?;
        if update.is_empty() {
            return Ok(None);
        }
        if !self.can_edit {
            metrics::counter!("rowcast_doc_updates_refused_total").increment(1);
            if self.denied {
                return Ok(None);
            }
            self.denied = true;
            let reason = format!("read-only: not allowed to edit {}", self.doc.name);
            return Ok(Some(Message::Auth(Some(reason)).encode_v1()));
        }
        self.api
            .docs
            .store(&self.doc.name, &data)
            .await
            .map_err(|e| {
                tracing::warn!(doc = %self.doc.name, error = %e, "a document update could not be stored");
                "the update could not be stored: reconnect".to_string()
            })?;
        self.doc.apply(update).map_err(|e| e.to_string())?;
        metrics::counter!("rowcast_doc_updates_total").increment(1);
        let message = Message::Sync(SyncMessage::Update(data)).encode_v1();
        self.doc.relay(self.id, message.into());
        Ok(None)
    }

    /// Removes this session's awareness clients and tells the others.
    fn leave(&self) {
        if self.clients.is_empty() {
            return;
        }
        let update = self.doc.with(|state| {
            for client in &self.clients {
                state.remove_state(*client);
            }
            state.update_with_clients(self.clients.iter().copied())
        });
        if let Ok(update) = update {
            self.doc
                .relay(self.id, Message::Awareness(update).encode_v1().into());
        }
    }
}
