//! Rate limits (governor's GCRA limiters): per connection for frames, joins
//! and emits, per client IP for new connections, and the strike count that
//! turns repeated abuse into a 4029 close.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Limits;

fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.saturating_mul(2).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// Which limit was hit, for metrics.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Any frame.
    Frame,
    /// A join.
    Join,
    /// An emit.
    Emit,
    /// A new connection.
    Connect,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Frame => "frame",
            Self::Join => "join",
            Self::Emit => "emit",
            Self::Connect => "connect",
        }
    }
}

/// Counts a rate-limit hit.
pub fn record(kind: Kind) {
    metrics::counter!("rowcast_rate_limited_total", "kind" => kind.label()).increment(1);
}

/// One connection's limiters.
pub struct ConnectionLimits {
    /// Every client frame.
    frames: DefaultDirectRateLimiter,
    /// Joins.
    joins: DefaultDirectRateLimiter,
    /// Emits.
    emits: DefaultDirectRateLimiter,
    /// When recent hits happened.
    strikes: VecDeque<Instant>,
    /// Hits within [`STRIKE_WINDOW`] that close the connection.
    max_strikes: usize,
}

/// The window in which strikes count.
const STRIKE_WINDOW: Duration = Duration::from_secs(60);

impl ConnectionLimits {
    /// Limiters for a new connection.
    pub fn new(limits: &Limits) -> Self {
        Self {
            frames: RateLimiter::direct(quota(limits.frames_per_sec)),
            joins: RateLimiter::direct(quota(limits.joins_per_sec)),
            emits: RateLimiter::direct(quota(limits.emits_per_sec)),
            strikes: VecDeque::new(),
            max_strikes: limits.abuse_strikes as usize,
        }
    }

    /// Whether one more of `kind` is allowed now.
    pub fn allow(&mut self, kind: Kind) -> bool {
        let limiter = match kind {
            Kind::Frame => &self.frames,
            Kind::Join => &self.joins,
            Kind::Emit => &self.emits,
            Kind::Connect => return true,
        };
        let allowed = limiter.check().is_ok();
        if !allowed {
            record(kind);
        }
        allowed
    }

    /// Records a refused frame; true when the connection has abused its
    /// limits and must be closed.
    pub fn strike(&mut self) -> bool {
        let now = Instant::now();
        while self
            .strikes
            .front()
            .is_some_and(|t| now.duration_since(*t) > STRIKE_WINDOW)
        {
            self.strikes.pop_front();
        }
        self.strikes.push_back(now);
        self.strikes.len() >= self.max_strikes
    }
}

/// New connections per client IP.
pub struct ConnectLimits {
    /// Keyed by IP.
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl ConnectLimits {
    /// Limits from the configuration.
    pub fn new(limits: &Limits) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota(limits.connects_per_sec)),
        }
    }

    /// Whether this IP may open a connection now.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let allowed = self.limiter.check_key(&ip).is_ok();
        if !allowed {
            record(Kind::Connect);
        }
        allowed
    }

    /// Forgets IPs that have been quiet, so the table stays small.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            send_queue: 8,
            max_frame_bytes: 1024,
            frames_per_sec: 5,
            joins_per_sec: 1,
            emits_per_sec: 1,
            connects_per_sec: 2,
            abuse_strikes: 3,
            max_rooms: 10,
            max_connections: 10,
            typing_throttle: Duration::from_millis(100),
            auth_cache_ttl: Duration::from_secs(1),
            auth_recheck: Duration::from_secs(60),
        }
    }

    #[test]
    fn bursts_pass_then_frames_are_limited() {
        let mut l = ConnectionLimits::new(&limits());
        let allowed = (0..30).filter(|_| l.allow(Kind::Frame)).count();
        assert!(
            (10..=11).contains(&allowed),
            "burst of twice the rate: {allowed}"
        );
    }

    #[test]
    fn repeated_strikes_mean_abuse() {
        let mut l = ConnectionLimits::new(&limits());
        assert!(!l.strike());
        assert!(!l.strike());
        assert!(l.strike());
    }

    #[test]
    fn connects_are_limited_per_ip() {
        let c = ConnectLimits::new(&limits());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let allowed = (0..10).filter(|_| c.allow(a)).count();
        assert_eq!(allowed, 4);
        assert!(c.allow(b), "another IP has its own budget");
    }
}
