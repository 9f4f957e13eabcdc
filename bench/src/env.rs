//! The bench's environment: a Postgres server (a throwaway durable cluster,
//! or the one `DATABASE_URL` names), a template database holding the demo
//! schema and seeded users, fresh databases copied from it for each
//! measurement, the JWT secret the relay and the clients share, and the
//! loopback source addresses handed to client processes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use rowcast_devkit::cluster::ClusterOptions;
use rowcast_devkit::database::{self, Server};
use rowcast_devkit::{demo, token};
use serde_json::json;
use tokio_postgres::Client;

/// Demo users seeded into the template (ids 1..=USERS): enough rooms
/// `user_{id}` for every scenario.
pub const USERS: i64 = 20_000;

/// The secret the relay verifies tokens with.
const SECRET: &str = "rowcast-bench-secret-0123456789abcdef";

/// A database of its own for one measurement.
#[derive(Clone, Debug)]
pub struct Db {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

/// Everything a scenario needs to start its processes.
pub struct Env {
    /// The Postgres server: a throwaway cluster, or the one `DATABASE_URL` names.
    server: Server,
    /// The template database's name.
    template: String,
    /// Where this executable is, to start the relay and the clients.
    pub exe: PathBuf,
    /// The next loopback source address to hand out (127.0.0.x).
    next_ip: AtomicU32,
}

impl Env {
    /// Starts (or reaches) Postgres and builds the template database.
    pub async fn start() -> anyhow::Result<Self> {
        if std::env::var_os("DATABASE_URL").is_none() {
            eprintln!("bench: starting a throwaway Postgres (fsync on)...");
        }
        let server = tokio::task::spawn_blocking(|| {
            Server::from_env_or_start(&ClusterOptions {
                durable: true,
                max_connections: 500,
                settings: statement_stats(),
                ..ClusterOptions::default()
            })
        })
        .await??;
        let env = Self {
            server,
            template: format!("rowcast_bench_tpl_{}", std::process::id()),
            exe: std::env::current_exe().context("locating rowcast-bench")?,
            next_ip: AtomicU32::new(2),
        };
        env.build_template().await?;
        Ok(env)
    }

    async fn build_template(&self) -> anyhow::Result<()> {
        let url = self
            .server
            .recreate(&self.template)
            .await
            .context("creating the template database")?;
        let client = connect(&url).await?;
        demo::apply_schema(&client)
            .await
            .context("applying the demo schema")?;
        client
            .batch_execute(&format!(
                "INSERT INTO users (id, username) SELECT g, 'user' || g FROM generate_series(1, {USERS}) g;
                 SELECT setval(pg_get_serial_sequence('users', 'id'), {USERS});
                 INSERT INTO content (id, author_id, title) VALUES (1, 1, 'bench');"
            ))
            .await
            .context("seeding the template database")?;
        client.batch_execute("VACUUM ANALYZE").await?;
        Ok(())
    }

    /// A fresh copy of the template: demo schema and users, no capture.
    pub async fn fresh_db(&self, tag: &str) -> anyhow::Result<Db> {
        let tag = tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let name = format!("{}_{tag}", database::unique_name("rowcast_bench"));
        let url = self
            .server
            .create(&name, Some(&self.template))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(Db { url, name })
    }

    /// Drops a database and the replication slots that point at it (the
    /// relay using it must be stopped).
    pub async fn drop_db(&self, db: &Db) {
        if let Err(e) = self.server.drop(&db.name).await {
            eprintln!("bench: could not drop {}: {e}", db.name);
        }
    }

    /// Drops the template; the cluster itself goes when the environment is dropped.
    pub async fn finish(self) {
        let _ = self.server.drop(&self.template).await;
    }

    /// The postmaster's pid when the cluster is local (for CPU accounting).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let cluster = self.server.cluster()?;
        let root = cluster.log_path().parent()?.to_path_buf();
        crate::sys::postmaster_pid(&root.join("data"))
    }

    /// The secret the relay is started with.
    pub fn secret(&self) -> &'static str {
        SECRET
    }

    /// A `role: "service"` token (it may join any room) for one subject.
    /// Every client uses the same subject, so presence runs once.
    pub fn token(&self) -> String {
        token::hs256(
            SECRET,
            json!("bench"),
            Duration::from_secs(86_400),
            json!({"role": "service"}),
        )
    }

    /// A user's token (no role): the rule in `realtime.authorize` decides
    /// what it may join, its rights can be taken away, and the relay caps
    /// its open connections (`ROWCAST_MAX_CONNECTIONS_PER_USER`).
    pub fn user_token(&self, user: i64) -> String {
        token::hs256(
            SECRET,
            json!(user.to_string()),
            Duration::from_secs(86_400),
            json!({}),
        )
    }

    /// A loopback source address not handed out before (127.0.0.2 onwards),
    /// so each client process has its own range of ephemeral ports.
    pub fn next_ip(&self) -> Ipv4Addr {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let host = 2 + (n - 2) % 250;
        Ipv4Addr::new(127, 0, 0, host as u8)
    }
}

/// Connects a plain client; its connection runs on the current runtime.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    database::connect(url)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))
}

/// The stored head (last seq) of a database with the relay's schema.
pub async fn head(client: &Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT head FROM realtime.state", &[])
        .await?
        .get(0))
}

/// Where the cluster's WAL insert position is, in bytes from `0/0`: the
/// difference of two readings is the WAL written in between, by every
/// session.
pub async fn wal_position(client: &Client) -> anyhow::Result<f64> {
    Ok(client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8",
            &[],
        )
        .await?
        .get(0))
}

/// `pg_stat_statements` preloaded, where the server build has it, so that
/// `capture` can say which statements a change costs.
fn statement_stats() -> Vec<(String, String)> {
    let Ok(bin) = rowcast_devkit::cluster::binaries() else {
        return Vec::new();
    };
    let lib = bin.join("../lib");
    let present = ["pg_stat_statements.so", "postgresql/pg_stat_statements.so"]
        .iter()
        .any(|name| lib.join(name).is_file());
    if !present {
        return Vec::new();
    }
    vec![(
        "shared_preload_libraries".into(),
        "pg_stat_statements".into(),
    )]
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    rowcast::parse_url(url)
        .map(|(config, _)| rowcast::describe(&config))
        .unwrap_or_else(|_| "the database".into())
}
