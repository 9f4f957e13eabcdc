//! Tokens for the relay's clients, signed the way a backend would sign
//! them: `rowcast dev`'s demo token, the tests' tokens, the bench's service
//! token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An HS256 token for `sub`, valid for `ttl`, with `extra` claims merged in.
pub fn hs256(secret: &str, sub: Value, ttl: Duration, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + ttl.as_secs()});
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        claims.extend(extra);
    }
    sign(&claims, Algorithm::HS256, secret)
}

/// Signs arbitrary claims with an HMAC secret.
pub fn sign(claims: &Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HMAC signing of JSON claims cannot fail")
}
