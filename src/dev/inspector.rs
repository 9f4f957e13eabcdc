//! The live inspector: a page served by `rowcast dev` on the relay's own
//! port, built with the JavaScript SDK. The page and its script (compiled
//! from `clients/js/inspector` by `npm run build`, committed so `cargo
//! build` needs no node) are embedded in the binary. `/dev/token` signs a
//! token for any user, and `/dev/deliveries` lists this node's webhook and
//! Web Push attempts: both exist only in `rowcast dev`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use rowcast::SinkJournal as Journal;
use serde::Deserialize;

/// The page.
const PAGE: &str = include_str!("inspector.html");
/// Its script, the SDK included.
const SCRIPT: &str = include_str!("inspector.js");
/// How long a token from `/dev/token` is valid.
const TOKEN_TTL: Duration = Duration::from_secs(86_400);

/// `GET /`, `GET /inspector.js`, `GET /dev/token?sub=N` (signing with the
/// relay's HS256 `secret`) and `GET /dev/deliveries?after=ID` (from the
/// sinks' `journal`).
pub fn routes(secret: String, journal: Arc<Journal>) -> axum::Router {
    let deliveries = get(move |Query(query): Query<DeliveriesQuery>| async move {
        (
            [(header::CACHE_CONTROL, "no-store")],
            Json(journal.after(query.after.unwrap_or(0))),
        )
    });
    axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/inspector.js", get(script))
        .route("/dev/token", get(token))
        .with_state(Arc::from(secret))
        .route("/dev/deliveries", deliveries)
}

/// The query of `/dev/deliveries`.
#[derive(Deserialize)]
struct DeliveriesQuery {
    /// Only attempts with a higher id (the last one the page holds).
    after: Option<u64>,
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// The query of `/dev/token`.
#[derive(Deserialize)]
struct TokenQuery {
    /// The user the token is for (the JWT's `sub`).
    sub: String,
}

async fn token(State(secret): State<Arc<str>>, Query(query): Query<TokenQuery>) -> Response {
    let sub = query.sub;
    let plain = !sub.is_empty()
        && sub.len() <= 64
        && sub
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        return (
            StatusCode::BAD_REQUEST,
            "sub: up to 64 letters, digits, `-` or `_`",
        )
            .into_response();
    }
    let token = rowcast_devkit::token::hs256(
        &secret,
        serde_json::Value::from(sub),
        TOKEN_TTL,
        serde_json::json!({}),
    );
    ([(header::CACHE_CONTROL, "no-store")], token).into_response()
}
