//! A Postgres server for tests and benchmarks (the one `DATABASE_URL` names,
//! or a throwaway [`Cluster`]) and databases of its own for each test or
//! measurement, copied from a template.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::{Client, NoTls};

use crate::cluster::{Cluster, ClusterError, ClusterOptions};

/// Where databases are created; a throwaway cluster is removed on drop.
pub struct Server {
    /// A URL of the server's `postgres` database, to create and drop others.
    admin_url: String,
    /// The throwaway cluster, when `DATABASE_URL` was not set.
    cluster: Option<Cluster>,
}

impl Server {
    /// The server `DATABASE_URL` names, or a new throwaway cluster (this
    /// blocks while the cluster starts).
    pub fn from_env_or_start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let external = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty());
        if let Some(admin_url) = external {
            return Ok(Self {
                admin_url,
                cluster: None,
            });
        }
        Self::start(options)
    }

    /// A new throwaway cluster, whatever `DATABASE_URL` says (for a version
    /// matrix; this blocks while the cluster starts).
    pub fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let cluster = Cluster::start(options)?;
        Ok(Self {
            admin_url: cluster.url("postgres"),
            cluster: Some(cluster),
        })
    }

    /// The throwaway cluster, when there is one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The URL of a database of this server.
    pub fn url(&self, database: &str) -> String {
        with_database(&self.admin_url, database)
    }

    /// Creates a database, from `template` when given; returns its URL.
    pub async fn create(
        &self,
        name: &str,
        template: Option<&str>,
    ) -> Result<String, tokio_postgres::Error> {
        let template = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        connect(&self.admin_url)
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}{template}"))
            .await?;
        Ok(self.url(name))
    }

    /// Drops a database (disconnecting its clients) and the inactive
    /// replication slots that point at it.
    pub async fn drop(&self, name: &str) -> Result<(), tokio_postgres::Error> {
        let admin = connect(&self.admin_url).await?;
        // A slot still in use is left; dropping the database then says why.
        let _ = admin
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                 WHERE database = $1 AND NOT active",
                &[&name],
            )
            .await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
    }

    /// Drops `name` if it exists and creates it empty; returns its URL.
    pub async fn recreate(&self, name: &str) -> Result<String, tokio_postgres::Error> {
        self.drop(name).await?;
        self.create(name, None).await
    }
}

/// A database name not used before by this process: `{prefix}_{pid}_{n}`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Replaces the database name of a URL, keeping its query.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, tail) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, rest) = tail.split_once('/').unwrap_or((tail, ""));
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{database}{query}")
}

/// Connects a plain client; its connection is driven on the current runtime.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
