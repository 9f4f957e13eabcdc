//! Event frames, serialized once: the part shared by every room of an event
//! (`tail`) is built once per event, and each room's frame is its room field
//! followed by that tail. Live delivery, replay and the HTTP history all use
//! these, so an event looks the same byte for byte whichever way it arrives.
//! [`EventFrame`] is the same frame as a type, for the HTTP API's OpenAPI
//! document.

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;

use crate::event::StoredEvent;

/// Everything of an event frame after its room:
/// `,"event":..,"seq":..,"at":..,"data":{..}[,"old":{..}][,"count":N]}`.
pub fn event_tail(event: &StoredEvent) -> String {
    let at = event.at.format(&Rfc3339).unwrap_or_default();
    let mut tail =
        String::with_capacity(64 + event.data.len() + event.old.as_ref().map_or(0, String::len));
    tail.push_str(",\"event\":");
    push_json_string(&mut tail, &event.name);
    tail.push_str(",\"seq\":");
    tail.push_str(itoa::Buffer::new().format(event.seq));
    tail.push_str(",\"at\":\"");
    tail.push_str(&at);
    tail.push_str("\",\"data\":");
    tail.push_str(&event.data);
    if let Some(old) = &event.old {
        tail.push_str(",\"old\":");
        tail.push_str(old);
    }
    if let Some(count) = event.count {
        tail.push_str(",\"count\":");
        tail.push_str(itoa::Buffer::new().format(count));
    }
    tail.push('}');
    tail
}

/// The frame of an event for one room.
pub fn event_frame(room: &str, tail: &str) -> Utf8Bytes {
    let mut frame = String::with_capacity(28 + room.len() + tail.len());
    frame.push_str("{\"type\":\"event\",\"room\":");
    push_json_string(&mut frame, room);
    frame.push_str(tail);
    Utf8Bytes::from(frame)
}

/// The frame of a stored event for one room, in one call.
pub fn stored_frame(room: &str, event: &StoredEvent) -> Utf8Bytes {
    event_frame(room, &event_tail(event))
}

/// A stored event, exactly as the WebSocket event frame carries it.
//
// What `event_frame` writes, as a type: the OpenAPI document describes the
// events of the HTTP history and of SSE with it, and a test reads written
// frames back into it (unknown fields refused), so the two cannot drift
// apart.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "a schema for the OpenAPI document and a parse check: no code reads its fields"
)]
pub struct EventFrame {
    /// Always `"event"`.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The room it was delivered to.
    pub room: String,
    /// The event name (`content-updated`, ...).
    pub event: String,
    /// Global, unique per event, increasing in commit order; the same event
    /// in two rooms has the same seq.
    pub seq: i64,
    /// Commit time, RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub at: String,
    /// The row's columns that its route exposes.
    pub data: Map<String, Value>,
    /// On updates: the previous values of the exposed columns that changed.
    #[serde(default)]
    #[schema(nullable = false)]
    pub old: Option<Map<String, Value>>,
    /// Events of a coalescing route: how many changes this one stands for.
    #[serde(default)]
    #[schema(nullable = false, minimum = 1)]
    pub count: Option<i32>,
}

/// The `type` of a stored event frame.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A stored event.
    Event,
}

fn push_json_string(out: &mut String, text: &str) {
    match serde_json::to_string(text) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use time::OffsetDateTime;

    use crate::event::Event;

    fn event(old: Option<&str>, count: Option<i32>) -> StoredEvent {
        StoredEvent {
            seq: 1251,
            event: Event {
                name: Arc::from("content-updated"),
                rooms: vec!["content_42".into(), "user_7".into()],
                data: r#"{"id":42,"title":"b"}"#.into(),
                old: old.map(str::to_string),
                at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
                count,
                coalesce: None,
            },
        }
    }

    #[test]
    fn frames_follow_the_protocol() {
        let frame = stored_frame("content_42", &event(Some(r#"{"title":"a"}"#), None));
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "type": "event", "room": "content_42", "event": "content-updated",
                "seq": 1251, "at": "2027-01-15T08:00:00Z",
                "data": {"id": 42, "title": "b"}, "old": {"title": "a"}
            })
        );
    }

    #[test]
    fn coalesced_events_carry_a_count_and_inserts_no_old() {
        let frame = stored_frame("content_42", &event(None, Some(3)));
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["count"], 3);
        assert!(value.get("old").is_none());
    }

    #[test]
    fn written_frames_read_back_as_the_typed_frame() {
        for (old, count) in [(Some(r#"{"title":"a"}"#), None), (None, Some(3))] {
            let frame = stored_frame("content_42", &event(old, count));
            let typed: EventFrame = serde_json::from_str(&frame).unwrap();
            assert_eq!((typed.seq, typed.count), (1251, count));
            assert_eq!(typed.old.is_some(), old.is_some());
        }
    }
}
