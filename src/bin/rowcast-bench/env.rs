//! The bench's environment: a Postgres server (a throwaway durable cluster,
//! or the one `DATABASE_URL` names), a template database holding the demo
//! schema and seeded users, fresh databases copied from it for each
//! measurement, the JWT secret the relay and the clients share, and the
//! loopback source addresses handed to client processes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use rowcast::cluster::{Cluster, ClusterOptions};
use tokio_postgres::{Client, NoTls};

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
    /// The throwaway cluster, when `DATABASE_URL` was not set.
    cluster: Option<Cluster>,
    /// A URL of the server, used to create and drop databases.
    admin_url: String,
    /// The template database's name.
    template: String,
    /// Where this executable is, to start the relay and the clients.
    pub exe: PathBuf,
    /// Databases made so far, for unique names.
    databases: AtomicU32,
    /// The next loopback source address to hand out (127.0.0.x).
    next_ip: AtomicU32,
}

impl Env {
    /// Starts (or reaches) Postgres and builds the template database.
    pub async fn start() -> anyhow::Result<Self> {
        let external = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty());
        let (admin_url, cluster) = match external {
            Some(url) => (url, None),
            None => {
                eprintln!("bench: starting a throwaway Postgres (fsync on)...");
                let cluster = tokio::task::spawn_blocking(|| {
                    Cluster::start(&ClusterOptions {
                        durable: true,
                        max_connections: 500,
                        ..ClusterOptions::default()
                    })
                })
                .await??;
                (cluster.url("postgres"), Some(cluster))
            }
        };
        let env = Self {
            cluster,
            admin_url,
            template: format!("rowcast_bench_tpl_{}", std::process::id()),
            exe: std::env::current_exe().context("locating rowcast-bench")?,
            databases: AtomicU32::new(0),
            next_ip: AtomicU32::new(2),
        };
        env.build_template().await?;
        Ok(env)
    }

    async fn build_template(&self) -> anyhow::Result<()> {
        let admin = connect(&self.admin_url).await?;
        for statement in ["DROP DATABASE IF EXISTS", "CREATE DATABASE"] {
            admin
                .batch_execute(&format!("{statement} {}", self.template))
                .await
                .context("creating the template database")?;
        }
        let client = connect(&with_database(&self.admin_url, &self.template)).await?;
        rowcast::dev::apply_demo_schema(&client)
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
        let name = format!(
            "rowcast_bench_{}_{}_{tag}",
            std::process::id(),
            self.databases.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&self.admin_url).await?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {}",
                self.template
            ))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(Db {
            url: with_database(&self.admin_url, &name),
            name,
        })
    }

    /// Drops a database and the replication slots that point at it (the
    /// relay using it must be stopped).
    pub async fn drop_db(&self, db: &Db) {
        let Ok(admin) = connect(&self.admin_url).await else {
            return;
        };
        let _ = admin
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                 WHERE database = $1 AND NOT active",
                &[&db.name],
            )
            .await;
        if let Err(e) = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name))
            .await
        {
            eprintln!("bench: could not drop {}: {e}", db.name);
        }
    }

    /// Drops the template; the cluster itself goes when the environment is dropped.
    pub async fn finish(self) {
        if let Ok(admin) = connect(&self.admin_url).await {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.template
                ))
                .await;
        }
        drop(self.cluster);
    }

    /// The postmaster's pid when the cluster is local (for CPU accounting).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let cluster = self.cluster.as_ref()?;
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
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 86_400;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "bench", "exp": exp, "role": "service"}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("HS256 signing cannot fail")
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
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The stored head (last seq) of a database with the relay's schema.
pub async fn head(client: &Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT head FROM realtime.state", &[])
        .await?
        .get(0))
}

/// A URL with another database name.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, tail) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, rest) = tail.split_once('/').unwrap_or((tail, ""));
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{database}{query}")
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    rowcast::db::parse_url(url)
        .map(|config| rowcast::db::describe(&config))
        .unwrap_or_else(|_| "the database".into())
}
