//! Rate limits (governor's GCRA limiters): per connection for frames, joins
//! and emits, per client IP for new connections and per IP and user for
//! history reads, the strike count that turns repeated abuse into a 4029
//! close, and caps on open connections per user and per IP.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
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

/// HTTP history reads, per client IP and per user.
pub struct HistoryLimits {
    /// Keyed by IP.
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Keyed by `sub`.
    per_user: DefaultKeyedRateLimiter<String>,
}

impl HistoryLimits {
    /// Limits from the configuration.
    pub fn new(limits: &Limits) -> Self {
        Self {
            per_ip: RateLimiter::keyed(quota(limits.history_per_sec)),
            per_user: RateLimiter::keyed(quota(limits.history_per_sec)),
        }
    }

    /// Whether this user, from this IP, may read history now (service
    /// tokens are limited by IP only).
    pub fn allow(&self, ip: IpAddr, user: &str, service: bool) -> bool {
        let allowed = self.per_ip.check_key(&ip).is_ok()
            && (service || self.per_user.check_key(&user.to_string()).is_ok());
        if !allowed {
            metrics::counter!("rowcast_rate_limited_total", "kind" => "history").increment(1);
        }
        allowed
    }

    /// Forgets keys that have been quiet, so the tables stay small.
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_user.retain_recent();
        self.per_user.shrink_to_fit();
    }
}

/// Open connections per user and per client IP, capped. A slot is held by
/// a [`CapSlot`] for the connection's life and given back when it drops,
/// also when an upgrade never completes; counts that reach zero are removed,
/// so the maps hold only who is connected.
#[derive(Default)]
pub struct ConnectionCaps {
    /// Most connections of one `sub` (service tokens are not capped).
    per_user: usize,
    /// Most connections from one IP.
    per_ip: usize,
    /// Open connections by user and by IP.
    open: Mutex<(HashMap<String, usize>, HashMap<IpAddr, usize>)>,
}

/// Which cap refused a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum CapExceeded {
    /// `ROWCAST_MAX_CONNECTIONS_PER_USER`.
    User,
    /// `ROWCAST_MAX_CONNECTIONS_PER_IP`.
    Ip,
}

/// One connection's place under the caps.
pub struct CapSlot {
    /// The caps it counts against.
    caps: Arc<ConnectionCaps>,
    /// The user counted (none for a service token).
    user: Option<String>,
    /// The IP counted.
    ip: IpAddr,
}

impl ConnectionCaps {
    /// Caps from the configuration.
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            per_user: limits.max_connections_per_user,
            per_ip: limits.max_connections_per_ip,
            open: Mutex::default(),
        })
    }

    /// Takes a slot for a connection of `user` from `ip`, unless a cap is
    /// reached.
    pub fn admit(
        self: &Arc<Self>,
        user: &str,
        service: bool,
        ip: IpAddr,
    ) -> Result<CapSlot, CapExceeded> {
        let mut open = self.lock();
        let (users, ips) = &mut *open;
        if ips.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            record(Kind::Connect);
            return Err(CapExceeded::Ip);
        }
        if !service && users.get(user).copied().unwrap_or(0) >= self.per_user {
            record(Kind::Connect);
            return Err(CapExceeded::User);
        }
        *ips.entry(ip).or_default() += 1;
        if !service {
            *users.entry(user.to_string()).or_default() += 1;
        }
        Ok(CapSlot {
            caps: self.clone(),
            user: (!service).then(|| user.to_string()),
            ip,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, usize>, HashMap<IpAddr, usize>)> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for CapSlot {
    fn drop(&mut self) {
        let mut open = self.caps.lock();
        let (users, ips) = &mut *open;
        if let Some(user) = &self.user {
            release(users, user);
        }
        release(ips, &self.ip);
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
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
            history_per_sec: 2,
            abuse_strikes: 3,
            max_rooms: 10,
            max_connections: 10,
            max_connections_per_user: 2,
            max_connections_per_ip: 3,
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

    #[test]
    fn caps_count_open_connections_per_user_and_ip() {
        let caps = ConnectionCaps::new(&limits());
        let (home, office): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = caps.admit("a", false, home).unwrap();
        let _a2 = caps.admit("a", false, office).unwrap();
        assert_eq!(
            caps.admit("a", false, office).err(),
            Some(CapExceeded::User)
        );
        let _b = caps.admit("b", false, home).unwrap();
        let _service = caps.admit("backend", true, home).unwrap();
        assert_eq!(caps.admit("c", false, home).err(), Some(CapExceeded::Ip));
        drop(a1);
        assert!(
            caps.admit("a", false, office).is_ok(),
            "a closed connection frees its slot"
        );
        drop(_b);
        drop(_service);
        assert!(
            !caps.lock().0.contains_key("b"),
            "counts at zero are forgotten"
        );
    }
}
