//! The relay under test, in its own process so that its memory and CPU can
//! be measured apart from the load generator. The bench re-executes itself
//! as the hidden `relay` subcommand, whose flags are rowcast's own
//! [`Settings`]: it builds a [`Config`] with [`Config::load`] and runs
//! [`Relay::start`] until SIGTERM, exactly as `rowcast serve` would.

use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use rowcast::config::Config;
use rowcast::settings::Settings;
use rowcast::shutdown::{self, Shutdown};
use rowcast::Relay;
use rowcast_devkit::http;
use rowcast_devkit::process::{self, RelayProcess};

use crate::env::{Db, Env};
use crate::sys;
use crate::CaptureMode;

/// Limits raised for the bench: one client IP opens thousands of
/// connections, and stalled clients join many rooms quickly. (Service
/// tokens are not capped per user; the user-token scenarios open one
/// connection per user.)
const GENEROUS: &[(&str, &str)] = &[
    ("--connect-rate", "1000000"),
    ("--max-connections", "100000"),
    ("--max-connections-per-ip", "100000"),
    ("--frame-rate", "100000"),
    ("--join-rate", "100000"),
    ("--emit-rate", "100000"),
    ("--abuse-strikes", "1000000"),
    ("--max-rooms", "1000"),
    ("--startup-timeout", "30s"),
];

/// How long a starting relay may take to answer `GET /readyz`.
const READY_DEADLINE: Duration = Duration::from_secs(90);

/// A running relay process; killed when dropped.
pub struct RelayProc {
    process: RelayProcess,
    /// Its process id.
    pub pid: u32,
    /// Where its gateway listens.
    pub addr: SocketAddr,
}

impl RelayProc {
    /// Starts the relay on a database with a capture mode and extra
    /// settings (`("--send-queue", "256")`, ...), and waits until it is ready.
    pub async fn start(
        env: &Env,
        db: &Db,
        capture: CaptureMode,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_with(env, db, capture, extra, &[]).await
    }

    /// [`RelayProc::start`] with environment variables set for the relay
    /// (a webhook's `secret_env`, ...).
    pub async fn start_with(
        env: &Env,
        db: &Db,
        capture: CaptureMode,
        extra: &[(&str, &str)],
        vars: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = process::free_port();
        let mut command = Command::new(&env.exe);
        command
            .arg("relay")
            .args(capture.relay_flags())
            .args(["--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .env("DATABASE_URL", &db.url)
            .env("JWT_SECRET", env.secret())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        command.envs(vars.iter().copied());
        for (flag, value) in GENEROUS.iter().chain(extra) {
            command.args([flag, value]);
        }
        let mut process = RelayProcess::spawn(command).context("starting the relay process")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !process.ready(addr, READY_DEADLINE).await {
            let status = process.try_wait();
            bail!("the relay was not ready (GET /readyz) within {READY_DEADLINE:?} ({status:?})");
        }
        let pid = process.id();
        Ok(Self { process, pid, addr })
    }

    /// Its resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        process::rss_kib(self.pid)
    }

    /// The sum of a Prometheus metric's samples (all label sets), or 0.
    pub async fn metric(&self, name: &str) -> f64 {
        http::metric(self.addr, name).await
    }

    /// SIGKILL (a crash: no graceful shutdown), and wait until it is gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Polls `rowcast_leader` every 10 ms until this node leads; the
    /// `CLOCK_MONOTONIC` time it first read 1, or `None` after `deadline`.
    pub async fn wait_leader(&self, deadline: Duration) -> Option<u64> {
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            if self.metric("rowcast_leader").await >= 1.0 {
                return Some(sys::mono_ns());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// SIGTERM, then SIGKILL if it has not exited within 20 s.
    pub async fn stop(self) {
        self.process.stop(Duration::from_secs(20)).await;
    }
}

/// The hidden `relay` subcommand: runs the relay until SIGTERM.
pub fn main(settings: Settings) -> ExitCode {
    sys::raise_nofile();
    let config = match Config::load(&settings) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("relay: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    rowcast::init_logs(config.debug);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("relay: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = Shutdown::new();
        let relay = Relay::start(config, shutdown.clone()).await?;
        tokio::spawn(async move {
            shutdown::signal().await;
            shutdown.trigger();
        });
        relay.wait().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: error: {e}");
            ExitCode::FAILURE
        }
    }
}
