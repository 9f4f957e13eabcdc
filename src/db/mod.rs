//! Reaching Postgres: parsing `DATABASE_URL`, the one runtime pool, and the
//! single place that decides whether a database error is worth retrying.
//!
//! Every runtime query goes through one deadpool of tokio-postgres clients;
//! the only other connections are the LISTEN socket (trigger mode) and the
//! replication stream (logical mode), which a pool cannot serve.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use rand::Rng;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

pub use session::Session;
pub use tls::{Tls, TlsError};

mod session;
mod tls;

/// The database connection, with its password kept out of every printout.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// Parsed `DATABASE_URL`.
    pub pg: tokio_postgres::Config,
    /// `sslmode` and `sslrootcert`, for every session the relay opens.
    pub tls: Tls,
    /// Connections in the runtime pool (authorization, history, the outbox writer).
    pub pool_size: usize,
    /// How long startup keeps retrying an unreachable database before giving up.
    pub startup_timeout: Duration,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", describe(&self.pg))
    }
}

/// Why `DATABASE_URL` cannot be used. No variant repeats the URL, since
/// it may hold a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Empty or unset.
    #[error("not set (for example postgres://user:password@localhost:5432/app)")]
    NotSet,
    /// Neither a `postgres://` URL nor a key=value string.
    #[error("not a Postgres URL (expected postgres://user:password@host:port/database)")]
    NotPostgres,
    /// A `postgres://` URL or key=value string that does not parse.
    #[error("not a valid Postgres URL (expected postgres://user:password@host:port/database)")]
    Invalid,
    /// An `sslmode` libpq does not know.
    #[error("sslmode `{0}` is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    /// Root certificates that cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Parses a `postgres://` URL (or a key=value connection string) with
/// `tokio_postgres::Config`, once `sslmode` and `sslrootcert` are taken
/// out (see `Tls::extract`).
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, Tls), UrlError> {
    if url.trim().is_empty() {
        return Err(UrlError::NotSet);
    }
    let trimmed = url.trim();
    let looks_like_url = trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://");
    if !looks_like_url && !trimmed.contains('=') {
        return Err(UrlError::NotPostgres);
    }
    let (url, tls) = Tls::extract(trimmed, |name| std::env::var(name).ok())?;
    let mut pg = tokio_postgres::Config::from_str(&url).map_err(|_| UrlError::Invalid)?;
    if pg.get_hosts().is_empty() {
        pg.host("localhost");
    }
    if pg.get_user().is_none() {
        pg.user("postgres");
    }
    if pg.get_dbname().is_none() {
        let user = pg.get_user().unwrap_or("postgres").to_string();
        pg.dbname(&user);
    }
    pg.ssl_mode(tls.pg_ssl_mode());
    Ok((pg, tls))
}

impl DatabaseConfig {
    /// The config of a `DATABASE_URL`, with one pooled connection and a
    /// 10 s startup timeout (what the one-shot commands use); `serve` sets
    /// its own. An unreadable root certificate is refused here, as a
    /// setting problem.
    pub fn from_url(url: &str) -> Result<Self, UrlError> {
        let (pg, tls) = parse_url(url)?;
        tls.client_config()?;
        Ok(Self {
            pg,
            tls,
            pool_size: 1,
            startup_timeout: Duration::from_secs(10),
        })
    }
}

/// A printable description of where a config points, without the password.
pub fn describe(pg: &tokio_postgres::Config) -> String {
    let endpoints = Endpoint::all(pg);
    let hosts: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{}:{}", e.host, e.port))
        .collect();
    format!(
        "postgres://{}@{}/{}",
        endpoints[0].user,
        hosts.join(","),
        endpoints[0].dbname
    )
}

/// The host, port, user, password and database of a config, for clients
/// other than tokio-postgres (migrations, replication).
#[derive(Clone)]
pub struct Endpoint {
    /// Hostname, IP, or a Unix socket directory (starting with `/`).
    pub host: String,
    /// TCP port, or the Unix socket's port suffix.
    pub port: u16,
    /// Role name.
    pub user: String,
    /// Password, empty when none.
    pub password: String,
    /// Database name.
    pub dbname: String,
}

impl Endpoint {
    /// Every host of a config, in order, each with its port (one port for
    /// all of them, or one each, as libpq reads a multi-host URL).
    pub fn all(pg: &tokio_postgres::Config) -> Vec<Self> {
        let ports = pg.get_ports();
        let port = |i: usize| match ports.len() {
            0 => 5432,
            1 => ports[0],
            _ => ports.get(i).copied().unwrap_or(5432),
        };
        let host = |h: &Host| match h {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        };
        let hosts: Vec<String> = match pg.get_hosts() {
            [] => vec!["localhost".into()],
            hosts => hosts.iter().map(host).collect(),
        };
        let user = pg.get_user().unwrap_or("postgres").to_string();
        let password = pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let dbname = pg.get_dbname().unwrap_or("postgres").to_string();
        hosts
            .into_iter()
            .enumerate()
            .map(|(i, host)| Self {
                host,
                port: port(i),
                user: user.clone(),
                password: password.clone(),
                dbname: dbname.clone(),
            })
            .collect()
    }

    /// The host for a session no pool can hold (the replication stream,
    /// migrations). With one host, that host. With several, the first that
    /// accepts a session meeting `target_session_attrs`, tried in order as
    /// libpq and the pool do, so every session of the relay follows the
    /// primary through a failover.
    pub async fn find(database: &DatabaseConfig) -> Result<Self, DbError> {
        let mut endpoints = Self::all(&database.pg);
        if endpoints.len() == 1 {
            return Ok(endpoints.swap_remove(0));
        }
        let tls = database.tls.connector()?;
        let mut last = None;
        for endpoint in endpoints {
            let pg = endpoint.config(&database.pg);
            match pg.connect(tls.clone()).await {
                Ok((client, connection)) => {
                    drop(client);
                    drop(connection);
                    return Ok(endpoint);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(
            || DbError::Retry("no host to connect to".into()),
            DbError::from,
        ))
    }

    /// `pg` narrowed to this one host.
    fn config(&self, pg: &tokio_postgres::Config) -> tokio_postgres::Config {
        let mut one = tokio_postgres::Config::new();
        one.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .ssl_mode(pg.get_ssl_mode())
            .target_session_attrs(pg.get_target_session_attrs())
            .connect_timeout(
                pg.get_connect_timeout()
                    .copied()
                    .unwrap_or(Duration::from_secs(5)),
            )
            .application_name("rowcast probe");
        if let Some(password) = pg.get_password() {
            one.password(password);
        }
        if let Some(options) = pg.get_options() {
            one.options(options);
        }
        one
    }
}

/// Builds the runtime pool. Connections are opened lazily.
pub fn pool(config: &DatabaseConfig) -> Result<Pool, DbError> {
    pool_of(config, config.pool_size, "rowcast")
}

/// A pool of `size` sessions named `name` (`application_name`), for one
/// kind of work, so that no kind waits behind another.
pub fn pool_of(config: &DatabaseConfig, size: usize, name: &str) -> Result<Pool, DbError> {
    let mut pg = pinned(&config.pg);
    pg.application_name(name);
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(5));
    }
    let manager = Manager::from_config(
        pg,
        config.tls.connector()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// The search path of every relay session (pool, LISTEN, replication):
/// rowcast qualifies every name it uses, so nothing on a schema another
/// role can write to can stand in for a table or function of its own.
pub const SEARCH_PATH_OPTION: &str = "-c search_path=pg_catalog,pg_temp";

/// `pg` with the relay's pinned search path added to its options.
pub fn pinned(pg: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut pg = pg.clone();
    let options = match pg.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {SEARCH_PATH_OPTION}"),
        _ => SEARCH_PATH_OPTION.to_string(),
    };
    pg.options(options);
    pg
}

/// Waits until the database answers, retrying with backoff until `timeout`.
pub async fn wait_until_reachable(pool: &Pool, timeout: Duration) -> Result<(), DbError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let attempt = async {
            let client = pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok::<_, DbError>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "database not reachable yet");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A database failure, classified once.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A query or connection failed.
    #[error("{}", describe_pg_error(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("database pool: {0}")]
    Pool(String),
    /// A condition that clears by itself (a dropped LISTEN socket, rows
    /// not yet visible): retry after a backoff.
    #[error("{0}")]
    Retry(String),
    /// The TLS settings cannot be used (an unreadable root certificate).
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => Self::Postgres(e),
            other => Self::Pool(other.to_string()),
        }
    }
}

impl DbError {
    /// Whether waiting and trying again can help: the connection dropped, the
    /// server is restarting or overloaded, or a transaction lost a race.
    /// Everything else (a missing table, bad SQL, bad credentials) is fatal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Pool(_) | Self::Retry(_) => true,
            Self::Postgres(e) => is_transient(e),
            Self::Tls(_) => false,
        }
    }

    /// The SQLSTATE of a server-side error.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Postgres(e) => e.code(),
            Self::Pool(_) | Self::Retry(_) | Self::Tls(_) => None,
        }
    }
}

/// The one rule for tokio-postgres errors; see [`DbError::is_transient`].
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let class = &code.code()[..2];
            class == "08"
                || class == "57"
                || class == "53"
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
        // A certificate or TLS setting problem does not clear by itself.
        None if is_tls_failure(e) => false,
        // No SQLSTATE: the socket failed or the connection could not be made.
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            e.to_string().contains("connection") || e.to_string().contains("timed out")
        }
    }
}

/// A one-line description of a Postgres error: its message and, for
/// server errors, the SQLSTATE. Never includes connection parameters.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let more = s.to_string();
                if !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                source = s.source();
            }
            text
        }
    }
}

/// Whether a connection failed in TLS: the server refused it, or its
/// certificate was not trusted.
fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    if e.to_string().contains("TLS") {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let rustls = s.is::<rustls::Error>()
            || s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>());
        if rustls {
            return true;
        }
        source = s.source();
    }
    false
}

/// Exponential backoff with full jitter: each delay is uniform in
/// `[0, min(max, base * 2^attempt)]`, so many relays restarting together
/// do not hammer a recovering database in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first ceiling.
    base: Duration,
    /// The largest ceiling.
    max: Duration,
    /// Consecutive failures so far.
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    /// Called after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_describe_without_password() {
        let (pg, _) = parse_url("postgres://app:s3cret@db.internal:6432/shop").unwrap();
        let text = describe(&pg);
        assert_eq!(text, "postgres://app@db.internal:6432/shop");
        assert!(!text.contains("s3cret"));
        let (pg, _) = parse_url("postgres://app:s3cret@h1:5432,h2:5433/shop").unwrap();
        assert_eq!(describe(&pg), "postgres://app@h1:5432,h2:5433/shop");
    }

    #[test]
    fn every_host_of_a_multi_host_url_is_an_endpoint() {
        let (pg, _) =
            parse_url("postgres://app:pw@h1:5432,h2:5433/shop?target_session_attrs=primary")
                .unwrap();
        let endpoints: Vec<(String, u16)> = Endpoint::all(&pg)
            .into_iter()
            .map(|e| (e.host, e.port))
            .collect();
        assert_eq!(endpoints, [("h1".into(), 5432), ("h2".into(), 5433)]);
        assert_eq!(
            pg.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        let (pg, _) = parse_url("host=h1,h2 port=6432 dbname=shop").unwrap();
        let ports: Vec<u16> = Endpoint::all(&pg).iter().map(|e| e.port).collect();
        assert_eq!(ports, [6432, 6432]);
    }

    #[test]
    fn bad_urls_do_not_echo_the_input() {
        let err = parse_url("mysql://root:topsecret@x/y").unwrap_err();
        assert_eq!(err, UrlError::NotPostgres);
        let err = parse_url("postgres://u:topsecret@host:notaport/db").unwrap_err();
        assert_eq!(err, UrlError::Invalid);
        assert!(!err.to_string().contains("topsecret"));
        assert_eq!(parse_url("  ").unwrap_err(), UrlError::NotSet);
    }

    #[test]
    fn key_value_passwords_may_hold_spaces() {
        let (pg, _) = parse_url("host=db user=app password='a b' dbname=shop").unwrap();
        assert_eq!(pg.get_password(), Some(&b"a b"[..]));
        assert_eq!(describe(&pg), "postgres://app@db:5432/shop");
        let (pg, _) = parse_url("postgres://app:a%20b@db/shop?sslmode=require").unwrap();
        assert_eq!(pg.get_password(), Some(&b"a b"[..]));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
