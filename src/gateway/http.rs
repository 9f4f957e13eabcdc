//! The HTTP API: room history, publishing, health, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::auth::{token_from, Claims};
use super::connection::Authorize;
use super::error::ApiError;
use super::Shared;
use crate::event::{is_event_name, Published};
use crate::ingest::PublishRequest;
use crate::protocol::{frame, Code};
use crate::room::is_room_name;

/// Most events one history request returns.
const MAX_PAGE: i64 = 1000;

/// Verifies the request's token (Bearer header or `?token=`).
fn claims(state: &Shared, headers: &HeaderMap, query: Option<&str>) -> Result<Claims, ApiError> {
    let token =
        token_from(headers, query).ok_or_else(|| ApiError::unauthorized("missing token"))?;
    state
        .verifier
        .verify(&token)
        .map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// `?after=&limit=` of the history endpoint.
#[derive(Deserialize)]
pub(super) struct Page {
    /// Events after this seq.
    after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
}

/// `GET /v1/rooms/{room}/events`: a room's stored events, authorized like a join.
pub(super) async fn history(
    State(state): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(page): Query<Page>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = claims(&state, &headers, query.as_deref())?;
    if !state
        .history_limits
        .allow(peer.ip(), &claims.sub, claims.service)
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            "too many history reads; slow down",
        ));
    }
    if !is_room_name(&room) {
        return Err(ApiError::bad_request("invalid room name"));
    }
    let allowed = state
        .database
        .authorize(&claims, &room)
        .await
        .map_err(ApiError::internal)?;
    if !allowed {
        return Err(ApiError::forbidden("not allowed to read this room"));
    }
    let after = page.after.unwrap_or(0).max(0);
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let page = state
        .database
        .room_page(&room, after, None, limit)
        .await
        .map_err(ApiError::internal)?;
    let mut body = String::from("{\"events\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&frame::stored_frame(&room, event));
    }
    body.push_str(&format!("],\"head\":{},\"gap\":{}}}", page.head, page.gap));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The body of `POST /v1/publish`.
#[derive(Deserialize)]
struct PublishBody {
    rooms: Vec<String>,
    event: String,
    #[serde(default)]
    data: Option<Value>,
}

/// `POST /v1/publish`: stores an event; needs a `role: "service"` token.
pub(super) async fn publish(
    State(state): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let claims = claims(&state, &headers, query.as_deref())?;
    if !claims.service {
        return Err(ApiError::forbidden(
            "publishing needs a token with role \"service\"",
        ));
    }
    let body: PublishBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("expected {\"rooms\":[..],\"event\":..,\"data\":{..}}")
    })?;
    if body.rooms.is_empty() || !body.rooms.iter().all(|r| is_room_name(r)) {
        return Err(ApiError::bad_request(
            "rooms must be a non-empty list of valid room names",
        ));
    }
    if !is_event_name(&body.event) {
        return Err(ApiError::bad_request("invalid event name"));
    }
    let data = match body.data {
        None => json!({}),
        Some(data @ Value::Object(_)) => data,
        Some(_) => return Err(ApiError::bad_request("data must be an object")),
    };
    let (reply, answer) = oneshot::channel();
    let request = PublishRequest {
        event: Published {
            rooms: body.rooms,
            event: body.event,
            data,
        },
        reply,
    };
    state
        .publisher
        .send(request)
        .await
        .map_err(|_| ApiError::internal("the relay is stopping"))?;
    let seq = tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .map_err(|_| ApiError::internal("publish timed out"))?
        .map_err(|_| ApiError::internal("publish was dropped"))?
        .map_err(ApiError::internal)?;
    Ok(Json(json!({"seq": seq})))
}

/// `GET /healthz`: the process is up.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers and capture runs; 503 otherwise.
pub(super) async fn readyz(State(state): State<Arc<Shared>>) -> Response {
    // Never wait behind requests for a session: a pool whose sessions are
    // all busy answering them is proof enough that the database answers.
    let pool = state.pool.status();
    let all_busy = pool.available == 0 && pool.size >= pool.max_size;
    let database = all_busy
        || tokio::time::timeout(Duration::from_secs(2), async {
            let client = state.pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        })
        .await
        .ok()
        .flatten()
        .is_some();
    let capture = state.capture_status.is_running();
    let ready = database && capture && !state.shutdown.is_triggered();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": database,
        "capture": capture,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
