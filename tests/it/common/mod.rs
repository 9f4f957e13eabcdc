//! Test harness: a real Postgres (the one `DATABASE_URL` names, or a
//! throwaway cluster started once per test binary), a fresh database per
//! test so tests run in parallel, and helpers to run the relay in-process or
//! as the `rowcast` binary. What does not need rowcast's own types comes
//! from `rowcast_devkit` and is re-exported here.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rowcast::config::Config;
use rowcast::settings::Settings;
use rowcast::shutdown::Shutdown;
use rowcast::Relay;
use rowcast_devkit::cluster::{Cluster, ClusterOptions};
use rowcast_devkit::database::{self, Server};
use rowcast_devkit::demo;
use tokio_postgres::Client;

// Each test binary uses its own share of these.
#[allow(unused_imports)]
pub use rowcast_devkit::database::with_database;
#[allow(unused_imports)]
pub use rowcast_devkit::process::{rss_kib, RelayProcess};
pub use rowcast_devkit::wait::wait_for;

/// Whether a test that needs `tool` (`node`, `nats`, `schemathesis`) goes
/// on. A missing tool fails the test, so a green run means everything ran;
/// only `ROWCAST_TEST_SKIP` naming the tool (a comma-separated list, or
/// `all`) turns that into a skip, saying so.
pub fn required(tool: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    let skip = std::env::var("ROWCAST_TEST_SKIP").unwrap_or_default();
    if skip
        .split(',')
        .any(|t| t.trim() == tool || t.trim() == "all")
    {
        eprintln!("SKIPPED (ROWCAST_TEST_SKIP={skip}): {tool}: {why}");
        return false;
    }
    panic!("this test needs {tool}: {why}. `.ci/run` installs it; ROWCAST_TEST_SKIP={tool} skips it instead");
}

/// The JWT secret every test relay uses.
pub const SECRET: &str = "test-secret-0123456789abcdef";

/// Declares one test per capture mode for an `async fn(&str)` body.
#[macro_export]
macro_rules! in_both_modes {
    ($($name:ident => $body:ident),* $(,)?) => {
        mod trigger_mode {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$body("trigger").await })*
        }
        mod logical_mode {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$body("logical").await })*
        }
    };
}

/// Declares one test per Postgres version of the matrix and capture mode
/// for an `async fn(Pg, &str)` body: `default_pg` (the `DATABASE_URL` server
/// or the system's), `pg17` and `pg18`.
#[macro_export]
macro_rules! in_versions {
    ($($name:ident => $body:ident),* $(,)?) => {
        $crate::in_versions!(@at default_pg, $crate::common::Pg::DEFAULT, $($name => $body),*);
        $crate::in_versions!(@at pg17, $crate::common::Pg::of(17), $($name => $body),*);
        $crate::in_versions!(@at pg18, $crate::common::Pg::of(18), $($name => $body),*);
    };
    (@at $version:ident, $pg:expr, $($name:ident => $body:ident),*) => {
        mod $version {
            mod trigger_mode {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::super::$body($pg, "trigger").await })*
            }
            mod logical_mode {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::super::$body($pg, "logical").await })*
            }
        }
    };
}

/// Declares one test per Postgres version of the matrix for an
/// `async fn(Pg)` body.
#[macro_export]
macro_rules! on_versions {
    ($($name:ident => $body:ident),* $(,)?) => {
        mod default_pg {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$body($crate::common::Pg::DEFAULT).await })*
        }
        mod pg17 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$body($crate::common::Pg::of(17)).await })*
        }
        mod pg18 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$body($crate::common::Pg::of(18)).await })*
        }
    };
}

/// The Postgres a test runs on: the default server (`DATABASE_URL`, or a
/// throwaway cluster of the system's Postgres), or a throwaway cluster of
/// another major version ([`rowcast_devkit::releases`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pg(Option<u32>);

impl Pg {
    /// The default server.
    pub const DEFAULT: Pg = Pg(None);

    /// A throwaway cluster of this major version.
    pub const fn of(major: u32) -> Pg {
        Pg(Some(major))
    }

    /// The major version it names, `None` for the default server.
    pub fn major(self) -> Option<u32> {
        self.0
    }

    /// Cluster options for this version.
    pub fn options(self) -> ClusterOptions {
        let bin = self.0.map(|major| {
            rowcast_devkit::releases::binaries(major)
                .unwrap_or_else(|e| panic!("Postgres {major}: {e}"))
        });
        ClusterOptions {
            bin,
            ..ClusterOptions::default()
        }
    }

    /// A copy of the demo template on this version's shared server.
    pub async fn demo_db(self) -> TestDb {
        TestDb::create_on(shared_on(self), Some(&shared_on(self).template)).await
    }

    /// A private cluster of this version, for tests that stop or restart it.
    pub fn private_cluster(self) -> Cluster {
        Cluster::start(&self.options()).expect("start a private Postgres")
    }
}

/// The server tests create their databases on, and the template they copy.
struct TestServer {
    /// The server (a throwaway cluster lives as long as the process).
    server: Server,
    /// Name of the template database holding the demo schema and migrations.
    template: String,
}

fn shared() -> &'static TestServer {
    shared_on(Pg::DEFAULT)
}

/// The shared server of a version, started on first use.
fn shared_on(pg: Pg) -> &'static TestServer {
    static SHARED: Mutex<Vec<(Pg, &'static TestServer)>> = Mutex::new(Vec::new());
    let mut started = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, shared)) = started.iter().find(|(at, _)| *at == pg) {
        return shared;
    }
    let shared: &'static TestServer = Box::leak(Box::new(
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(start_shared(pg))
        })
        .join()
        .expect("test server setup"),
    ));
    started.push((pg, shared));
    shared
}

async fn start_shared(pg: Pg) -> TestServer {
    let server = match pg {
        Pg::DEFAULT => Server::from_env_or_start(&pg.options()),
        _ => Server::start(&pg.options()),
    }
    .expect("start a throwaway Postgres");
    let template = format!("rowcast_tpl_{}", std::process::id());
    let url = server
        .recreate(&template)
        .await
        .expect("create the template database");
    demo::apply_schema(&connect(&url).await)
        .await
        .expect("demo schema");
    let config = config_for(&url, "trigger");
    rowcast::migrate(&config.database)
        .await
        .expect("migrations");
    TestServer { server, template }
}

/// The admin URL and the template database's name of the test Postgres,
/// for test harnesses outside Rust (the JS client's integration tests).
pub fn server_urls() -> (String, String) {
    let shared = shared();
    (shared.server.url("postgres"), shared.template.clone())
}

/// Connects a plain client (its connection is driven on the current runtime).
pub async fn connect(url: &str) -> Client {
    database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// A database of its own for one test.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// A copy of the template: demo schema, rules and the relay's schema.
    pub async fn demo() -> Self {
        Self::create(Some(&shared().template)).await
    }

    /// An empty database.
    pub async fn blank() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        Self::create_on(shared(), template).await
    }

    async fn create_on(shared: &TestServer, template: Option<&str>) -> Self {
        let name = database::unique_name("t");
        let url = shared
            .server
            .create(&name, template)
            .await
            .expect("create test database");
        Self { url, name }
    }

    /// A new client of this database.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

/// A relay configuration for a test database.
pub fn config_for(url: &str, capture: &str) -> Config {
    let mut settings = Settings::defaults();
    settings.database_url = Some(url.to_string());
    settings.capture = capture.to_string();
    settings.jwt_secret = Some(SECRET.to_string());
    settings.bind = "127.0.0.1".into();
    settings.port = "0".into();
    settings.poll_interval = "200ms".into();
    settings.startup_timeout = "5s".into();
    settings.db_pool = 8;
    Config::load(&settings).expect("test config")
}

/// Starts the relay in-process.
pub async fn start_relay(db: &TestDb, capture: &str) -> Relay {
    start_relay_with(config_for(&db.url, capture)).await
}

/// Starts the relay in-process with a given config.
pub async fn start_relay_with(config: Config) -> Relay {
    if std::env::var_os("ROWCAST_TEST_LOG").is_some() {
        rowcast::init_logs(true);
    }
    Relay::start(config, Shutdown::new())
        .await
        .unwrap_or_else(|e| panic!("relay start: {e}"))
}

/// Stops an in-process relay.
pub async fn stop_relay(relay: Relay) {
    relay.shutdown();
    relay.wait().await.expect("relay stopped cleanly");
}

/// The stored head.
pub async fn head(client: &Client) -> i64 {
    client
        .query_one("SELECT head FROM realtime.state", &[])
        .await
        .expect("read head")
        .get(0)
}

/// Publishes a marker event and waits until it is stored; returns its seq.
/// Everything committed before the marker is stored before it.
pub async fn barrier(client: &Client) -> i64 {
    let token = format!("{}", rand_u64());
    client
        .execute(
            "SELECT realtime.publish(ARRAY['test_barrier'], 'barrier', jsonb_build_object('token', $1::text))",
            &[&token],
        )
        .await
        .expect("publish barrier");
    wait_for("the barrier event", Duration::from_secs(20), || async {
        client
            .query_opt(
                "SELECT seq FROM realtime.outbox WHERE event = 'barrier' AND data->>'token' = $1",
                &[&token],
            )
            .await
            .ok()
            .flatten()
            .map(|row| row.get::<_, i64>(0))
    })
    .await
}

pub fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    hasher.finish()
}

/// A barrier that is also fanned out by `relay`'s hub: frames of
/// everything committed before it are in the members' queues once this
/// returns (a barrier alone is only stored).
pub async fn barrier_delivered(client: &Client, relay: &Relay) -> i64 {
    let seq = barrier(client).await;
    wait_for(
        "the hub to reach the barrier",
        Duration::from_secs(20),
        || async { (relay.hub.head() >= seq).then_some(()) },
    )
    .await;
    seq
}

/// A stored event as tests read it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub seq: i64,
    pub event: String,
    pub rooms: Vec<String>,
    pub data: serde_json::Value,
    pub old: Option<serde_json::Value>,
    pub count: Option<i32>,
}

/// Stored events with `after < seq <= until`, barriers excluded.
pub async fn stored_between(client: &Client, after: i64, until: i64) -> Vec<Stored> {
    client
        .query(
            "SELECT seq, event, rooms, data::jsonb, old::jsonb, count FROM realtime.outbox
             WHERE seq > $1 AND seq <= $2 AND event <> 'barrier' ORDER BY seq",
            &[&after, &until],
        )
        .await
        .expect("read outbox")
        .iter()
        .map(|row| Stored {
            seq: row.get(0),
            event: row.get(1),
            rooms: row.get(2),
            data: row.get(3),
            old: row.get(4),
            count: row.get(5),
        })
        .collect()
}

/// Stores about 48 MB of events in `room` (3,000 `bulk` events of 16 kB),
/// for clients that stop reading.
pub async fn publish_backlog(client: &Client, room: &str) {
    let payload = "y".repeat(16_000);
    for _ in 0..30 {
        client
            .execute(
                "SELECT realtime.publish(ARRAY[$2::text], 'bulk', jsonb_build_object('pad', $1::text, 'n', g))
                 FROM generate_series(1, 100) g",
                &[&payload, &room],
            )
            .await
            .unwrap();
    }
}

/// Waits until the relay at `addr` closed a connection whose send queue
/// overflowed; returns how many it closed so.
pub async fn queue_overflowed(addr: std::net::SocketAddr) -> f64 {
    wait_for(
        "the send queue to overflow",
        Duration::from_secs(60),
        || async {
            let overflows =
                rowcast_devkit::http::metric(addr, "rowcast_queue_overflows_total").await;
            (overflows >= 1.0).then_some(overflows)
        },
    )
    .await
}

/// An exclusive lock (flock) on `path`, held until the returned file is
/// dropped or the process ends: test binaries sharing an installed
/// toolchain (`node_modules`, a Python venv) install it one at a time.
pub fn file_lock(path: &std::path::Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        locked,
        0,
        "lock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    file
}

/// The capture modes every catalog test runs in.
pub const MODES: [&str; 2] = ["trigger", "logical"];

/// Runs the `rowcast` binary with the given environment.
pub fn relay_binary(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rowcast"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("JWT_SECRET", SECRET)
        .env(
            "ROWCAST_ROUTES",
            concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml"),
        )
        .env("ROWCAST_STARTUP_TIMEOUT", "2s")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Starts `rowcast serve` against a test database.
pub fn spawn_relay_binary(db: &TestDb, capture: &str, extra: &[(&str, &str)]) -> RelayProcess {
    let mut command = serve_command(&db.url, capture, extra);
    command.stderr(Stdio::inherit());
    RelayProcess::spawn(command).expect("spawn rowcast")
}

/// `rowcast serve` against the database at `url` (stdout discarded; the
/// caller picks where stderr goes).
pub fn serve_command(url: &str, capture: &str, extra: &[(&str, &str)]) -> Command {
    let mut env = vec![
        ("DATABASE_URL", url),
        ("ROWCAST_CAPTURE", capture),
        ("SOCKET_PORT", "0"),
        ("ROWCAST_BIND", "127.0.0.1"),
        ("ROWCAST_POLL_INTERVAL", "200ms"),
    ];
    env.extend_from_slice(extra);
    let mut command = relay_binary(&["serve"], &env);
    command.stdout(Stdio::null());
    command
}

/// The one `bigint` a query without parameters answers, or `None` while
/// the database cannot answer it (for polling with [`wait_for`]).
pub async fn scalar(client: &Client, sql: &str) -> Option<i64> {
    client.query_one(sql, &[]).await.ok()?.try_get(0).ok()
}

/// Makes content `id` private: members who are neither its author nor a
/// friend lose its room.
pub async fn make_private(client: &Client, id: i64) {
    client
        .execute(
            "UPDATE content SET visibility = 'private' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
}

/// The first column of every row a query without parameters answers, as
/// `bigint`s.
pub async fn bigints(client: &Client, sql: &str) -> Vec<i64> {
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

/// Starts `rowcast serve` against a test database and waits until it has
/// installed capture (`client` is a client of that database).
pub async fn spawn_capturing_relay(db: &TestDb, client: &Client, capture: &str) -> RelayProcess {
    let relay = spawn_relay_binary(db, capture, &[]);
    wait_for(
        "the relay to install capture",
        Duration::from_secs(30),
        || async {
            let n = scalar(
                client,
                "SELECT count(*) FROM realtime.state WHERE capture_mode IS NOT NULL",
            )
            .await?;
            (n == 1).then_some(())
        },
    )
    .await;
    relay
}

/// Starts `rowcast serve` on a free port and waits until it accepts
/// connections.
pub async fn spawn_listening_relay(
    db: &TestDb,
    capture: &str,
    extra: &[(&str, &str)],
) -> (RelayProcess, std::net::SocketAddr) {
    spawn_relay_on(db, capture, rowcast_devkit::process::free_port(), extra).await
}

/// Starts `rowcast serve` on `port` and waits until it accepts
/// connections (a restarted relay keeps its clients' address).
pub async fn spawn_relay_on(
    db: &TestDb,
    capture: &str,
    port: u16,
    extra: &[(&str, &str)],
) -> (RelayProcess, std::net::SocketAddr) {
    let port_text = port.to_string();
    let mut env: Vec<(&str, &str)> = vec![("SOCKET_PORT", &port_text)];
    env.extend_from_slice(extra);
    let mut relay = spawn_relay_binary(db, capture, &env);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        relay.ready(addr, Duration::from_secs(60)).await,
        "the relay did not become ready on {addr}"
    );
    (relay, addr)
}

/// A private cluster for tests that restart Postgres.
pub fn private_cluster() -> Cluster {
    Cluster::start(&ClusterOptions::default()).expect("start a private Postgres")
}

/// Creates the demo schema in a fresh database of a private cluster.
pub async fn private_demo_db(cluster: &Cluster) -> TestDb {
    let admin = connect(&cluster.url("postgres")).await;
    admin
        .batch_execute("CREATE DATABASE demo")
        .await
        .expect("create demo db");
    let url = cluster.url("demo");
    demo::apply_schema(&connect(&url).await)
        .await
        .expect("demo schema");
    TestDb {
        url,
        name: "demo".into(),
    }
}

/// Seeds a few users, content and friendships used by most tests.
pub async fn insert_basic_rows(client: &Client) {
    client
        .batch_execute(
            "INSERT INTO users (id, username, email, password_hash) VALUES
                (1, 'alice', 'alice@secret.example', 'hash-alice'),
                (2, 'bob', 'bob@secret.example', 'hash-bob'),
                (3, 'carol', 'carol@secret.example', 'hash-carol'),
                (4, 'dave', 'dave@secret.example', 'hash-dave');
             INSERT INTO friendships (user_a, user_b) VALUES (1, 2);
             SELECT setval(pg_get_serial_sequence('users', 'id'), 100);",
        )
        .await
        .expect("basic rows");
}
/// A demo database with [`insert_basic_rows`]'s rows and two public posts:
/// 10 by user 1 and 11 by user 2.
pub async fn public_posts_db() -> (TestDb, Client) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    insert_basic_rows(&client).await;
    client
        .batch_execute(
            "INSERT INTO content (id, author_id, title, visibility) VALUES
                (10, 1, 'hello', 'public'), (11, 2, 'other', 'public')",
        )
        .await
        .expect("public posts");
    (db, client)
}

/// A test database with [`insert_basic_rows`]'s rows and the relay running on it.
pub async fn basic_relay(mode: &str) -> (TestDb, Client, Relay) {
    basic_relay_on(Pg::DEFAULT, mode).await
}

/// [`basic_relay`] on a version of the matrix.
pub async fn basic_relay_on(pg: Pg, mode: &str) -> (TestDb, Client, Relay) {
    let db = pg.demo_db().await;
    let client = db.client().await;
    insert_basic_rows(&client).await;
    let relay = start_relay(&db, mode).await;
    (db, client, relay)
}

/// Users, a friendship, and content, calendars, albums, media and a diary
/// of every visibility: the rows the authorization matrix is about.
pub const MATRIX_ROWS: &str = "
    INSERT INTO users (id, username, email, password_hash) VALUES
        (1, 'alice', 'a@secret.example', 'hash-a'), (2, 'bob', 'b@secret.example', 'hash-b'),
        (3, 'carol', 'c@secret.example', 'hash-c'), (4, 'dave', 'd@secret.example', 'hash-d');
    INSERT INTO friendships (user_a, user_b) VALUES (1, 2);
    INSERT INTO content (id, author_id, title, visibility) VALUES
        (10, 1, 'public', 'public'), (11, 1, 'friends', 'friends'), (12, 1, 'private', 'private');
    INSERT INTO calendars (id, owner_id, name) VALUES (20, 1, 'cal');
    INSERT INTO calendar_events (id, calendar_id, title) VALUES (21, 20, 'ev');
    INSERT INTO calendar_invites (id, event_id, calendar_id, inviter_id, invitee_id) VALUES (22, 21, 20, 1, 4);
    INSERT INTO albums (id, owner_id, title, visibility) VALUES (30, 1, 'pub', 'public'), (31, 1, 'priv', 'private');
    INSERT INTO media (id, owner_id, url, visibility) VALUES (40, 1, 'u', 'public'), (41, 1, 'u', 'private');
    INSERT INTO diaries (id, owner_id, title) VALUES (50, 1, 'd');";

/// A test database with [`MATRIX_ROWS`] and the relay running on it.
pub async fn seeded_relay(mode: &str) -> (TestDb, Client, Relay) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    let relay = start_relay(&db, mode).await;
    (db, client, relay)
}

/// Stored presence statuses of `user` in their own room, oldest first.
pub async fn statuses(client: &Client, user: &str) -> Vec<String> {
    client
        .query(
            "SELECT data->>'status' FROM realtime.events
             WHERE event = 'user-status-changed' AND room = $1 AND data->>'user_id' = $2
             ORDER BY seq",
            &[&format!("user_{user}"), &user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub mod burst;
pub mod catalog;
pub mod driver;
pub mod node;
pub mod peers;
pub mod schemathesis;
pub mod ws;
