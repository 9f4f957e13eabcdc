//! The relay's raw settings, as given on the command line or in the
//! environment: what `rowcast serve` parses, and what [`Config::load`]
//! turns into a validated [`Config`].
//!
//! Every flag can also come from its environment variable; values are kept
//! as given here and validated once, in [`Config::load`], so a bad value gets
//! one line that names it.
//!
//! [`Config`]: crate::config::Config
//! [`Config::load`]: crate::config::Config::load

use std::path::PathBuf;

use clap::{Args, Parser};

/// The environment variable of every setting, named once: the flags below
/// read them, and [`Config::load`] names them in its errors.
///
/// [`Config::load`]: crate::config::Config::load
pub mod env {
    pub const ROWCAST_DEMO_INTERVAL: &str = "ROWCAST_DEMO_INTERVAL";
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const ROWCAST_DB_POOL: &str = "ROWCAST_DB_POOL";
    pub const ROWCAST_STARTUP_TIMEOUT: &str = "ROWCAST_STARTUP_TIMEOUT";
    pub const ROWCAST_CAPTURE: &str = "ROWCAST_CAPTURE";
    pub const ROWCAST_ROUTES: &str = "ROWCAST_ROUTES";
    pub const ROWCAST_BATCH_SIZE: &str = "ROWCAST_BATCH_SIZE";
    pub const ROWCAST_POLL_INTERVAL: &str = "ROWCAST_POLL_INTERVAL";
    pub const ROWCAST_SLOT: &str = "ROWCAST_SLOT";
    pub const ROWCAST_PUBLICATION: &str = "ROWCAST_PUBLICATION";
    pub const ROWCAST_HEARTBEAT: &str = "ROWCAST_HEARTBEAT";
    pub const ROWCAST_ON_CAPTURE_GAP: &str = "ROWCAST_ON_CAPTURE_GAP";
    pub const ROWCAST_DELIVER: &str = "ROWCAST_DELIVER";
    pub const ROWCAST_RETENTION_AGE: &str = "ROWCAST_RETENTION_AGE";
    pub const ROWCAST_RETENTION_EVENTS: &str = "ROWCAST_RETENTION_EVENTS";
    pub const ROWCAST_RETENTION_INTERVAL: &str = "ROWCAST_RETENTION_INTERVAL";
    pub const ROWCAST_BUS: &str = "ROWCAST_BUS";
    pub const ROWCAST_NATS_STREAM: &str = "ROWCAST_NATS_STREAM";
    pub const ROWCAST_BIND: &str = "ROWCAST_BIND";
    pub const SOCKET_PORT: &str = "SOCKET_PORT";
    pub const SOCKET_CORS_ORIGIN: &str = "SOCKET_CORS_ORIGIN";
    pub const JWT_SECRET: &str = "JWT_SECRET";
    pub const JWT_ALGORITHM: &str = "JWT_ALGORITHM";
    pub const JWT_PUBLIC_KEY_FILE: &str = "JWT_PUBLIC_KEY_FILE";
    pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
    pub const JWT_ISSUER: &str = "JWT_ISSUER";
    pub const JWT_LEEWAY: &str = "JWT_LEEWAY";
    pub const ROWCAST_HEARTBEAT_INTERVAL: &str = "ROWCAST_HEARTBEAT_INTERVAL";
    pub const ROWCAST_PRESENCE_GRACE: &str = "ROWCAST_PRESENCE_GRACE";
    pub const ROWCAST_HEADER_TIMEOUT: &str = "ROWCAST_HEADER_TIMEOUT";
    pub const ROWCAST_CLIENT_EVENTS: &str = "ROWCAST_CLIENT_EVENTS";
    pub const ROWCAST_THROTTLED_EVENTS: &str = "ROWCAST_THROTTLED_EVENTS";
    pub const ROWCAST_SEND_QUEUE: &str = "ROWCAST_SEND_QUEUE";
    pub const ROWCAST_MAX_FRAME_BYTES: &str = "ROWCAST_MAX_FRAME_BYTES";
    pub const ROWCAST_FRAME_RATE: &str = "ROWCAST_FRAME_RATE";
    pub const ROWCAST_JOIN_RATE: &str = "ROWCAST_JOIN_RATE";
    pub const ROWCAST_EMIT_RATE: &str = "ROWCAST_EMIT_RATE";
    pub const ROWCAST_CONNECT_RATE: &str = "ROWCAST_CONNECT_RATE";
    pub const ROWCAST_HISTORY_RATE: &str = "ROWCAST_HISTORY_RATE";
    pub const ROWCAST_ABUSE_STRIKES: &str = "ROWCAST_ABUSE_STRIKES";
    pub const ROWCAST_MAX_ROOMS: &str = "ROWCAST_MAX_ROOMS";
    pub const ROWCAST_MAX_CONNECTIONS: &str = "ROWCAST_MAX_CONNECTIONS";
    pub const ROWCAST_MAX_CONNECTIONS_PER_USER: &str = "ROWCAST_MAX_CONNECTIONS_PER_USER";
    pub const ROWCAST_MAX_CONNECTIONS_PER_IP: &str = "ROWCAST_MAX_CONNECTIONS_PER_IP";
    pub const ROWCAST_TYPING_THROTTLE: &str = "ROWCAST_TYPING_THROTTLE";
    pub const ROWCAST_AUTH_CACHE_TTL: &str = "ROWCAST_AUTH_CACHE_TTL";
    pub const ROWCAST_AUTH_RECHECK_INTERVAL: &str = "ROWCAST_AUTH_RECHECK_INTERVAL";
    pub const REALTIME_DEBUG: &str = "REALTIME_DEBUG";
    pub const ROWCAST_VAPID_PRIVATE_KEY: &str = "ROWCAST_VAPID_PRIVATE_KEY";
    pub const ROWCAST_VAPID_SUBJECT: &str = "ROWCAST_VAPID_SUBJECT";
    pub const ROWCAST_PUSH_ORIGINS: &str = "ROWCAST_PUSH_ORIGINS";
    pub const ROWCAST_PUSH_TTL: &str = "ROWCAST_PUSH_TTL";
    pub const ROWCAST_PUSH_SUBSCRIPTIONS_PER_USER: &str = "ROWCAST_PUSH_SUBSCRIPTIONS_PER_USER";
}

/// Every setting of the relay, as given on the command line or in the environment.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Postgres connection URL.
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections in the runtime pool.
    #[arg(long, env = env::ROWCAST_DB_POOL, default_value_t = 16)]
    pub db_pool: usize,
    /// How long startup waits for an unreachable database.
    #[arg(long, env = env::ROWCAST_STARTUP_TIMEOUT, default_value = "10s")]
    pub startup_timeout: String,

    /// Capture mode: trigger, logical or auto.
    #[arg(long, env = env::ROWCAST_CAPTURE, default_value = "auto")]
    pub capture: String,
    /// Path of the routes file (default: the built-in demo routes).
    #[arg(long, env = env::ROWCAST_ROUTES)]
    pub routes: Option<PathBuf>,
    /// Most captured changes per outbox transaction.
    #[arg(long, env = env::ROWCAST_BATCH_SIZE, default_value_t = 1000)]
    pub batch_size: usize,
    /// Trigger mode: poll the capture table this often without a NOTIFY.
    #[arg(long, env = env::ROWCAST_POLL_INTERVAL, default_value = "1s")]
    pub poll_interval: String,
    /// Logical mode: replication slot name (default: `rowcast_<database>`).
    #[arg(long, env = env::ROWCAST_SLOT, default_value = "")]
    pub slot: String,
    /// Logical mode: publication name.
    #[arg(long, env = env::ROWCAST_PUBLICATION, default_value = "rowcast")]
    pub publication: String,
    /// Logical mode: heartbeat interval that keeps an idle slot advancing.
    #[arg(long, env = env::ROWCAST_HEARTBEAT, default_value = "10s")]
    pub heartbeat: String,
    /// What to do when changes were lost before capture could read them (a
    /// slot lost in a failover): `continue` (store a gap marker, go on) or
    /// `stop` (exit non-zero).
    #[arg(long, env = env::ROWCAST_ON_CAPTURE_GAP, default_value = "continue")]
    pub on_capture_gap: String,
    /// Logical mode: when an event is fanned out. `wal`: as soon as its
    /// change is durable in the WAL, with the outbox row written behind it
    /// (same seqs after a crash); `outbox`: after its outbox row committed.
    #[arg(long, env = env::ROWCAST_DELIVER, value_enum, default_value_t = crate::config::DeliverAt::Wal)]
    pub deliver: crate::config::DeliverAt,

    /// Delete stored events older than this.
    #[arg(long, env = env::ROWCAST_RETENTION_AGE, default_value = "7d")]
    pub retention_age: String,
    /// Keep at most this many stored events.
    #[arg(long, env = env::ROWCAST_RETENTION_EVENTS, default_value_t = 1_000_000)]
    pub retention_events: u64,
    /// How often retention runs.
    #[arg(long, env = env::ROWCAST_RETENTION_INTERVAL, default_value = "60s")]
    pub retention_interval: String,

    /// The bus between nodes: `postgres`, or a NATS server with JetStream
    /// (`nats://host:port`).
    #[arg(long, env = env::ROWCAST_BUS, default_value = "postgres")]
    pub bus: String,
    /// NATS bus: the JetStream stream of stored events (it also names the
    /// subjects, so several deployments can share one server).
    #[arg(long, env = env::ROWCAST_NATS_STREAM, default_value = "rowcast_events")]
    pub nats_stream: String,

    /// Address to listen on.
    #[arg(long, env = env::ROWCAST_BIND, default_value = "0.0.0.0")]
    pub bind: String,
    /// WebSocket and HTTP port.
    #[arg(long, env = env::SOCKET_PORT, default_value = "3001")]
    pub port: String,
    /// Allowed browser origins, comma-separated, or `*`.
    #[arg(long, env = env::SOCKET_CORS_ORIGIN, default_value = "*")]
    pub cors_origin: String,
    /// HMAC secret for HS256 tokens.
    #[arg(long, env = env::JWT_SECRET, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Token algorithm (HS256 by default; RS256/ES256 need a public key).
    #[arg(long, env = env::JWT_ALGORITHM, default_value = "HS256")]
    pub jwt_algorithm: String,
    /// PEM public key for RS256/ES256 tokens.
    #[arg(long, env = env::JWT_PUBLIC_KEY_FILE)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `aud` claim, when set.
    #[arg(long, env = env::JWT_AUDIENCE)]
    pub jwt_audience: Option<String>,
    /// Required `iss` claim, when set.
    #[arg(long, env = env::JWT_ISSUER)]
    pub jwt_issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = env::JWT_LEEWAY, default_value = "0s")]
    pub jwt_leeway: String,
    /// Heartbeat interval announced to clients.
    #[arg(long, env = env::ROWCAST_HEARTBEAT_INTERVAL, default_value = "25s")]
    pub heartbeat_interval: String,
    /// How long a user's `offline` waits for them to come back.
    #[arg(long, env = env::ROWCAST_PRESENCE_GRACE, default_value = "2s")]
    pub presence_grace: String,
    /// How long a client may take to send a request's headers.
    #[arg(long, env = env::ROWCAST_HEADER_TIMEOUT, default_value = "10s")]
    pub header_timeout: String,
    /// Event names clients may emit.
    #[arg(
        long,
        env = env::ROWCAST_CLIENT_EVENTS,
        default_value = "user-typing,user-editing,message"
    )]
    pub client_events: String,
    /// Client events throttled per sender and room (typing indicators).
    #[arg(
        long,
        env = env::ROWCAST_THROTTLED_EVENTS,
        default_value = "user-typing,user-editing"
    )]
    pub throttled_events: String,

    /// Frames queued per connection before it is closed as too slow (4008);
    /// keep it above ROWCAST_BATCH_SIZE.
    #[arg(long, env = env::ROWCAST_SEND_QUEUE, default_value_t = 2048)]
    pub send_queue: usize,
    /// Largest client frame in bytes (larger closes with 1009).
    #[arg(long, env = env::ROWCAST_MAX_FRAME_BYTES, default_value_t = 65_536)]
    pub max_frame_bytes: usize,
    /// Client frames per second per connection.
    #[arg(long, env = env::ROWCAST_FRAME_RATE, default_value_t = 50)]
    pub frame_rate: u32,
    /// Joins per second per connection.
    #[arg(long, env = env::ROWCAST_JOIN_RATE, default_value_t = 20)]
    pub join_rate: u32,
    /// Emits per second per connection.
    #[arg(long, env = env::ROWCAST_EMIT_RATE, default_value_t = 20)]
    pub emit_rate: u32,
    /// New connections per second per client IP.
    #[arg(long, env = env::ROWCAST_CONNECT_RATE, default_value_t = 50)]
    pub connect_rate: u32,
    /// HTTP history reads per second, per client address and per user.
    #[arg(long, env = env::ROWCAST_HISTORY_RATE, default_value_t = 20)]
    pub history_rate: u32,
    /// Rate-limited frames per minute before closing with 4029.
    #[arg(long, env = env::ROWCAST_ABUSE_STRIKES, default_value_t = 20)]
    pub abuse_strikes: u32,
    /// Rooms one connection may join.
    #[arg(long, env = env::ROWCAST_MAX_ROOMS, default_value_t = 100)]
    pub max_rooms: usize,
    /// Open connections per node.
    #[arg(long, env = env::ROWCAST_MAX_CONNECTIONS, default_value_t = 100_000)]
    pub max_connections: usize,
    /// Open connections of one user (`sub`); service tokens are not capped.
    #[arg(long, env = env::ROWCAST_MAX_CONNECTIONS_PER_USER, default_value_t = 20)]
    pub max_connections_per_user: usize,
    /// Open connections from one client address.
    #[arg(long, env = env::ROWCAST_MAX_CONNECTIONS_PER_IP, default_value_t = 10_000)]
    pub max_connections_per_ip: usize,
    /// Minimum spacing of typing/editing emits per sender and room.
    #[arg(long, env = env::ROWCAST_TYPING_THROTTLE, default_value = "500ms")]
    pub typing_throttle: String,
    /// How long a join authorization answer is reused.
    #[arg(long, env = env::ROWCAST_AUTH_CACHE_TTL, default_value = "5s")]
    pub auth_cache_ttl: String,
    /// How often every membership is authorized again (access changes
    /// declared in the routes file are re-checked at once).
    #[arg(long, env = env::ROWCAST_AUTH_RECHECK_INTERVAL, default_value = "60s")]
    pub auth_recheck_interval: String,

    /// Web Push: base64url of the raw 32-byte P-256 VAPID private key
    /// (`web-push generate-vapid-keys`); unset turns Web Push off.
    #[arg(long, env = env::ROWCAST_VAPID_PRIVATE_KEY, hide_env_values = true)]
    pub vapid_private_key: Option<String>,
    /// Web Push: the VAPID contact, `mailto:` or `https:`.
    #[arg(long, env = env::ROWCAST_VAPID_SUBJECT)]
    pub vapid_subject: Option<String>,
    /// Web Push: the push services' origins subscriptions may use, comma
    /// separated (default: any https origin on a public address).
    #[arg(long, env = env::ROWCAST_PUSH_ORIGINS, default_value = "")]
    pub push_origins: String,
    /// Web Push: how long a push service keeps an undelivered message.
    #[arg(long, env = env::ROWCAST_PUSH_TTL, default_value = "1d")]
    pub push_ttl: String,
    /// Web Push: subscriptions one user may register.
    #[arg(long, env = env::ROWCAST_PUSH_SUBSCRIPTIONS_PER_USER, default_value_t = 10)]
    pub push_subscriptions_per_user: usize,

    /// Debug-level logs.
    #[arg(long = "debug", env = env::REALTIME_DEBUG, default_value_t = false, value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub debug: bool,
}

impl Settings {
    /// The defaults, as if no flag and no environment variable were given.
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        Only::parse_from(["rowcast"]).settings
    }
}
