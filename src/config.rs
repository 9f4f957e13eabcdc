//! The relay's configuration: one typed struct, read from flags or the
//! environment in one place ([`Config::load`]) and validated at startup.
//!
//! Every setting has a documented environment name (the protocol's
//! `DATABASE_URL`, `SOCKET_PORT`, `SOCKET_CORS_ORIGIN`, `JWT_SECRET`,
//! `REALTIME_DEBUG`, and `ROWCAST_*` for the rest). A bad value is refused
//! with one line that names the setting and never echoes a secret.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use crate::db::DatabaseConfig;
use crate::settings::{env, Settings};

/// A setting that could not be used, named by its environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    /// The environment name of the setting, so the operator knows what to fix.
    pub name: &'static str,
    /// What is wrong with it, without repeating a secret value.
    pub reason: String,
}

impl ConfigError {
    pub fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            reason: reason.into(),
        }
    }
}

impl From<crate::db::UrlError> for ConfigError {
    fn from(reason: crate::db::UrlError) -> Self {
        Self::new(env::DATABASE_URL, reason.to_string())
    }
}

/// Everything `rowcast serve` needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the application's database is and how to reach it.
    pub database: DatabaseConfig,
    /// How changes are captured.
    pub capture: CaptureConfig,
    /// Which routes file turns changes into events.
    pub routes: RoutesSource,
    /// How long stored events stay replayable.
    pub retention: Retention,
    /// The WebSocket and HTTP side.
    pub gateway: GatewayConfig,
    /// `ROWCAST_BUS`: what connects the nodes.
    pub bus: BusConfig,
    /// `REALTIME_DEBUG`: debug-level logs.
    pub debug: bool,
    /// Web Push, when a VAPID key is set.
    pub push: Option<PushConfig>,
    /// Values for the variables a routes file's `secret_env` names, given
    /// in code (an embedding program, a test); a name missing here is read
    /// from the process environment.
    pub sink_secrets: std::collections::BTreeMap<String, Secret>,
}

/// What connects the relay nodes (ephemeral frames; with NATS, stored
/// events too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusConfig {
    /// `postgres`: NOTIFY on the database, nothing else to run.
    Postgres,
    /// `nats://host:port`: a NATS server with JetStream.
    Nats(NatsConfig),
}

/// Where the NATS bus is.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// `ROWCAST_BUS`: the server URL (it may hold credentials, so it is
    /// never printed).
    pub url: String,
    /// `ROWCAST_NATS_STREAM`: the JetStream stream, also the subjects'
    /// prefix.
    pub stream: String,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &"[redacted]")
            .field("stream", &self.stream)
            .finish()
    }
}

/// Which capture mechanism feeds the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureMode {
    /// Row triggers write to a durable capture table; NOTIFY wakes the relay.
    Trigger,
    /// A logical replication slot streams committed changes (pgoutput).
    Logical,
    /// Logical when the server has `wal_level=logical`, triggers otherwise.
    Auto,
}

/// A capture mode that is none of `trigger`, `logical` or `auto`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown capture mode `{0}` (expected trigger, logical or auto)")]
pub struct UnknownCaptureMode(String);

impl FromStr for CaptureMode {
    type Err = UnknownCaptureMode;
    fn from_str(s: &str) -> Result<Self, UnknownCaptureMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trigger" => Ok(Self::Trigger),
            "logical" => Ok(Self::Logical),
            "auto" | "" => Ok(Self::Auto),
            other => Err(UnknownCaptureMode(other.to_string())),
        }
    }
}

/// Capture settings.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// `ROWCAST_CAPTURE`.
    pub mode: CaptureMode,
    /// Most captured changes one outbox transaction takes.
    pub batch_size: usize,
    /// Trigger mode polls this often even without a NOTIFY, so a lost
    /// wake-up only delays delivery.
    pub poll_interval: Duration,
    /// Logical mode: the replication slot's name; by default
    /// `rowcast_<database>`, since slots are shared by the whole cluster.
    pub slot: Option<String>,
    /// Logical mode: the publication's name.
    pub publication: String,
    /// Logical mode: how often an idle stream writes a heartbeat so the
    /// slot's confirmed position keeps moving.
    pub heartbeat: Duration,
    /// `ROWCAST_ON_CAPTURE_GAP`: what the relay does when changes were lost
    /// before it could capture them.
    pub on_gap: OnCaptureGap,
    /// `ROWCAST_DELIVER`: when logical capture fans an event out.
    pub deliver: DeliverAt,
}

/// When logical capture fans an event out (trigger capture always
/// delivers after the outbox commit: its order comes from that commit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliverAt {
    /// Once the change is durable in the WAL: its seq is fixed by the
    /// stream, the outbox row is written behind it.
    #[default]
    Wal,
    /// Once its outbox row committed.
    Outbox,
}

/// What the relay does on a capture gap (a replication slot lost in a
/// failover, invalidated, or consumed by someone else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCaptureGap {
    /// Store a gap marker, make a new slot if needed, and go on.
    Continue,
    /// Exit non-zero, so an operator can backfill first.
    Stop,
}

/// A value of `ROWCAST_ON_CAPTURE_GAP` that is neither `continue` nor `stop`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be continue or stop")]
pub struct UnknownGapPolicy;

impl std::str::FromStr for OnCaptureGap {
    type Err = UnknownGapPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "continue" => Ok(Self::Continue),
            "stop" => Ok(Self::Stop),
            _ => Err(UnknownGapPolicy),
        }
    }
}

/// Where the routes come from.
#[derive(Clone, Debug)]
pub enum RoutesSource {
    /// The routes shipped with rowcast for the demo schema.
    Builtin,
    /// `ROWCAST_ROUTES`: a deployer's file.
    File(PathBuf),
}

/// How much history the outbox keeps for replay.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Events older than this are deleted.
    pub max_age: Duration,
    /// At most this many of the newest events are kept.
    pub max_events: u64,
    /// How often retention runs.
    pub interval: Duration,
}

/// Origins allowed to open a WebSocket.
#[derive(Clone, Debug)]
pub enum CorsOrigins {
    /// `*`: any origin, and requests without one.
    Any,
    /// Exactly these origins; requests without an `Origin` header are allowed
    /// because they do not come from a browser.
    List(Vec<String>),
}

impl CorsOrigins {
    /// Whether an upgrade carrying this `Origin` header may proceed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (Self::Any, _) | (Self::List(_), None) => true,
            (Self::List(list), Some(origin)) => list.iter().any(|o| o == origin),
        }
    }
}

/// A secret string that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret's bytes, for the one place that needs them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Token verification settings.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// `JWT_ALGORITHM`: the only algorithm accepted.
    pub algorithm: jsonwebtoken::Algorithm,
    /// `JWT_SECRET` for HS256/384/512.
    pub secret: Option<Secret>,
    /// `JWT_PUBLIC_KEY_FILE` contents for RS*/ES*.
    pub public_key_pem: Option<Vec<u8>>,
    /// `JWT_AUDIENCE`, checked when set.
    pub audience: Option<String>,
    /// `JWT_ISSUER`, checked when set.
    pub issuer: Option<String>,
    /// `JWT_LEEWAY`: clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Limits that keep one client from hurting the others.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Frames a connection may have queued before it is closed with 4008.
    pub send_queue: usize,
    /// Largest client frame accepted; larger ones close with 1009.
    pub max_frame_bytes: usize,
    /// Client frames per second per connection (burst: twice that).
    pub frames_per_sec: u32,
    /// Joins per second per connection.
    pub joins_per_sec: u32,
    /// Emits per second per connection.
    pub emits_per_sec: u32,
    /// New connections per second per client IP.
    pub connects_per_sec: u32,
    /// `ROWCAST_HISTORY_RATE`: HTTP history reads per second, per client IP
    /// and per user.
    pub history_per_sec: u32,
    /// Rate-limited frames within a minute before the connection closes with 4029.
    pub abuse_strikes: u32,
    /// Rooms one connection may be in at once.
    pub max_rooms: usize,
    /// Open connections the node accepts.
    pub max_connections: usize,
    /// `ROWCAST_MAX_CONNECTIONS_PER_USER`: open connections of one `sub`.
    pub max_connections_per_user: usize,
    /// `ROWCAST_MAX_CONNECTIONS_PER_IP`: open connections from one address.
    pub max_connections_per_ip: usize,
    /// Minimum spacing of `user-typing`/`user-editing` per sender and room.
    pub typing_throttle: Duration,
    /// How long a join authorization answer is reused.
    pub auth_cache_ttl: Duration,
    /// `ROWCAST_AUTH_RECHECK_INTERVAL`: every membership is authorized again
    /// this often (the backstop for access changes that were missed).
    pub auth_recheck: Duration,
}

/// The WebSocket and HTTP server.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// `ROWCAST_BIND` host and `SOCKET_PORT`.
    pub bind: SocketAddr,
    /// `SOCKET_CORS_ORIGIN`.
    pub cors: CorsOrigins,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Heartbeat interval announced in `welcome`; idle connections are
    /// closed after two missed intervals.
    pub heartbeat: Duration,
    /// `ROWCAST_HEADER_TIMEOUT`: how long a client may take to send a
    /// request's headers (the WebSocket upgrade included).
    pub header_timeout: Duration,
    /// `ROWCAST_PRESENCE_GRACE`: how long `offline` waits for the user to
    /// come back (a connection that flaps within it stores nothing).
    pub presence_grace: Duration,
    /// `ROWCAST_CLIENT_EVENTS`: names clients may `emit`.
    pub client_events: Vec<String>,
    /// `ROWCAST_THROTTLED_EVENTS`: client events throttled per sender and
    /// room (typing indicators); bursts within the emit interval are merged.
    pub throttled_events: Vec<String>,
    /// Per-connection and per-IP limits.
    pub limits: Limits,
}

impl Config {
    /// Reads and validates every setting; the first problem is returned.
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            database: database(s)?,
            capture: CaptureConfig {
                mode: s.capture.parse().map_err(|e: UnknownCaptureMode| {
                    ConfigError::new(env::ROWCAST_CAPTURE, e.to_string())
                })?,
                batch_size: positive(env::ROWCAST_BATCH_SIZE, s.batch_size)?,
                poll_interval: duration(env::ROWCAST_POLL_INTERVAL, &s.poll_interval)?,
                slot: match s.slot.trim() {
                    "" => None,
                    slot => Some(identifier(env::ROWCAST_SLOT, slot)?),
                },
                publication: identifier(env::ROWCAST_PUBLICATION, &s.publication)?,
                heartbeat: duration(env::ROWCAST_HEARTBEAT, &s.heartbeat)?,
                on_gap: s.on_capture_gap.parse().map_err(|e: UnknownGapPolicy| {
                    ConfigError::new(env::ROWCAST_ON_CAPTURE_GAP, e.to_string())
                })?,
                deliver: s.deliver,
            },
            routes: match &s.routes {
                Some(path) if !path.as_os_str().is_empty() => RoutesSource::File(path.clone()),
                _ => RoutesSource::Builtin,
            },
            retention: Retention {
                max_age: duration(env::ROWCAST_RETENTION_AGE, &s.retention_age)?,
                max_events: s.retention_events,
                interval: duration(env::ROWCAST_RETENTION_INTERVAL, &s.retention_interval)?,
            },
            gateway: gateway(s)?,
            bus: bus(s)?,
            debug: s.debug,
            push: push(s)?,
            sink_secrets: Default::default(),
        })
    }
}

fn database(s: &Settings) -> Result<DatabaseConfig, ConfigError> {
    let url = s.database_url.as_deref().unwrap_or_default();
    let database = DatabaseConfig::from_url(url).map_err(ConfigError::from)?;
    Ok(DatabaseConfig {
        pool_size: positive(env::ROWCAST_DB_POOL, s.db_pool)?,
        startup_timeout: duration(env::ROWCAST_STARTUP_TIMEOUT, &s.startup_timeout)?,
        ..database
    })
}

/// Web Push settings.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// `ROWCAST_VAPID_PRIVATE_KEY`: base64url of the raw P-256 key.
    pub vapid_private_key: Secret,
    /// `ROWCAST_VAPID_SUBJECT`: `mailto:` or `https:`.
    pub subject: String,
    /// `ROWCAST_PUSH_ORIGINS`: the push services subscriptions may use
    /// (`scheme://host[:port]`); empty for any https origin.
    pub origins: Vec<String>,
    /// `ROWCAST_PUSH_TTL`.
    pub ttl: Duration,
    /// `ROWCAST_PUSH_SUBSCRIPTIONS_PER_USER`.
    pub per_user: usize,
}

fn push(s: &Settings) -> Result<Option<PushConfig>, ConfigError> {
    let Some(key) = s
        .vapid_private_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
    else {
        return Ok(None);
    };
    let subject = s.vapid_subject.clone().unwrap_or_default();
    let subject = subject.trim();
    if !(subject.starts_with("mailto:") || subject.starts_with("https:")) || subject.len() < 8 {
        return Err(ConfigError::new(
            env::ROWCAST_VAPID_SUBJECT,
            "Web Push needs a contact: `mailto:you@example.com` or an https: URL",
        ));
    }
    let mut origins = Vec::new();
    for origin in s
        .push_origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let parsed = reqwest::Url::parse(origin).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
        });
        let Some(parsed) = parsed else {
            return Err(ConfigError::new(
                env::ROWCAST_PUSH_ORIGINS,
                format!("`{origin}` is not an origin such as https://push.example.com"),
            ));
        };
        origins.push(parsed.origin().ascii_serialization());
    }
    Ok(Some(PushConfig {
        vapid_private_key: Secret::new(key.trim()),
        subject: subject.to_string(),
        origins,
        ttl: duration(env::ROWCAST_PUSH_TTL, &s.push_ttl)?,
        per_user: positive(
            env::ROWCAST_PUSH_SUBSCRIPTIONS_PER_USER,
            s.push_subscriptions_per_user,
        )?,
    }))
}

fn bus(s: &Settings) -> Result<BusConfig, ConfigError> {
    let value = s.bus.trim();
    if value.is_empty() || value == "postgres" {
        return Ok(BusConfig::Postgres);
    }
    let Some(server) = value.strip_prefix("nats://") else {
        // The value may hold credentials: it is not echoed.
        return Err(ConfigError::new(
            env::ROWCAST_BUS,
            "must be `postgres` or a NATS server URL (nats://host:port)",
        ));
    };
    if !cfg!(feature = "nats") {
        return Err(ConfigError::new(
            env::ROWCAST_BUS,
            "this build of rowcast has no NATS bus (build it with the `nats` feature)",
        ));
    }
    if server.is_empty() || server.starts_with('/') {
        return Err(ConfigError::new(
            env::ROWCAST_BUS,
            "the NATS URL names no host",
        ));
    }
    let stream = s.nats_stream.trim();
    let valid = (1..=64).contains(&stream.len())
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(ConfigError::new(
            env::ROWCAST_NATS_STREAM,
            format!("`{stream}` must be 1 to 64 letters, digits, `_` or `-`"),
        ));
    }
    Ok(BusConfig::Nats(NatsConfig {
        url: value.to_string(),
        stream: stream.to_string(),
    }))
}

fn gateway(s: &Settings) -> Result<GatewayConfig, ConfigError> {
    let host: IpAddr = s.bind.parse().map_err(|_| {
        ConfigError::new(
            env::ROWCAST_BIND,
            format!("`{}` is not an IP address", s.bind),
        )
    })?;
    let port: u16 = s.port.trim().parse().map_err(|_| {
        ConfigError::new(
            env::SOCKET_PORT,
            format!("`{}` is not a port number (0-65535)", s.port),
        )
    })?;
    Ok(GatewayConfig {
        bind: SocketAddr::new(host, port),
        cors: cors(&s.cors_origin)?,
        jwt: jwt(s)?,
        heartbeat: duration(env::ROWCAST_HEARTBEAT_INTERVAL, &s.heartbeat_interval)?,
        presence_grace: duration(env::ROWCAST_PRESENCE_GRACE, &s.presence_grace)?,
        header_timeout: positive(
            env::ROWCAST_HEADER_TIMEOUT,
            duration(env::ROWCAST_HEADER_TIMEOUT, &s.header_timeout)?,
        )?,
        client_events: client_events(env::ROWCAST_CLIENT_EVENTS, &s.client_events)?,
        throttled_events: client_events(env::ROWCAST_THROTTLED_EVENTS, &s.throttled_events)?,
        limits: Limits {
            send_queue: positive(env::ROWCAST_SEND_QUEUE, s.send_queue)?,
            max_frame_bytes: positive(env::ROWCAST_MAX_FRAME_BYTES, s.max_frame_bytes)?,
            frames_per_sec: positive(env::ROWCAST_FRAME_RATE, s.frame_rate)?,
            joins_per_sec: positive(env::ROWCAST_JOIN_RATE, s.join_rate)?,
            emits_per_sec: positive(env::ROWCAST_EMIT_RATE, s.emit_rate)?,
            connects_per_sec: positive(env::ROWCAST_CONNECT_RATE, s.connect_rate)?,
            history_per_sec: positive(env::ROWCAST_HISTORY_RATE, s.history_rate)?,
            abuse_strikes: positive(env::ROWCAST_ABUSE_STRIKES, s.abuse_strikes)?,
            max_rooms: positive(env::ROWCAST_MAX_ROOMS, s.max_rooms)?,
            max_connections: positive(env::ROWCAST_MAX_CONNECTIONS, s.max_connections)?,
            max_connections_per_user: positive(
                env::ROWCAST_MAX_CONNECTIONS_PER_USER,
                s.max_connections_per_user,
            )?,
            max_connections_per_ip: positive(
                env::ROWCAST_MAX_CONNECTIONS_PER_IP,
                s.max_connections_per_ip,
            )?,
            typing_throttle: duration(env::ROWCAST_TYPING_THROTTLE, &s.typing_throttle)?,
            auth_cache_ttl: duration(env::ROWCAST_AUTH_CACHE_TTL, &s.auth_cache_ttl)?,
            auth_recheck: positive(
                env::ROWCAST_AUTH_RECHECK_INTERVAL,
                duration(env::ROWCAST_AUTH_RECHECK_INTERVAL, &s.auth_recheck_interval)?,
            )?,
        },
    })
}

fn cors(value: &str) -> Result<CorsOrigins, ConfigError> {
    let origins: Vec<String> = value
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() || origins.iter().any(|o| o == "*") {
        return Ok(CorsOrigins::Any);
    }
    if let Some(bad) = origins.iter().find(|o| !o.contains("://")) {
        return Err(ConfigError::new(
            env::SOCKET_CORS_ORIGIN,
            format!("`{bad}` is not an origin (expected scheme://host[:port] or *)"),
        ));
    }
    Ok(CorsOrigins::List(origins))
}

fn jwt(s: &Settings) -> Result<JwtConfig, ConfigError> {
    use jsonwebtoken::Algorithm;
    let algorithm = Algorithm::from_str(s.jwt_algorithm.trim()).map_err(|_| {
        ConfigError::new(
            env::JWT_ALGORITHM,
            format!(
                "unsupported algorithm `{}` (HS256, RS256, ES256, ...)",
                s.jwt_algorithm
            ),
        )
    })?;
    let is_hmac = matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    );
    let secret = s
        .jwt_secret
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(Secret::new);
    let public_key_pem = match (&s.jwt_public_key_file, is_hmac) {
        (Some(path), false) => Some(std::fs::read(path).map_err(|e| {
            ConfigError::new(
                env::JWT_PUBLIC_KEY_FILE,
                format!("cannot read {}: {e}", path.display()),
            )
        })?),
        (None, false) => {
            return Err(ConfigError::new(
                env::JWT_PUBLIC_KEY_FILE,
                format!("required for {algorithm:?} (a PEM public key)"),
            ))
        }
        (_, true) => None,
    };
    match &secret {
        None if is_hmac => {
            return Err(ConfigError::new(
                env::JWT_SECRET,
                "not set (required for HS256 tokens)",
            ))
        }
        Some(secret) if is_hmac && secret.expose().len() < 16 => {
            return Err(ConfigError::new(
                env::JWT_SECRET,
                "too short (use at least 16 bytes)",
            ))
        }
        _ => {}
    }
    Ok(JwtConfig {
        algorithm,
        secret,
        public_key_pem,
        audience: s.jwt_audience.clone().filter(|v| !v.is_empty()),
        issuer: s.jwt_issuer.clone().filter(|v| !v.is_empty()),
        leeway: duration(env::JWT_LEEWAY, &s.jwt_leeway)?,
    })
}

fn client_events(name: &'static str, value: &str) -> Result<Vec<String>, ConfigError> {
    let names: Vec<String> = value
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if let Some(bad) = names.iter().find(|n| !crate::event::is_event_name(n)) {
        return Err(ConfigError::new(
            name,
            format!("`{bad}` is not a valid event name"),
        ));
    }
    Ok(names)
}

fn positive<T: PartialOrd + Default + Copy>(
    name: &'static str,
    value: T,
) -> Result<T, ConfigError> {
    if value > T::default() {
        Ok(value)
    } else {
        Err(ConfigError::new(name, "must be greater than zero"))
    }
}

fn identifier(name: &'static str, value: &str) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(value.to_string())
    } else {
        Err(ConfigError::new(
            name,
            format!(
                "`{value}` must be a lowercase identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"
            ),
        ))
    }
}

fn duration(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    crate::duration::parse_duration(value).ok_or_else(|| {
        ConfigError::new(
            name,
            format!("`{value}` is not a duration (for example 500ms, 30s, 5m, 24h, 7d)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_lists_and_wildcard() {
        assert!(matches!(cors("*").unwrap(), CorsOrigins::Any));
        assert!(matches!(cors("").unwrap(), CorsOrigins::Any));
        let list = cors("https://a.example, http://localhost:5173/").unwrap();
        assert!(list.allows(Some("https://a.example")));
        assert!(list.allows(Some("http://localhost:5173")));
        assert!(!list.allows(Some("https://evil.example")));
        assert!(list.allows(None));
        assert_eq!(cors("example.com").unwrap_err().name, "SOCKET_CORS_ORIGIN");
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(identifier("X", "rowcast_slot").is_ok());
        assert!(identifier("X", "Rowcast").is_err());
        assert!(identifier("X", "a;drop").is_err());
        assert!(identifier("X", "").is_err());
    }

    #[test]
    fn buses_are_checked() {
        let mut s = Settings::defaults();
        assert_eq!(bus(&s).unwrap(), BusConfig::Postgres);
        s.bus = "redis://secret@host".into();
        let refused = bus(&s).unwrap_err();
        assert_eq!(refused.name, "ROWCAST_BUS");
        assert!(!refused.reason.contains("secret"), "{refused}");
        s.bus = "nats://127.0.0.1:4222".into();
        if cfg!(feature = "nats") {
            let BusConfig::Nats(nats) = bus(&s).unwrap() else {
                panic!("a NATS bus");
            };
            assert_eq!(nats.stream, "rowcast_events");
            s.nats_stream = "a.b".into();
            assert_eq!(bus(&s).unwrap_err().name, "ROWCAST_NATS_STREAM");
        } else {
            assert!(bus(&s).unwrap_err().reason.contains("nats"));
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2-hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }
}
