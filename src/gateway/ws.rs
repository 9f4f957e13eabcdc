//! `GET /v1/ws`: refusals before the upgrade (origin 403, per-IP connect
//! rate 429, capacity 503, token 401, caps 429), then one connection run by
//! [`lifecycle::run`] over the socket's two halves.

use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::auth::token_from;
use super::lifecycle::{self, Transport};
use super::Live;

/// Bytes of the socket's read buffer (tungstenite allocates it up front;
/// its default of 128 KiB per connection would dominate idle memory).
pub(super) const READ_BUFFER: usize = 4096;
/// Bytes written before the socket buffer is flushed without a flush call.
const WRITE_BUFFER: usize = 16 * 1024;
/// Bytes the socket buffer may hold for a client that stopped reading;
/// past this, writes wait and the send queue fills.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// Checks an upgrade request and upgrades it.
pub(super) async fn upgrade(
    State(state): State<Live>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let token = token_from(&headers, query.as_deref());
    match lifecycle::admit(&state, peer.ip(), origin, token) {
        Ok(admission) => {
            let max = state.config.limits.max_frame_bytes;
            ws.read_buffer_size(READ_BUFFER)
                .write_buffer_size(WRITE_BUFFER)
                .max_write_buffer_size(MAX_WRITE_BUFFER)
                .max_message_size(max)
                .max_frame_size(max)
                .on_upgrade(move |socket| {
                    let (sink, stream) = socket.split();
                    lifecycle::run(state, admission, Transport::WebSocket, |_| sink, stream)
                })
        }
        Err(error) => error.into_response(),
    }
}
