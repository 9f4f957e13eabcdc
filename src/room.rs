//! Room names: what a room may be called, and the one room every
//! connection is in.

/// The room every connection is in without asking (announcements).
pub const BROADCAST: &str = "broadcast";

/// A room name: 1 to 200 characters from `A-Z a-z 0-9 _ . : @ -`.
// The rule of `is_room_name` as a pattern, for the HTTP API's OpenAPI
// document.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9_.:@-]{1,200}$", example = "content_42")]
pub struct RoomName(pub String);

/// Whether a string can be a room name: 1 to 200 characters from
/// `A-Z a-z 0-9 _ . : @ -`. Anything else is refused before any query.
pub fn is_room_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_short_and_plain() {
        assert!(is_room_name(BROADCAST));
        assert!(is_room_name("content_42"));
        assert!(!is_room_name(""));
        assert!(!is_room_name("bad room"));
        assert!(!is_room_name(&"x".repeat(201)));
    }
}
