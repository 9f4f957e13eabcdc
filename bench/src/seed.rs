//! The seed stand-in under test (`bench/seed/`): the Node.js Socket.IO
//! server rowcast replaces, reduced to what carries an event. Its triggers
//! (`bench/seed/triggers.sql`) call `pg_notify` with each changed row; one
//! Node process LISTENs and emits `message-sent` / `message-received` to
//! `user_{id}` rooms. It runs on a fresh copy of the template database,
//! without rowcast's capture, so the writers' rows are the same as in the
//! relay's runs and only the path to the client differs.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use rowcast_devkit::process;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::env::{self, Db, Env};
use crate::nodejs;

/// The seed's triggers.
const TRIGGERS: &str = include_str!("../seed/triggers.sql");

/// How long the server may take to print `listening`.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A running seed server; killed when dropped.
pub struct SeedProc {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl SeedProc {
    /// Installs the triggers on `db` and starts the server on it.
    pub async fn start(env: &Env, db: &Db) -> anyhow::Result<Self> {
        let client = env::connect(&db.url).await?;
        client
            .batch_execute(TRIGGERS)
            .await
            .context("installing the seed's triggers")?;
        drop(client);
        let dir = nodejs::seed_dir();
        nodejs::install(&dir).await?;
        let port = process::free_port();
        let mut command = std::process::Command::new("node");
        command
            .arg(dir.join("server.js"))
            .env("PORT", port.to_string())
            .env("DATABASE_URL", &db.url)
            .env("JWT_SECRET", env.secret())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        process::dies_with_parent(&mut command);
        let mut command = Command::from(command);
        command.kill_on_drop(true);
        let mut child = command.spawn().context("starting the seed server (node)")?;
        let stdout = child.stdout.take().context("seed stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(READY_DEADLINE, lines.next_line())
            .await
            .context("the seed server did not start in time")??;
        match line {
            Some(line) if line.starts_with("listening") => {}
            other => bail!("the seed server did not start: {other:?}"),
        }
        // Nothing more is read; keep the pipe drained so it never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let pid = child.id().context("the seed server exited")?;
        Ok(Self {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub async fn stop(mut self) {
        // SAFETY: kill only sends a signal to the child's pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
