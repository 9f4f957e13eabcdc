//! The client protocol v1, every frame of it: parsing client frames into a
//! typed [`Request`], and building the server's `welcome`, `reply`, `pong`
//! and ephemeral event frames here, and stored event frames in [`frame`]
//! (built once per room and shared by every member).

pub mod frame;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Error codes of `reply` frames and HTTP error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The frame or request is malformed.
    BadRequest,
    /// The token is missing, invalid or not for this user.
    Unauthorized,
    /// The authorization rule refused, or the action is not allowed.
    Forbidden,
    /// Nothing there.
    NotFound,
    /// A rate limit was hit.
    RateLimited,
    /// Too large.
    TooLarge,
    /// Something failed inside the relay.
    Internal,
}

impl Code {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::Internal => "internal",
        }
    }
}

/// A refused frame: its code and a message for the client.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// Protocol error code.
    pub code: Code,
    /// Human-readable, never containing a secret.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A parsed client frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Join a room, replaying from `since` when given.
    Join {
        /// The room.
        room: String,
        /// Last seq the client has.
        since: Option<i64>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
    /// An ephemeral event for the other members of a room.
    Emit {
        /// The room.
        room: String,
        /// The event name (must be on the allowlist).
        event: String,
        /// The payload.
        data: Map<String, Value>,
    },
    /// Replace the connection's token.
    Auth {
        /// The new token.
        token: String,
    },
    /// Application-level heartbeat.
    Ping,
}

/// A client frame: its `ref` (echoed in the reply) and what it asks.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Echoed in the reply, when given.
    pub reference: Option<Value>,
    /// The request, or why it cannot be served.
    pub request: Result<Request, Refusal>,
}

#[derive(Deserialize)]
struct JoinFields {
    room: String,
    since: Option<i64>,
}

#[derive(Deserialize)]
struct RoomField {
    room: String,
}

#[derive(Deserialize)]
struct EmitFields {
    room: String,
    event: String,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct AuthFields {
    token: String,
}

/// Parses one text frame. Anything malformed becomes a `bad_request`
/// refusal that keeps the `ref` when one could be read.
pub fn parse(text: &str) -> Frame {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => return refused(None, "not a JSON object"),
    };
    let Value::Object(object) = value else {
        return refused(None, "not a JSON object");
    };
    let reference = object.get("ref").cloned();
    if let Some(r) = &reference {
        if !r.is_string() && !r.is_number() {
            return refused(None, "`ref` must be a string");
        }
    }
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return refused(reference, "`type` must be a string"),
        None => return refused(reference, "missing `type`"),
    };
    let object = Value::Object(object);
    let request = match kind.as_str() {
        "join" => fields::<JoinFields>(object).map(|f| Request::Join {
            room: f.room,
            since: f.since,
        }),
        "leave" => fields::<RoomField>(object).map(|f| Request::Leave { room: f.room }),
        "emit" => fields::<EmitFields>(object).and_then(|f| match f.data {
            None => Ok(Request::Emit {
                room: f.room,
                event: f.event,
                data: Map::new(),
            }),
            Some(Value::Object(data)) => Ok(Request::Emit {
                room: f.room,
                event: f.event,
                data,
            }),
            Some(_) => Err(Refusal::new(Code::BadRequest, "`data` must be an object")),
        }),
        "auth" => fields::<AuthFields>(object).map(|f| Request::Auth { token: f.token }),
        "ping" => Ok(Request::Ping),
        other => Err(Refusal::new(
            Code::BadRequest,
            format!(
                "unknown type `{}`",
                other.chars().take(40).collect::<String>()
            ),
        )),
    };
    Frame { reference, request }
}

fn fields<T: for<'de> Deserialize<'de>>(object: Value) -> Result<T, Refusal> {
    serde_json::from_value(object).map_err(|e| {
        let message = e.to_string();
        let message = message.split(" at line").next().unwrap_or("invalid fields");
        Refusal::new(Code::BadRequest, message.to_string())
    })
}

fn refused(reference: Option<Value>, message: &str) -> Frame {
    Frame {
        reference,
        request: Err(Refusal::new(Code::BadRequest, message)),
    }
}

/// `{"type":"welcome",...}`.
pub fn welcome(conn: u64, user: &str, head: i64, heartbeat_ms: u64) -> Utf8Bytes {
    text(json!({
        "type": "welcome",
        "conn": conn.to_string(),
        "user": user,
        "head": head,
        "heartbeat_ms": heartbeat_ms,
    }))
}

/// A successful reply with extra fields.
pub fn ok(reference: Option<&Value>, fields: Map<String, Value>) -> Utf8Bytes {
    text(Value::Object(ok_object(reference, fields)))
}

/// The object of a successful reply.
pub fn ok_object(reference: Option<&Value>, fields: Map<String, Value>) -> Map<String, Value> {
    let mut reply = Map::new();
    reply.insert("type".into(), "reply".into());
    if let Some(r) = reference {
        reply.insert("ref".into(), r.clone());
    }
    reply.insert("ok".into(), true.into());
    reply.extend(fields);
    reply
}

/// An error reply.
pub fn error(reference: Option<&Value>, refusal: &Refusal) -> Utf8Bytes {
    let mut reply = Map::new();
    reply.insert("type".into(), "reply".into());
    if let Some(r) = reference {
        reply.insert("ref".into(), r.clone());
    }
    reply.insert("ok".into(), false.into());
    reply.insert(
        "error".into(),
        json!({"code": refusal.code.as_str(), "message": refusal.message}),
    );
    text(Value::Object(reply))
}

/// `{"type":"pong"}`.
pub fn pong(reference: Option<&Value>) -> Utf8Bytes {
    match reference {
        Some(r) => text(json!({"type": "pong", "ref": r})),
        None => text(json!({"type": "pong"})),
    }
}

/// `{"type":"left","room":..,"reason":..}` (protocol 1.1): the server
/// removed the member from the room; nothing more of it follows.
pub fn left(room: &str, reason: &str) -> Utf8Bytes {
    text(json!({"type": "left", "room": room, "reason": reason}))
}

/// An ephemeral event from a client (no seq).
pub fn ephemeral(
    room: &str,
    event: &str,
    from: &str,
    data: &Map<String, Value>,
    count: u32,
) -> Utf8Bytes {
    let mut frame =
        json!({"type": "event", "room": room, "event": event, "from": from, "data": data});
    if count > 1 {
        frame["count"] = count.into();
    }
    text(frame)
}

/// Serializes a JSON value as a text frame.
pub fn text(value: Value) -> Utf8Bytes {
    Utf8Bytes::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse() {
        let f = parse(r#"{"type":"join","room":"content_1","since":12,"ref":"a"}"#);
        assert_eq!(f.reference, Some(json!("a")));
        assert_eq!(
            f.request,
            Ok(Request::Join {
                room: "content_1".into(),
                since: Some(12)
            })
        );
        assert_eq!(parse(r#"{"type":"ping"}"#).request, Ok(Request::Ping));
        assert!(matches!(
            parse(r#"{"type":"emit","room":"r","event":"user-typing","data":{"x":1}}"#).request,
            Ok(Request::Emit { .. })
        ));
    }

    #[test]
    fn bad_frames_are_bad_requests_keeping_the_ref() {
        for text in [
            "garbage",
            "[1,2]",
            r#"{"ref":"x"}"#,
            r#"{"type":"fly","ref":"x"}"#,
            r#"{"type":"join","ref":"x"}"#,
            r#"{"type":"join","room":5,"ref":"x"}"#,
            r#"{"type":"join","room":"r","since":"yesterday","ref":"x"}"#,
            r#"{"type":"emit","room":"r","event":"e","data":[1],"ref":"x"}"#,
            r#"{"type":7}"#,
        ] {
            let frame = parse(text);
            let refusal = frame.request.expect_err(text);
            assert_eq!(refusal.code, Code::BadRequest, "{text}");
        }
        assert_eq!(
            parse(r#"{"type":"fly","ref":"x"}"#).reference,
            Some(json!("x"))
        );
    }

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in [
            Code::BadRequest,
            Code::Unauthorized,
            Code::Forbidden,
            Code::NotFound,
            Code::RateLimited,
            Code::TooLarge,
            Code::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn replies_echo_the_ref() {
        let reply: Value = serde_json::from_str(&ok(Some(&json!("r1")), Map::new())).unwrap();
        assert_eq!(reply, json!({"type": "reply", "ref": "r1", "ok": true}));
        let reply: Value =
            serde_json::from_str(&error(None, &Refusal::new(Code::Forbidden, "no"))).unwrap();
        assert_eq!(
            reply,
            json!({"type": "reply", "ok": false, "error": {"code": "forbidden", "message": "no"}})
        );
    }
}
