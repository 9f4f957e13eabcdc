//! Socket.IO events in: each client event becomes the protocol v1 frame it
//! stands for, and goes to the connection's reader like a WebSocket text
//! frame, so joins, replays, emits, limits and refusals are the same code
//! whichever way a client came in. The seed's own event names are aliases,
//! listed in one table in docs/protocol.md.

use serde_json::{Map, Value};

use crate::protocol::{Code, Refusal};

/// Rooms the seed's `join-<kind>` / `leave-<kind>` events name by id.
const ROOM_KINDS: [&str; 6] = ["content", "calendar", "media", "album", "diary", "user"];

/// The protocol v1 frame (without `ref`) for a Socket.IO event `event`
/// whose first argument is `data`.
///
/// - `join`, `leave`, `auth`, `emit` and `ping` take the frame's fields as
///   an object: `join` `{room, since}`.
/// - Any other name is a client event: `{room, data}` is an `emit` of that
///   name (the reader checks it against the allowlist).
/// - The seed's names (`join-content`, `send-message`, ...) are translated
///   as docs/protocol.md lists them.
pub fn translate(event: &str, data: Option<Value>) -> Result<Map<String, Value>, Refusal> {
    if let Some((verb, kind)) = event.split_once('-') {
        if (verb == "join" || verb == "leave") && ROOM_KINDS.contains(&kind) {
            return room_alias(verb, kind, data);
        }
    }
    match event {
        "join" | "leave" | "auth" | "emit" | "ping" => {
            let mut frame = match data {
                Some(Value::Object(fields)) => fields,
                None | Some(Value::Null) => Map::new(),
                Some(_) => {
                    return Err(Refusal::new(
                        Code::BadRequest,
                        format!("{event} takes an object"),
                    ))
                }
            };
            frame.insert("type".into(), event.into());
            Ok(frame)
        }
        "send-message" => send_message(data),
        _ => client_event(event, data),
    }
}

fn room_alias(verb: &str, kind: &str, data: Option<Value>) -> Result<Map<String, Value>, Refusal> {
    let (id, since) = match data {
        Some(Value::Object(mut fields)) => (fields.remove("id"), fields.remove("since")),
        other => (other, None),
    };
    let id = id.as_ref().and_then(id_text).ok_or_else(|| {
        Refusal::new(
            Code::BadRequest,
            format!("{verb}-{kind} takes an id (a number or a string)"),
        )
    })?;
    let mut frame = Map::new();
    frame.insert("type".into(), verb.into());
    frame.insert("room".into(), format!("{kind}_{id}").into());
    if let Some(since) = since.filter(|s| !s.is_null()) {
        frame.insert("since".into(), since);
    }
    Ok(frame)
}

fn send_message(data: Option<Value>) -> Result<Map<String, Value>, Refusal> {
    let refuse = || {
        Refusal::new(
            Code::BadRequest,
            "send-message takes {\"recipientId\": <user id>, \"message\": <text>}",
        )
    };
    let Some(Value::Object(mut fields)) = data else {
        return Err(refuse());
    };
    let recipient = ["recipientId", "userId"]
        .iter()
        .find_map(|key| fields.get(*key).and_then(id_text))
        .ok_or_else(refuse)?;
    let text = ["message", "text"]
        .iter()
        .find_map(|key| fields.remove(*key))
        .filter(Value::is_string)
        .ok_or_else(refuse)?;
    let mut payload = Map::new();
    payload.insert("text".into(), text);
    let mut frame = Map::new();
    frame.insert("type".into(), "emit".into());
    frame.insert("room".into(), format!("user_{recipient}").into());
    frame.insert("event".into(), "message".into());
    frame.insert("data".into(), payload.into());
    Ok(frame)
}

fn client_event(event: &str, data: Option<Value>) -> Result<Map<String, Value>, Refusal> {
    let Some(Value::Object(mut fields)) = data else {
        return Err(Refusal::new(
            Code::BadRequest,
            format!("{event} takes {{\"room\": .., \"data\": {{..}}}}"),
        ));
    };
    let mut frame = Map::new();
    frame.insert("type".into(), "emit".into());
    frame.insert("event".into(), event.into());
    if let Some(room) = fields.remove("room") {
        frame.insert("room".into(), room);
    }
    frame.insert(
        "data".into(),
        fields.remove("data").unwrap_or_else(|| Map::new().into()),
    );
    Ok(frame)
}

/// An id as it goes into a room name: a string, or an integer.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(event: &str, data: Value) -> Value {
        Value::Object(translate(event, Some(data)).expect("translates"))
    }

    #[test]
    fn protocol_requests_keep_their_fields() {
        assert_eq!(
            frame("join", json!({"room": "content_1", "since": 5})),
            json!({"type": "join", "room": "content_1", "since": 5})
        );
        assert_eq!(
            frame("leave", json!({"room": "content_1"})),
            json!({"type": "leave", "room": "content_1"})
        );
        assert_eq!(translate("ping", None).unwrap()["type"], "ping");
        assert_eq!(
            translate("join", Some(json!("content_1")))
                .unwrap_err()
                .code,
            Code::BadRequest
        );
    }

    #[test]
    fn client_events_are_emits_of_their_name() {
        assert_eq!(
            frame(
                "user-typing",
                json!({"room": "content_1", "data": {"typing": true}})
            ),
            json!({"type": "emit", "event": "user-typing", "room": "content_1", "data": {"typing": true}})
        );
        assert_eq!(
            translate("user-typing", Some(json!(true)))
                .unwrap_err()
                .code,
            Code::BadRequest
        );
    }

    #[test]
    fn the_seeds_joins_name_rooms_by_id() {
        assert_eq!(
            frame("join-content", json!(42)),
            json!({"type": "join", "room": "content_42"})
        );
        assert_eq!(
            frame("join-user", json!("7")),
            json!({"type": "join", "room": "user_7"})
        );
        assert_eq!(
            frame("join-album", json!({"id": 3, "since": 10})),
            json!({"type": "join", "room": "album_3", "since": 10})
        );
        assert_eq!(
            frame("leave-diary", json!({"id": 9})),
            json!({"type": "leave", "room": "diary_9"})
        );
        assert_eq!(
            translate("join-content", Some(json!(1.5)))
                .unwrap_err()
                .code,
            Code::BadRequest
        );
        assert_eq!(
            translate("join-content", None).unwrap_err().code,
            Code::BadRequest
        );
    }

    #[test]
    fn an_unknown_kind_is_a_client_event_not_an_alias() {
        assert_eq!(
            frame("join-planet", json!({"room": "x", "data": {}}))["type"],
            "emit"
        );
    }

    #[test]
    fn send_message_is_an_emit_to_the_recipients_room() {
        let expected = json!({"type": "emit", "room": "user_7", "event": "message", "data": {"text": "Hello!"}});
        assert_eq!(
            frame(
                "send-message",
                json!({"recipientId": 7, "message": "Hello!"})
            ),
            expected
        );
        assert_eq!(
            frame("send-message", json!({"userId": "7", "text": "Hello!"})),
            expected
        );
        assert_eq!(
            translate("send-message", Some(json!({"recipientId": 7})))
                .unwrap_err()
                .code,
            Code::BadRequest
        );
    }
}
