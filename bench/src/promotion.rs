//! `promotion`: the database's own failover. Each trial starts a durable
//! primary and a streaming physical standby (`Cluster::standby`), a relay
//! on one of two kinds of URL, and a client joined to room `user_1`. Once
//! the client has an event and the standby has caught up (and, in logical
//! mode on 17+, holds the relay's slot as a synchronised failover slot), the
//! primary is stopped at once (`pg_ctl stop -m immediate`) and the standby
//! promoted. A writer then inserts a `messages` row into `user_1` every
//! 20 ms on the new primary, and the time is taken from the promotion to
//! the client's first frame of such a row.
//!
//! The two URLs:
//! - **multi-host**: `postgres://…@primary,standby/demo?target_session_attrs=read-write`,
//!   which the relay follows by itself;
//! - **one host**: a single address served by a TCP forwarder that moves to
//!   the standby once it is promoted, as a managed service's endpoint (DNS
//!   name or proxy) does.
//!
//! The client does what the SDK does: when the relay closes it (a capture
//! gap on Postgres 15/16 in logical mode closes members with 1001) or the
//! connection ends, it reconnects and rejoins with the last seq it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use rowcast_devkit::cluster::{Cluster, ClusterOptions, StopMode};
use rowcast_devkit::{database, demo, releases};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::env::{self, Db, Env};
use crate::relay::RelayProc;
use crate::report::{Report, Table};
use crate::stats::{nearest_rank, Spread};
use crate::sys;
use crate::{CaptureMode, Common};

/// How long a trial may wait for its first event after the promotion.
const EVENT_DEADLINE: Duration = Duration::from_secs(120);
/// How long the set-up steps of a trial (catch-up, slot sync) may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);
/// The writer's pace on the new primary.
const WRITE_EVERY: Duration = Duration::from_millis(20);

/// Options of `promotion`.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Promotions per capture mode and URL.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    /// Capture modes to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [CaptureMode::Trigger, CaptureMode::Logical])]
    pub capture: Vec<CaptureMode>,
    /// URLs to measure: `multi-host` (both hosts, target_session_attrs)
    /// and `one-host` (one address that moves to the new primary).
    #[arg(long, value_delimiter = ',', default_values_t = ["multi-host".to_string(), "one-host".to_string()])]
    pub url: Vec<String>,
    /// The Postgres major version of the pair (the system's newest when
    /// unset; 16 to 18 are installed from the npm registry when missing).
    #[arg(long)]
    pub postgres: Option<u32>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

/// One promotion.
#[derive(Clone, Debug, Serialize)]
struct Trial {
    capture: CaptureMode,
    url: String,
    trial: usize,
    /// How long `pg_ctl promote` took, ms.
    promote_ms: f64,
    /// Promotion started → the client's first frame of a row written on
    /// the new primary, ms.
    first_event_ms: f64,
    /// Capture gaps the relay counted (`rowcast_capture_gaps_total`).
    gaps: f64,
    /// Times the client reconnected and rejoined.
    rejoins: u64,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    let bin = match args.postgres {
        Some(major) => Some(
            tokio::task::spawn_blocking(move || releases::binaries(major))
                .await?
                .with_context(|| format!("installing Postgres {major}"))?,
        ),
        None => None,
    };
    let mut trials = Vec::new();
    let mut version = 0;
    for &capture in &args.capture {
        for url in &args.url {
            anyhow::ensure!(
                url == "multi-host" || url == "one-host",
                "--url takes multi-host or one-host, not {url}"
            );
            for trial in 1..=args.trials {
                args.common.before_run().await;
                let (t, v) = one_trial(env, bin.clone(), capture, url, trial).await?;
                eprintln!(
                    "promotion: {capture} {url} trial {trial}: first event {:.0} ms after the promotion began (promote {:.0} ms, {} gap(s), {} rejoin(s))",
                    t.first_event_ms, t.promote_ms, t.gaps, t.rejoins
                );
                version = v;
                trials.push(t);
            }
        }
    }
    Ok(summarize(args, version, trials))
}

async fn one_trial(
    env: &Env,
    bin: Option<std::path::PathBuf>,
    capture: CaptureMode,
    url: &str,
    trial: usize,
) -> anyhow::Result<(Trial, u32)> {
    let options = ClusterOptions {
        durable: true,
        max_connections: 100,
        bin,
        ..ClusterOptions::default()
    };
    let primary = tokio::task::spawn_blocking(move || Cluster::start(&options)).await??;
    let version = primary.version();
    prepare_demo(&primary).await?;
    let standby = primary.standby().await?;
    let forwarder = Forwarder::start(primary.port()).await?;
    let relay_url = match url {
        "multi-host" => format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/demo?target_session_attrs=read-write",
            primary.port(),
            standby.port()
        ),
        _ => format!("postgres://postgres@127.0.0.1:{}/demo", forwarder.port),
    };
    let db = Db {
        name: "demo".into(),
        url: relay_url,
    };
    let mut relay = RelayProc::start(env, &db, capture, &[]).await?;
    let mut client = Client::start(relay.addr, env.token()).await?;

    // Before the failover: one event through, the standby caught up, and
    // on 17+ in logical mode the slot synchronised to it.
    let writer = env::connect(&primary.url("demo")).await?;
    insert(&writer, "before").await?;
    client
        .until_body("before", SETUP_DEADLINE)
        .await
        .context("the first event before the promotion")?;
    if capture.is_logical() && version >= 17 {
        wait_slot_synced(&writer, &standby).await?;
    }
    wait(SETUP_DEADLINE, "the standby to catch up", || async {
        standby.caught_up(&primary).await.unwrap_or(false)
    })
    .await?;
    drop(writer);

    let primary = Arc::new(primary);
    let stopping = Arc::clone(&primary);
    tokio::task::spawn_blocking(move || stopping.stop(StopMode::Immediate)).await??;
    let standby = Arc::new(standby);
    let promoting = Arc::clone(&standby);
    let began = sys::mono_ns();
    tokio::task::spawn_blocking(move || promoting.promote()).await??;
    let promoted = sys::mono_ns();
    forwarder.retarget(standby.port());

    let stop = CancellationToken::new();
    let writing = tokio::spawn(write_after(standby.url("demo"), stop.clone()));
    let arrived = client.until_body_prefix("after-", EVENT_DEADLINE).await;
    stop.cancel();
    let _ = writing.await;
    let arrived = arrived
        .with_context(|| format!("{capture} {url} trial {trial}: no event from the new primary"))?;
    let gaps = relay.metric("rowcast_capture_gaps_total").await;
    let rejoins = client.rejoins;
    client.close().await;
    relay.kill();
    drop(relay);
    forwarder.stop.cancel();
    Ok((
        Trial {
            capture,
            url: url.to_string(),
            trial,
            promote_ms: promoted.saturating_sub(began) as f64 / 1e6,
            first_event_ms: arrived.saturating_sub(began) as f64 / 1e6,
            gaps,
            rejoins,
        },
        version,
    ))
}

/// The demo database with users 1 and 2.
async fn prepare_demo(primary: &Cluster) -> anyhow::Result<()> {
    env::connect(&primary.url("postgres"))
        .await?
        .batch_execute("CREATE DATABASE demo")
        .await?;
    let client = env::connect(&primary.url("demo")).await?;
    demo::apply_schema(&client).await?;
    client
        .batch_execute("INSERT INTO users (id, username) VALUES (1, 'one'), (2, 'two')")
        .await?;
    Ok(())
}

async fn insert(client: &tokio_postgres::Client, body: &str) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO messages (sender_id, recipient_id, body) VALUES (2, 1, $1)",
            &[&body],
        )
        .await?;
    Ok(())
}

/// Inserts `after-N` rows into the new primary every [`WRITE_EVERY`] until
/// stopped, reconnecting when a statement fails.
async fn write_after(url: String, stop: CancellationToken) {
    let mut client = None;
    let mut n = 0u64;
    while !stop.is_cancelled() {
        if client.is_none() {
            client = database::connect(&url).await.ok();
        }
        if let Some(c) = &client {
            n += 1;
            if insert(c, &format!("after-{n}")).await.is_err() {
                client = None;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(WRITE_EVERY) => {}
        }
    }
}

/// Waits until the standby holds the relay's slot as a synchronised
/// failover slot (Postgres 17+).
async fn wait_slot_synced(
    primary: &tokio_postgres::Client,
    standby: &Cluster,
) -> anyhow::Result<()> {
    let slot: String = primary
        .query_one("SELECT slot_name FROM realtime.state", &[])
        .await?
        .get::<_, Option<String>>(0)
        .context("the relay recorded no slot")?;
    let on_standby = env::connect(&standby.url("demo")).await?;
    wait(SETUP_DEADLINE, "the standby to synchronise the slot", || async {
        on_standby
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND synced AND NOT temporary",
                &[&slot],
            )
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await
}

/// Polls `ready` every 50 ms until it is true or `deadline` passes.
async fn wait<F, Fut>(deadline: Duration, what: &str, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        if ready().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out after {deadline:?} waiting for {what}")
}

/// A TCP forwarder on one loopback port: every connection is passed to the
/// current target port. `retarget` moves it, as a managed endpoint moves
/// to the promoted standby.
struct Forwarder {
    port: u16,
    target: Arc<AtomicU16>,
    stop: CancellationToken,
}

impl Forwarder {
    async fn start(target: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let target = Arc::new(AtomicU16::new(target));
        let stop = CancellationToken::new();
        let (to, stopped) = (Arc::clone(&target), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let port = to.load(Ordering::SeqCst);
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Ok(Self { port, target, stop })
    }

    fn retarget(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

/// A WebSocket client in room `user_1` that reconnects and rejoins with
/// the last seq it saw, as the SDK does.
struct Client {
    addr: SocketAddr,
    token: String,
    socket: Option<Socket>,
    last_seq: i64,
    rejoins: u64,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

impl Client {
    async fn start(addr: SocketAddr, token: String) -> anyhow::Result<Self> {
        let mut client = Self {
            addr,
            token,
            socket: None,
            last_seq: 0,
            rejoins: 0,
        };
        client.socket = Some(client.join(None).await?);
        Ok(client)
    }

    /// Opens a socket and joins `user_1` (with `since` when rejoining).
    async fn join(&self, since: Option<i64>) -> anyhow::Result<Socket> {
        let url = format!("ws://{}/v1/ws?token={}", self.addr, self.token);
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
        let mut join = json!({"type": "join", "room": "user_1", "ref": "j"});
        if let Some(since) = since {
            join["since"] = json!(since);
        }
        socket.send(Message::Text(join.to_string().into())).await?;
        Ok(socket)
    }

    async fn until_body(&mut self, body: &str, deadline: Duration) -> anyhow::Result<u64> {
        self.until(|b| b == body, deadline).await
    }

    async fn until_body_prefix(&mut self, prefix: &str, deadline: Duration) -> anyhow::Result<u64> {
        self.until(|b| b.starts_with(prefix), deadline).await
    }

    /// Reads frames until a `message-received` whose body matches; the
    /// `CLOCK_MONOTONIC` time it arrived. Reconnects (every 100 ms while
    /// refused) whenever the socket closes.
    async fn until(
        &mut self,
        matches: impl Fn(&str) -> bool,
        deadline: Duration,
    ) -> anyhow::Result<u64> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let Some(socket) = self.socket.as_mut() else {
                if tokio::time::Instant::now() >= until {
                    anyhow::bail!("no matching event within {deadline:?}");
                }
                match self.join(Some(self.last_seq)).await {
                    Ok(socket) => {
                        self.rejoins += 1;
                        self.socket = Some(socket);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                continue;
            };
            let next = tokio::time::timeout_at(until, socket.next()).await;
            let Ok(message) = next else {
                anyhow::bail!("no matching event within {deadline:?}");
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    self.socket = None;
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if frame["type"] != "event" {
                continue;
            }
            if let Some(seq) = frame["seq"].as_i64() {
                self.last_seq = self.last_seq.max(seq);
            }
            let body = frame["data"]["body"].as_str().unwrap_or_default();
            if frame["event"] == "message-received" && matches(body) {
                return Ok(sys::mono_ns());
            }
        }
    }

    async fn close(mut self) {
        if let Some(socket) = self.socket.as_mut() {
            let _ = socket.close(None).await;
        }
    }
}

/// p50, p99 and max (nearest rank) of values in ms.
fn percentiles(values: &[f64]) -> (f64, f64, f64) {
    let mut ns: Vec<i64> = values.iter().map(|v| (v * 1e6) as i64).collect();
    ns.sort_unstable();
    let ms = |p: f64| nearest_rank(&ns, p) as f64 / 1e6;
    (
        ms(50.0),
        ms(99.0),
        ns.last().copied().unwrap_or(0) as f64 / 1e6,
    )
}

fn summarize(args: &Args, version: u32, trials: Vec<Trial>) -> Report {
    let mut table = Table::new(
        format!(
            "promotion: promotion of the standby → first event from the new primary, ms (Postgres {version}; {} promotions per mode and URL)",
            args.trials
        ),
        &["capture", "url", "p50", "p99", "max", "promote p50", "gaps", "rejoins"],
    );
    let mut summary = Vec::new();
    let mut notes = Vec::new();
    for &capture in &args.capture {
        for url in &args.url {
            let of: Vec<&Trial> = trials
                .iter()
                .filter(|t| t.capture == capture && &t.url == url)
                .collect();
            let event: Vec<f64> = of.iter().map(|t| t.first_event_ms).collect();
            let promote: Vec<f64> = of.iter().map(|t| t.promote_ms).collect();
            let gaps: f64 = of.iter().map(|t| t.gaps).sum();
            let rejoins: u64 = of.iter().map(|t| t.rejoins).sum();
            let (p50, p99, max) = percentiles(&event);
            let (promote_p50, _, _) = percentiles(&promote);
            table.row(vec![
                capture.to_string(),
                url.clone(),
                format!("{p50:.0}"),
                format!("{p99:.0}"),
                format!("{max:.0}"),
                format!("{promote_p50:.0}"),
                format!("{}", gaps as u64),
                rejoins.to_string(),
            ]);
            let target = if url == "multi-host" {
                10_000.0
            } else {
                30_000.0
            };
            notes.push(format!(
                "target ({capture}, {url}): first event within {:.0} s of the promotion: {} (p99 {p99:.0} ms)",
                target / 1000.0,
                if !event.is_empty() && p99 < target { "met" } else { "not met" }
            ));
            summary.push(json!({
                "capture": capture, "url": url,
                "first_event_ms": Spread::of(&event),
                "first_event_p50_ms": p50, "first_event_p99_ms": p99, "first_event_max_ms": max,
                "promote_p50_ms": promote_p50, "gaps": gaps, "rejoins": rejoins,
            }));
        }
    }
    Report::of("promotion", args, &summary, &trials)
        .tables([table])
        .notes(notes)
}
