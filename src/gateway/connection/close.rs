//! WebSocket close codes of protocol v1.

/// The server is shutting down: reconnect and rejoin with `since`.
pub const GOING_AWAY: u16 = 1001;
/// Something failed inside the relay: reconnect and rejoin with `since`.
pub const INTERNAL: u16 = 1011;
/// A frame was larger than the limit.
pub const TOO_BIG: u16 = 1009;
/// The token expired (or was revoked) without a refresh.
pub const TOKEN_EXPIRED: u16 = 4001;
/// The send queue overflowed: the client did not read fast enough.
pub const TOO_SLOW: u16 = 4008;
/// Rate limits were hit again and again.
pub const RATE_LIMITED: u16 = 4029;

/// The reason text sent with a close code.
pub fn reason(code: u16) -> &'static str {
    match code {
        GOING_AWAY => "server shutting down",
        INTERNAL => "internal error",
        TOO_BIG => "frame too large",
        TOKEN_EXPIRED => "token expired",
        TOO_SLOW => "too slow: send queue overflowed",
        RATE_LIMITED => "rate limit abused",
        _ => "",
    }
}
