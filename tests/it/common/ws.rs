//! The relay's clients as tests use them: tokens signed with the test
//! [`SECRET`], the WebSocket client and raw HTTP from `rowcast_devkit`, and
//! HTTP requests that panic when the relay cannot be reached.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

// Each test binary uses its own share of these.
#[allow(unused_imports)]
pub use rowcast_devkit::http::metric;
#[allow(unused_imports)]
pub use rowcast_devkit::token::{now, sign};
#[allow(unused_imports)]
pub use rowcast_devkit::ws::*;

use super::SECRET;

/// An HS256 token for `sub`, valid for an hour, with extra claims.
pub fn token_with(sub: Value, extra: Value) -> String {
    rowcast_devkit::token::hs256(SECRET, sub, Duration::from_secs(3600), extra)
}

/// A user token.
pub fn token(sub: &str) -> String {
    token_with(json!(sub), json!({}))
}

/// A `role: "service"` token.
pub fn service_token() -> String {
    token_with(json!("backend"), json!({"role": "service"}))
}

/// A plain HTTP request; returns status and JSON body (or the body text).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    rowcast_devkit::http::json(addr, method, path, token, body)
        .await
        .expect("HTTP request")
}
