//! Test harness: a real Postgres (the one `DATABASE_URL` names, or a
//! throwaway cluster started once per test binary), a fresh database per
//! test so tests run in parallel, and helpers to run the relay in-process or
//! as the `rowcast` binary.
#![allow(dead_code)]

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rowcast::cli::Settings;
use rowcast::cluster::{Cluster, ClusterOptions};
use rowcast::config::Config;
use rowcast::relay::Relay;
use rowcast::shutdown::Shutdown;
use tokio_postgres::{Client, NoTls};

/// The JWT secret every test relay uses.
pub const SECRET: &str = "test-secret-0123456789abcdef";

/// Where test databases are created.
struct Server {
    /// Admin URL without a database name suffix applied (`{db}` placeholder).
    base: String,
    /// Name of the template database holding the demo schema and migrations.
    template: String,
    /// Keeps a throwaway cluster alive for the process.
    _cluster: Option<Cluster>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(start_server())
        })
        .join()
        .expect("test server setup")
    })
}

async fn start_server() -> Server {
    let (base, cluster) = match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => (url, None),
        None => {
            let cluster =
                Cluster::start(&ClusterOptions::default()).expect("start a throwaway Postgres");
            (cluster.url("postgres"), Some(cluster))
        }
    };
    let template = format!("rowcast_tpl_{}", std::process::id());
    let admin = connect(&base).await;
    for statement in [
        format!("DROP DATABASE IF EXISTS {template}"),
        format!("CREATE DATABASE {template}"),
    ] {
        admin
            .batch_execute(&statement)
            .await
            .expect("create the template database");
    }
    let url = with_database(&base, &template);
    {
        let client = connect(&url).await;
        rowcast::dev::apply_demo_schema(&client)
            .await
            .expect("demo schema");
    }
    let config = config_for(&url, "trigger");
    rowcast::schema::migrate(&config.database)
        .await
        .expect("migrations");
    Server {
        base,
        template,
        _cluster: cluster,
    }
}

/// The admin URL and the template database's name of the test Postgres,
/// for test harnesses outside Rust (the JS client's integration tests).
pub fn server_urls() -> (String, String) {
    let server = server();
    (server.base.clone(), server.template.clone())
}

/// Replaces the database name of a URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (head, tail) = url.split_once("://").expect("a URL");
    let (authority, rest) = tail.split_once('/').unwrap_or((tail, ""));
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{head}://{authority}/{database}{query}")
}

/// Connects a plain client (its connection is driven on the current runtime).
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    tokio::spawn(connection);
    client
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
        Self::create(Some(&server().template)).await
    }

    /// An empty database.
    pub async fn blank() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&server().base).await;
        let template = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}{template}"))
            .await
            .expect("create test database");
        Self {
            url: with_database(&server().base, &name),
            name,
        }
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
        rowcast::telemetry::init_logs(true);
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

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > until {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

fn rand_u64() -> u64 {
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

/// The capture modes every catalog test runs in.
pub const MODES: [&str; 2] = ["trigger", "logical"];

/// Runs the `rowcast` binary with the given environment.
pub fn relay_binary(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rowcast"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("JWT_SECRET", SECRET)
        .env("ROWCAST_STARTUP_TIMEOUT", "2s")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// A `rowcast serve` process, killed when dropped (also when a test
/// panics), and killed by the kernel if the test process dies.
pub struct RelayProcess(Child);

impl RelayProcess {
    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `rowcast serve` against a test database.
pub fn spawn_relay_binary(db: &TestDb, capture: &str, extra: &[(&str, &str)]) -> RelayProcess {
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("ROWCAST_CAPTURE", capture),
        ("SOCKET_PORT", "0"),
        ("ROWCAST_BIND", "127.0.0.1"),
        ("ROWCAST_POLL_INTERVAL", "200ms"),
    ];
    env.extend_from_slice(extra);
    let mut command = relay_binary(&["serve"], &env);
    command.stdout(Stdio::null()).stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe; it only marks the child to be
    // killed when the thread that spawned it (a test thread) exits.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    RelayProcess(command.spawn().expect("spawn rowcast"))
}

/// Starts `rowcast serve` on a free port and waits until it accepts
/// connections.
pub async fn spawn_listening_relay(
    db: &TestDb,
    capture: &str,
    extra: &[(&str, &str)],
) -> (RelayProcess, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let port_text = port.to_string();
    let mut env: Vec<(&str, &str)> = vec![("SOCKET_PORT", &port_text)];
    env.extend_from_slice(extra);
    let relay = spawn_relay_binary(db, capture, &env);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("the relay to listen", Duration::from_secs(60), || async {
        let (status, _) = ws::try_http(addr, "GET", "/readyz").await?;
        (status == 200).then_some(())
    })
    .await;
    (relay, addr)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
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
    let client = connect(&url).await;
    rowcast::dev::apply_demo_schema(&client)
        .await
        .expect("demo schema");
    TestDb {
        url,
        name: "demo".into(),
    }
}

/// Seeds a few users, content and friendships used by most tests.
pub async fn seed_basic(client: &Client) {
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
        .expect("seed");
}
pub mod burst;
pub mod catalog;
pub mod ws;
