//! Room names: what a room may be called, and the one room every
//! connection is in.

/// The room every connection is in without asking (announcements).
pub const BROADCAST: &str = "broadcast";

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
