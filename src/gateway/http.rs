//! The HTTP API: room history, publishing, health, readiness and metrics.
//! Each handler's `#[utoipa::path]` and the types of its bodies make up
//! its part of the OpenAPI document (`super::openapi`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRef, Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use utoipa::{IntoParams, ToSchema};

use super::auth::{token_from, Claims, Verifier};
use super::connection::Authorize;
use super::error::{ApiError, ErrorBody};
use super::limits::HistoryLimits;
use super::readiness::ReadinessCheck;
use super::reads::RoomReads;
use super::GatewayState;
use crate::event::{is_event_name, Published};
use crate::ingest::{PublishError, PublishRequest};
use crate::outbox::{RoomPage, Span};
use crate::protocol::frame::{self, EventFrame};
use crate::protocol::Code;
use crate::room::{is_room_name, RoomName};
use crate::shutdown::Shutdown;

/// Most events one history request returns.
const MAX_PAGE: i64 = 1000;

/// What `GET /v1/rooms/{room}/events` uses of the gateway's state.
#[derive(Clone)]
pub(super) struct HistoryApi {
    verifier: Arc<Verifier>,
    reads: Arc<RoomReads>,
    limits: Arc<HistoryLimits>,
}

impl FromRef<Arc<GatewayState>> for HistoryApi {
    fn from_ref(state: &Arc<GatewayState>) -> Self {
        Self {
            verifier: state.live.verifier.clone(),
            reads: state.live.reads.clone(),
            limits: state.history_limits.clone(),
        }
    }
}

/// What `POST /v1/publish` uses: the verifier and the single writer.
#[derive(Clone)]
pub(super) struct PublishApi {
    verifier: Arc<Verifier>,
    publisher: mpsc::Sender<PublishRequest>,
}

impl FromRef<Arc<GatewayState>> for PublishApi {
    fn from_ref(state: &Arc<GatewayState>) -> Self {
        Self {
            verifier: state.live.verifier.clone(),
            publisher: state.publisher.clone(),
        }
    }
}

/// What `/readyz` looks at.
#[derive(Clone)]
pub(super) struct ReadinessProbe {
    check: Arc<ReadinessCheck>,
    shutdown: Shutdown,
}

impl FromRef<Arc<GatewayState>> for ReadinessProbe {
    fn from_ref(state: &Arc<GatewayState>) -> Self {
        Self {
            check: state.readiness.clone(),
            shutdown: state.live.shutdown.clone(),
        }
    }
}

/// What `/metrics` renders.
#[derive(Clone)]
pub(super) struct Metrics(PrometheusHandle);

impl FromRef<Arc<GatewayState>> for Metrics {
    fn from_ref(state: &Arc<GatewayState>) -> Self {
        Self(state.metrics.clone())
    }
}

/// Verifies the request's token (Bearer header or `?token=`).
pub(super) fn claims(
    verifier: &Verifier,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Claims, ApiError> {
    let token =
        token_from(headers, query).ok_or_else(|| ApiError::unauthorized("missing token"))?;
    verifier
        .verify(&token)
        .map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// `?after=&limit=` of the history endpoint.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    /// Events with a seq above this one (default 0; a negative value counts
    /// as 0). Page on with the last seq of the previous page.
    after: Option<i64>,
    /// At most this many events (default 100; below 1 counts as 1, above
    /// 1000 as 1000). A page also stops after about 1 MiB of `data`/`old`,
    /// with at least one event.
    limit: Option<i64>,
}

/// A page of a room's history: the body [`history_body`] writes.
///
/// The body is written directly from the frames (no per-event parse), so
/// this type only describes it, for the OpenAPI document; a test reads a
/// written body back into it, with unknown fields refused.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Deserialize), serde(deny_unknown_fields))]
#[allow(dead_code)]
pub(super) struct HistoryPage {
    /// The events, in seq order, each shaped like the WebSocket event frame.
    events: Vec<EventFrame>,
    /// The latest seq stored (of any room).
    head: i64,
    /// `after` is older than what is retained: the page starts at the oldest
    /// retained event, and the client must reload its state.
    gap: bool,
}

/// The JSON body of a history page: the frames as the frame writer made
/// them, copied without re-encoding.
fn history_body(room: &str, page: &RoomPage) -> String {
    let frames: usize = page.events.iter().map(|e| 96 + e.data.len()).sum();
    let mut body = String::with_capacity(48 + frames);
    body.push_str("{\"events\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&frame::stored_frame(room, event));
    }
    body.push_str("],\"head\":");
    body.push_str(itoa::Buffer::new().format(page.head));
    body.push_str(if page.gap {
        ",\"gap\":true}"
    } else {
        ",\"gap\":false}"
    });
    body
}

/// A room's stored events, authorized like a `join`.
///
/// The token's user must be allowed to join the room (a service token may
/// read any room). Reads are rate-limited per IP and per user.
#[utoipa::path(
    get,
    path = "/v1/rooms/{room}/events",
    tag = "history",
    params(
        ("room" = RoomName, Path, description = "The room."),
        Page,
    ),
    responses(
        (status = 200, description = "The room's events after `after`.", body = HistoryPage),
        (status = 400, description = "Invalid room name, or `after`/`limit` not an integer.",
            body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token.", body = ErrorBody),
        (status = 403, description = "The authorization rule refuses this room.", body = ErrorBody),
        (status = 429, description = "Too many history reads from this IP or user \
            (`ROWCAST_HISTORY_RATE`).", body = ErrorBody),
        (status = 500, description = "The database failed.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub(super) async fn history(
    State(api): State<HistoryApi>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    room: Result<Path<String>, PathRejection>,
    page: Result<Query<Page>, QueryRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = claims(&api.verifier, &headers, query.as_deref())?;
    if !api.limits.allow(peer.ip(), &claims.sub, claims.service) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            "too many history reads; slow down",
        ));
    }
    let Ok(Path(room)) = room else {
        return Err(ApiError::bad_request("invalid room name"));
    };
    let Query(page) =
        page.map_err(|_| ApiError::bad_request("`after` and `limit` must be integers (64-bit)"))?;
    if !is_room_name(&room) {
        return Err(ApiError::bad_request("invalid room name"));
    }
    let allowed = api
        .reads
        .authorize(&claims, &room)
        .await
        .map_err(ApiError::internal)?;
    if !allowed {
        return Err(ApiError::forbidden("not allowed to read this room"));
    }
    let after = page.after.unwrap_or(0).max(0);
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let page = api
        .reads
        .room_page(&room, Span::to_head(after, limit))
        .await
        .map_err(ApiError::internal)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        history_body(&room, &page),
    )
        .into_response())
}

/// The body of `POST /v1/publish`.
#[derive(Deserialize, ToSchema)]
pub(super) struct PublishBody {
    /// The rooms to deliver it to (at least one).
    #[schema(min_items = 1)]
    rooms: Vec<RoomName>,
    /// The event name: 1 to 100 characters from `A-Z a-z 0-9 _ . : -`.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,100}$", example = "announcement")]
    event: String,
    /// The payload, an object; absent or `null` stores `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// What `POST /v1/publish` answers: the stored event's seq.
#[derive(Serialize, ToSchema)]
pub(super) struct PublishReceipt {
    /// The seq the event was stored under.
    seq: i64,
}

/// Stores an event for the given rooms, delivered like any stored event.
///
/// Needs a token with `role: "service"`; a user token gets 403.
#[utoipa::path(
    post,
    path = "/v1/publish",
    tag = "publish",
    request_body = PublishBody,
    responses(
        (status = 200, description = "Stored.", body = PublishReceipt),
        (status = 400, description = "Not JSON, or not \
            `{\"rooms\":[..],\"event\":..,\"data\":{..}}` with valid names.", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token.", body = ErrorBody),
        (status = 403, description = "The token lacks `role: \"service\"`.", body = ErrorBody),
        (status = 413, description = "The body is larger than 256 KiB.", body = ErrorBody),
        (status = 500, description = "The event could not be stored.", body = ErrorBody),
        (status = 503, description = "Queued for the leader node, which did not store it \
            within 10 s (none may be leading at the moment); it is delivered once one does.",
            body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub(super) async fn publish(
    State(api): State<PublishApi>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishReceipt>, ApiError> {
    let claims = claims(&api.verifier, &headers, query.as_deref())?;
    if !claims.service {
        return Err(ApiError::forbidden(
            "publishing needs a token with role \"service\"",
        ));
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::TooLarge,
            "the body is larger than 256 KiB",
        ),
        _ => ApiError::bad_request("the body could not be read"),
    })?;
    let body: PublishBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("expected {\"rooms\":[..],\"event\":..,\"data\":{..}}")
    })?;
    let rooms: Vec<String> = body.rooms.into_iter().map(|room| room.0).collect();
    if rooms.is_empty() || !rooms.iter().all(|r| is_room_name(r)) {
        return Err(ApiError::bad_request(
            "rooms must be a non-empty list of valid room names",
        ));
    }
    if !is_event_name(&body.event) {
        return Err(ApiError::bad_request("invalid event name"));
    }
    let data = match body.data {
        None => Value::Object(Map::new()),
        Some(data @ Value::Object(_)) => data,
        Some(_) => return Err(ApiError::bad_request("data must be an object")),
    };
    let (reply, answer) = oneshot::channel();
    let request = PublishRequest {
        event: Published {
            rooms,
            event: body.event,
            data,
            reply: None,
        },
        reply,
    };
    api.publisher
        .send(request)
        .await
        .map_err(|_| ApiError::internal("the relay is stopping"))?;
    let seq = tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .map_err(|_| ApiError::internal("publish timed out"))?
        .map_err(|_| ApiError::internal("publish was dropped"))?
        .map_err(|e| match e {
            PublishError::InvalidRooms => ApiError::bad_request("invalid rooms"),
            PublishError::NotStored => ApiError::internal(e),
            PublishError::Unconfirmed => ApiError::unavailable(e.to_string()),
        })?;
    Ok(Json(PublishReceipt { seq }))
}

/// What `GET /healthz` answers.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// Always `ok`.
    status: Liveness,
}

/// The process is up.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Liveness {
    /// It answers.
    Ok,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = Health)),
)]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: Liveness::Ok,
    })
}

/// What `GET /readyz` answers, with 200 or 503.
#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    /// `ready` when all of the below hold and the relay is not stopping.
    status: ReadyStatus,
    /// The database answers, as a primary.
    database: bool,
    /// Capture runs.
    capture: bool,
}

/// Whether the relay serves.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ReadyStatus {
    /// It serves.
    Ready,
    /// The database is unreachable, capture is down, or it is stopping.
    Unavailable,
}

/// Whether the database answers and capture runs.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "The database is unreachable, capture is down, or the \
            relay is stopping.", body = Readiness),
    ),
)]
pub(super) async fn readyz(State(probe): State<ReadinessProbe>) -> Response {
    let database = probe.check.database().await;
    let capture = probe.check.capture();
    let ready = database && capture && !probe.shutdown.is_triggered();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready {
            ReadyStatus::Ready
        } else {
            ReadyStatus::Unavailable
        },
        database,
        capture,
    };
    (status, Json(body)).into_response()
}

/// The relay's metrics, in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String,
            content_type = "text/plain"),
    ),
)]
pub(super) async fn metrics(State(Metrics(metrics)): State<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, StoredEvent};

    fn stored(seq: i64, old: Option<&str>, count: Option<i32>) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            seq,
            event: Event {
                name: Arc::from("content-updated"),
                rooms: vec!["content_42".into()],
                data: r#"{"id":42,"title":"b \"quoted\""}"#.into(),
                old: old.map(str::to_string),
                at: time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
                count,
                coalesce: None,
            },
        })
    }

    #[test]
    fn the_history_body_is_what_the_document_describes() {
        for gap in [false, true] {
            let page = RoomPage {
                events: vec![
                    stored(7, Some(r#"{"title":"a"}"#), None),
                    stored(9, None, Some(3)),
                ],
                head: 12,
                gap,
                more: false,
            };
            let body = history_body("content_42", &page);
            let typed: HistoryPage = serde_json::from_str(&body).expect(&body);
            assert_eq!(typed.events.len(), 2);
            assert_eq!((typed.events[0].seq, typed.events[1].count), (7, Some(3)));
            assert_eq!((typed.head, typed.gap), (12, gap));
        }
        let empty = RoomPage {
            events: vec![],
            head: 0,
            gap: false,
            more: false,
        };
        assert_eq!(
            history_body("content_42", &empty),
            r#"{"events":[],"head":0,"gap":false}"#
        );
    }
}
