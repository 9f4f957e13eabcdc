//! `GET /v1/sse`: Server-Sent Events, for consumers that want no
//! WebSocket (server-side workers, edge functions, `curl`, a browser's
//! `EventSource`).
//!
//! `?rooms=a,b` names the rooms; the token comes from `?token=` or
//! `Authorization: Bearer`. Every room is authorized as `join` does, and a
//! refused one is a 403 before the stream starts. Each stored event is one
//! message, `id: <seq>`, `event: <name>`, `data: <the v1 event frame>`.
//!
//! An SSE stream has one position, the `Last-Event-ID` its client sends
//! back on reconnect, so the rooms are replayed as one sequence: the
//! stored events of all of them after that seq, merged in seq order, then
//! the live ones, each seq once (an event stored for two of the rooms is
//! one message, whose frame names one of them). Resuming after the
//! last id received therefore loses and repeats nothing, across rooms.
//!
//! Other messages carry no id, so they never move the position: `gap`
//! (events after the position were removed by retention; reload),
//! `left` (the rule now refuses a room), ephemeral client events, and a
//! final `error` when the token expires. Comments keep the stream alive
//! every 15 s, and proxies are told not to buffer it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::auth::{percent_decode, token_from};
use super::connection::reader::expiry;
use super::connection::{Authorize, Control, History, Outgoing};
use super::error::{ApiError, ErrorBody};
use super::lifecycle::{self, Open, Transport};
use super::Live;
use crate::db::DbError;
use crate::event::StoredEvent;
use crate::outbox::Span;
use crate::protocol::{frame, Code};
use crate::room::is_room_name;

/// Interval of keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events per replay page of one room.
const REPLAY_PAGE: i64 = 500;

/// What the query string asks for.
struct Request {
    /// The rooms, without repeats, in the order given.
    rooms: Vec<String>,
    /// Replay after this seq (`Last-Event-ID`, else `?since=`).
    since: Option<i64>,
}

/// Opens a stream (or refuses it with a JSON error before it starts).
///
/// Stored events of the rooms as they commit, one message each (`id` is the
/// seq); with a position (`Last-Event-ID`, else `since`), the rooms'
/// stored events after it first, merged in seq order. Every room is
/// authorized as `join` does, before the stream starts.
#[utoipa::path(
    get,
    path = "/v1/sse",
    tag = "sse",
    params(
        ("rooms" = String, Query, description = "The rooms, comma-separated (at most \
            `ROWCAST_MAX_ROOMS`, default 100).", example = "content_42",
            pattern = r"^[A-Za-z0-9_.:@-]{1,200}(,[A-Za-z0-9_.:@-]{1,200}){0,99}$"),
        ("since" = Option<i64>, Query, description = "Replay the stored events after \
            this seq, like `join` with `since`."),
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, description = "The id of \
            the last message received, which an `EventSource` sends when it reconnects; wins \
            over `since`."),
    ),
    responses(
        (status = 200, description = "The stream: one message per stored event, and `gap`, \
            `left`, ephemeral and final `error` messages without an id. A comment keeps it \
            alive every 15 s.", body = SseMessage, content_type = "text/event-stream",
            headers(
                ("Cache-Control" = String, description = "`no-cache`."),
                ("X-Accel-Buffering" = String,
                    description = "`no`: proxies must not buffer the stream."),
            )),
        (status = 400, description = "No rooms, an invalid room name, too many rooms, or a \
            `since`/`Last-Event-ID` that is not an integer.", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token.", body = ErrorBody),
        (status = 403, description = "A room the authorization rule refuses (named in the \
            message), or an `Origin` not in `SOCKET_CORS_ORIGIN`.", body = ErrorBody),
        (status = 429, description = "Too many connections: per IP per second \
            (`ROWCAST_CONNECT_RATE`), or open per user or per IP.", body = ErrorBody),
        (status = 500, description = "The database failed.", body = ErrorBody),
        (status = 503, description = "The relay is stopping, or at `ROWCAST_MAX_CONNECTIONS`.",
            body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub(super) async fn stream(
    State(state): State<Live>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match open(state, peer, query.as_deref(), &headers).await {
        Ok(stream) => {
            let mut response = Sse::new(stream)
                .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
                .into_response();
            response
                .headers_mut()
                .insert("x-accel-buffering", HeaderValue::from_static("no"));
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn open(
    state: Live,
    peer: SocketAddr,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>, ApiError> {
    let request = parse(query, headers, state.config.limits.max_rooms)?;
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let admission = lifecycle::admit(&state, peer.ip(), origin, token_from(headers, query))?;
    for room in &request.rooms {
        match state.reads.authorize(&admission.claims, room).await {
            Ok(true) => {}
            Ok(false) => {
                metrics::counter!("rowcast_joins_total", "result" => "forbidden").increment(1);
                return Err(ApiError::forbidden(format!(
                    "not allowed to join room {room}"
                )));
            }
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    let (open, rx) = Open::new(state.clone(), admission, Transport::Sse);
    let mut rooms = Vec::with_capacity(request.rooms.len());
    for room in &request.rooms {
        let name = state.hub.join(room, open.conn.queue.member());
        open.conn.add_room(name.clone());
        rooms.push(name);
        metrics::counter!("rowcast_joins_total", "result" => "ok").increment(1);
    }
    // Read after subscribing: the replay up to it and the live events
    // together miss nothing.
    let head = state.hub.head();
    let replay = request.since.map(|since| Replay::new(&rooms, since, head));
    let stream = SseStream {
        expires: expiry(open.conn.claims().exp),
        // A position past the head (a client of a reset database) still gets
        // what is stored from now on, as `join` does.
        last: request.since.map_or(0, |since| since.min(head)),
        state,
        open,
        rx,
        replay,
        ready: VecDeque::new(),
        finished: false,
    };
    Ok(futures_util::stream::unfold(
        stream,
        |mut stream| async move {
            let event = stream.next().await?;
            Some((Ok(event), stream))
        },
    ))
}

fn parse(query: Option<&str>, headers: &HeaderMap, max_rooms: usize) -> Result<Request, ApiError> {
    let mut rooms = Vec::new();
    let mut since = None;
    for (key, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        match key {
            "rooms" => {
                let value = percent_decode(value);
                for room in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    if !is_room_name(room) {
                        return Err(ApiError::bad_request(format!(
                            "invalid room name: {room:.64}"
                        )));
                    }
                    if !rooms.iter().any(|r| r == room) {
                        rooms.push(room.to_string());
                    }
                }
            }
            "since" => {
                since = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| ApiError::bad_request("since must be an integer (a seq)"))?,
                )
            }
            _ => {}
        }
    }
    if rooms.is_empty() {
        return Err(ApiError::bad_request("name at least one room: ?rooms=a,b"));
    }
    if rooms.len() > max_rooms {
        return Err(ApiError::bad_request(format!("at most {max_rooms} rooms")));
    }
    // The browser's resume position is newer than the URL's `since`.
    if let Some(id) = headers.get("last-event-id") {
        let id = id.to_str().ok().map(str::trim).unwrap_or("");
        if !id.is_empty() {
            since =
                Some(id.parse::<i64>().map_err(|_| {
                    ApiError::bad_request("Last-Event-ID must be an integer (a seq)")
                })?);
        }
    }
    Ok(Request {
        rooms,
        since: since.map(|s| s.max(0)),
    })
}

/// The replay of several rooms as one sequence.
struct Replay {
    /// One cursor per room.
    rooms: Vec<RoomCursor>,
    /// Replay up to this seq (the head when the stream opened).
    until: i64,
}

/// Where one room's replay stands.
struct RoomCursor {
    /// The room.
    room: Arc<str>,
    /// Last seq read.
    after: i64,
    /// Events read and not yet sent.
    read: VecDeque<Arc<StoredEvent>>,
    /// Whether everything up to `until` was read.
    done: bool,
}

/// One step of a replay.
enum Step {
    /// The next event, and the room whose frame it goes out with.
    Event(Arc<str>, Arc<StoredEvent>),
    /// Events of this room after the position are gone.
    Gap(Arc<str>),
}

impl Replay {
    fn new(rooms: &[Arc<str>], since: i64, until: i64) -> Self {
        Self {
            rooms: rooms
                .iter()
                .map(|room| RoomCursor {
                    room: room.clone(),
                    after: since,
                    read: VecDeque::new(),
                    done: since >= until,
                })
                .collect(),
            until,
        }
    }

    /// The next step; `None` once every room is replayed.
    async fn next<H: History>(&mut self, history: &H) -> Result<Option<Step>, DbError> {
        for cursor in &mut self.rooms {
            if cursor.read.is_empty() && !cursor.done {
                let page = history
                    .page(
                        &cursor.room,
                        Span::until(cursor.after, self.until, REPLAY_PAGE),
                    )
                    .await?;
                cursor.after = page.events.last().map_or(self.until, |e| e.seq);
                cursor.done = !page.more;
                cursor.read.extend(page.events);
                if page.gap {
                    return Ok(Some(Step::Gap(cursor.room.clone())));
                }
            }
        }
        let Some(first) = self
            .rooms
            .iter()
            .filter_map(|c| c.read.front().map(|e| (e.seq, c)))
            .min_by_key(|(seq, _)| *seq)
            .map(|(_, c)| c.room.clone())
        else {
            return Ok(None);
        };
        let mut next = None;
        for cursor in &mut self.rooms {
            if cursor.room == first {
                next = cursor.read.pop_front();
            }
        }
        let Some(event) = next else {
            return Ok(None);
        };
        // The same event stored for another of the rooms goes out once.
        for cursor in &mut self.rooms {
            if cursor.read.front().is_some_and(|e| e.seq == event.seq) {
                cursor.read.pop_front();
            }
        }
        Ok(Some(Step::Event(first, event)))
    }
}

/// One open stream.
struct SseStream {
    /// Everything shared.
    state: Live,
    /// The connection (leaves its rooms when the stream is dropped).
    open: Open,
    /// Its send queue.
    rx: mpsc::Receiver<Outgoing>,
    /// The replay still to send, if any.
    replay: Option<Replay>,
    /// Messages to send before anything else.
    ready: VecDeque<SseEvent>,
    /// The last seq sent (or the position the client gave).
    last: i64,
    /// When the token expires.
    expires: Instant,
    /// Nothing follows what is ready.
    finished: bool,
}

impl SseStream {
    /// The next message; `None` ends the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.finished || self.open.conn.queue.closer.code().is_some() {
                return None;
            }
            if Instant::now() >= self.expires {
                self.expired();
                continue;
            }
            if let Some(replay) = &mut self.replay {
                match replay.next(self.state.reads.as_ref()).await {
                    Ok(Some(Step::Event(room, event))) => self.stored(&room, &event),
                    Ok(Some(Step::Gap(room))) => self.ready.push_back(
                        SseEvent::default()
                            .event("gap")
                            .data(json!({"type": "gap", "room": &*room}).to_string()),
                    ),
                    Ok(None) => self.replay = None,
                    Err(e) => {
                        tracing::warn!(error = %e, "SSE replay failed");
                        self.fail(Code::Internal, "replay failed; reconnect to resume");
                    }
                }
                continue;
            }
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(item) => self.live(item),
                    None => return None,
                },
                _ = self.open.conn.queue.closer.closed() => return None,
                _ = tokio::time::sleep_until(self.expires) => self.expired(),
            }
        }
    }

    /// A stored event, once per seq.
    fn stored(&mut self, room: &str, event: &StoredEvent) {
        if event.seq > self.last {
            self.last = event.seq;
            self.ready.push_back(message(
                event.seq,
                &event.name,
                frame::stored_frame(room, event).as_str(),
            ));
        }
    }

    fn live(&mut self, item: Outgoing) {
        match item {
            Outgoing::Event(frame) if frame.seq > self.last => {
                self.last = frame.seq;
                self.ready
                    .push_back(message(frame.seq, &frame.event, frame.frame.as_str()));
            }
            Outgoing::Event(_) => {}
            Outgoing::Frame(frame) => {
                // Ephemeral events of the rooms (no seq, no id).
                let name = serde_json::from_str::<serde_json::Value>(frame.as_str())
                    .ok()
                    .and_then(|f| f["event"].as_str().map(str::to_string));
                if let Some(name) = name {
                    self.ready
                        .push_back(SseEvent::default().event(name).data(frame.as_str()));
                }
            }
            Outgoing::Control(control) => {
                if let Control::Left(room) = *control {
                    let left = crate::protocol::left(&room, "forbidden");
                    self.ready
                        .push_back(SseEvent::default().event("left").data(left.as_str()));
                }
            }
        }
    }

    fn expired(&mut self) {
        self.fail(Code::Unauthorized, "token expired");
    }

    /// Ends the stream with a final `error` message.
    fn fail(&mut self, code: Code, message: &str) {
        let error = json!({"type": "error", "error": {"code": code.as_str(), "message": message}});
        self.ready
            .push_back(SseEvent::default().event("error").data(error.to_string()));
        self.finished = true;
    }
}

/// One message of the stream, as an SSE client reads it.
// For the OpenAPI document only (before OpenAPI 3.2, the schema of an
// event stream is one message's): `message` and axum's `Event` write them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct SseMessage {
    /// The seq, on stored events only.
    #[schema(pattern = "^[0-9]+$", nullable = false)]
    id: Option<String>,
    /// The stored or ephemeral event's name, or `gap`, `left`, `error`.
    event: String,
    /// JSON: the WebSocket event frame for events; `{"type":"gap","room":..}`,
    /// `{"type":"left","room":..,"reason":..}` or
    /// `{"type":"error","error":{"code":..,"message":..}}` otherwise.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// A stored event's message.
fn message(seq: i64, name: &str, frame: &str) -> SseEvent {
    SseEvent::default()
        .id(itoa::Buffer::new().format(seq))
        .event(name)
        .data(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::connection::MemoryHistory;

    fn request(query: &str, last_event_id: Option<&str>) -> Result<Request, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert("last-event-id", HeaderValue::from_str(id).unwrap());
        }
        parse(Some(query), &headers, 3)
    }

    #[test]
    fn rooms_are_listed_once_in_order() {
        let parsed = request("rooms=content_1,user_2%2Ccontent_1&token=x", None).unwrap();
        assert_eq!(parsed.rooms, ["content_1", "user_2"]);
        assert_eq!(parsed.since, None);
    }

    #[test]
    fn last_event_id_wins_over_since() {
        assert_eq!(request("rooms=a&since=5", None).unwrap().since, Some(5));
        assert_eq!(
            request("rooms=a&since=5", Some("9")).unwrap().since,
            Some(9)
        );
        assert_eq!(request("rooms=a", Some(" ")).unwrap().since, None);
    }

    /// Every step of a replay: `(room, seq)`, with seq -1 for a gap.
    async fn replayed(history: &MemoryHistory, since: i64, until: i64) -> Vec<(String, i64)> {
        let rooms: Vec<Arc<str>> = history
            .0
            .iter()
            .map(|(name, ..)| Arc::from(*name))
            .collect();
        let mut replay = Replay::new(&rooms, since, until);
        let mut steps = Vec::new();
        while let Some(step) = replay.next(history).await.unwrap() {
            steps.push(match step {
                Step::Event(room, event) => (room.to_string(), event.seq),
                Step::Gap(room) => (room.to_string(), -1),
            });
        }
        steps
    }

    #[tokio::test]
    async fn replay_merges_rooms_in_seq_order_and_sends_a_shared_event_once() {
        let history = MemoryHistory(vec![
            ("content_1", vec![1, 3, 5, 7, 9], 0),
            ("user_2", vec![2, 3, 6, 9, 10], 0),
        ]);
        let steps = replayed(&history, 0, 9).await;
        let expected: Vec<(String, i64)> = [
            ("content_1", 1),
            ("user_2", 2),
            ("content_1", 3),
            ("content_1", 5),
            ("user_2", 6),
            ("content_1", 7),
            ("content_1", 9),
        ]
        .iter()
        .map(|(room, seq)| (room.to_string(), *seq))
        .collect();
        assert_eq!(steps, expected, "10 is after the head, 3 and 9 go once");
        assert_eq!(replayed(&history, 5, 9).await.len(), 3, "from a position");
        assert!(
            replayed(&history, 9, 9).await.is_empty(),
            "nothing to replay"
        );
    }

    #[tokio::test]
    async fn replay_crosses_pages_without_losing_or_repeating() {
        let evens: Vec<i64> = (1..=1200).map(|n| n * 2).collect();
        let odds: Vec<i64> = (0..700).map(|n| n * 2 + 1).collect();
        let history = MemoryHistory(vec![("a", evens, 0), ("b", odds, 0)]);
        let seqs: Vec<i64> = replayed(&history, 0, 2400)
            .await
            .into_iter()
            .map(|(_, seq)| seq)
            .collect();
        let mut expected: Vec<i64> = (1..=1400).collect();
        expected.extend((701..=1200).map(|n| n * 2));
        const { assert!(REPLAY_PAGE < 1200, "the rooms span several pages") };
        assert_eq!(seqs, expected);
    }

    #[tokio::test]
    async fn a_room_whose_events_are_gone_reports_a_gap_first() {
        let history = MemoryHistory(vec![("kept", vec![4, 8], 0), ("pruned", vec![6, 7], 6)]);
        let steps = replayed(&history, 2, 8).await;
        assert_eq!(steps[0], ("pruned".to_string(), -1), "{steps:?}");
        let seqs: Vec<i64> = steps[1..].iter().map(|(_, seq)| *seq).collect();
        assert_eq!(seqs, [4, 6, 7, 8]);
    }

    #[test]
    fn bad_requests_are_refused() {
        for (query, id) in [
            ("rooms=", None),
            ("token=x", None),
            ("rooms=a,b,c,d", None),
            ("rooms=bad%20room", None),
            ("rooms=a&since=x", None),
            ("rooms=a", Some("abc")),
        ] {
            let error = request(query, id).err().expect(query);
            assert_eq!(error.code, Code::BadRequest, "{query}");
        }
    }
}
