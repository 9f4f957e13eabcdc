//! The relay under test, in its own process so that its memory and CPU can
//! be measured apart from the load generator. The bench re-executes itself
//! as the hidden `relay` subcommand, whose flags are rowcast's own
//! [`Settings`]: it builds a [`Config`] with [`Config::load`] and runs
//! [`Relay::start`] until SIGTERM, exactly as `rowcast serve` would.

use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use rowcast::cli::Settings;
use rowcast::config::Config;
use rowcast::relay::Relay;
use rowcast::shutdown::{self, Shutdown};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::env::{Db, Env};
use crate::sys;

/// Limits raised for the bench: one client IP opens thousands of
/// connections, and stalled clients join many rooms quickly.
const GENEROUS: &[(&str, &str)] = &[
    ("--connect-rate", "1000000"),
    ("--max-connections", "100000"),
    ("--frame-rate", "100000"),
    ("--join-rate", "100000"),
    ("--emit-rate", "100000"),
    ("--abuse-strikes", "1000000"),
    ("--max-rooms", "1000"),
    ("--startup-timeout", "30s"),
];

/// A running relay process; killed when dropped.
pub struct RelayProc {
    child: Child,
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
        capture: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = Command::new(&env.exe);
        command
            .arg("relay")
            .args(["--capture", capture, "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .env("DATABASE_URL", &db.url)
            .env("JWT_SECRET", env.secret())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        for (flag, value) in GENEROUS.iter().chain(extra) {
            command.args([flag, value]);
        }
        sys::dies_with_parent(&mut command);
        let mut child = command.spawn().context("starting the relay process")?;
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout.take().context("relay stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await;
        match ready {
            Ok(Ok(Some(line))) if line.contains("\"ready\"") => {}
            Ok(_) => {
                let status = child.wait().await.ok();
                bail!("the relay process stopped before it was ready ({status:?})");
            }
            Err(_) => bail!("the relay was not ready after 90 s"),
        }
        // Keep reading (and discarding) its stdout so it never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http_get(addr, "/readyz").await {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the relay did not become ready (GET /readyz)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { child, pid, addr })
    }

    /// Its resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        sys::rss_kib(self.pid)
    }

    /// The sum of a Prometheus metric's samples (all label sets), or 0.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(self.addr, name).await
    }

    /// SIGTERM, then SIGKILL if it has not exited within 20 s.
    pub async fn stop(mut self) {
        // SAFETY: kill only sends a signal to the relay's pid, our child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The sum of a relay's Prometheus metric samples (all label sets), or 0.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let Ok((_, body)) = http_get(addr, "/metrics").await else {
        return 0.0;
    };
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP GET; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
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
    rowcast::telemetry::init_logs(config.debug);
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
        println!("{{\"type\":\"ready\",\"addr\":\"{}\"}}", relay.addr);
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
