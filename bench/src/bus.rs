//! `bus`: commit → client frame on a FOLLOWER. Two relay nodes on one
//! database; the clients (one per room `user_{i}`) are on the node that does
//! not lead, so every frame they get crossed from the leader: through the
//! outbox woken by `NOTIFY` (`ROWCAST_BUS=postgres`), or through the NATS
//! JetStream stream (`ROWCAST_BUS=nats://...`, a stream of its own per run,
//! deleted afterwards). Writers and windows as in `latency`. The NATS half is
//! skipped, with a message, when its server cannot be reached.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::clients::{self, Clients, Plan};
use crate::env::Env;
use crate::failover::start_leader;
use crate::latency::{window, Window};
use crate::relay::RelayProc;
use crate::report::{CpuMeter, CpuShare, Report, Table};
use crate::stats::{PercentileSpread, Spread};
use crate::writers::{Load, Pairs, Writers};
use crate::LoadArgs;

/// Options of `bus`.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Buses to measure: `postgres` and/or `nats://host:port`.
    #[arg(long, value_delimiter = ',', default_values_t = ["postgres".to_string(), "nats://127.0.0.1:4222".to_string()])]
    pub bus: Vec<String>,
    /// Write rates to measure (rows per second; each row makes two frames).
    #[arg(long, value_delimiter = ',', default_values_t = [5000u32])]
    pub rate: Vec<u32>,
    /// Seconds written before measuring, at the same rate.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// WebSocket connections on the follower, one per room `user_{i}`.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

#[derive(Clone, Debug, Serialize)]
struct Run {
    run: usize,
    bus: String,
    rate: u32,
    #[serde(flatten)]
    window: Window,
    writer_errors: u64,
    /// Events the follower delivered straight from the NATS stream.
    streamed: f64,
    /// CPU of the leader (with Postgres and the clients) and of the follower.
    cpu_leader: CpuShare,
    cpu_follower: f64,
}

/// The NATS server a bus URL names, if it answers within a second.
fn nats_addr(bus: &str) -> Option<SocketAddr> {
    let hostport = bus.strip_prefix("nats://")?;
    let addr = hostport.to_socket_addrs().ok()?.next()?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    Some(addr)
}

/// Deletes a JetStream stream with the plain NATS protocol (a request
/// whose answer is not awaited, then PING/PONG so it has been processed).
fn delete_stream(addr: SocketAddr, stream: &str) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let mut socket = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(socket.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?; // INFO
    write!(
        socket,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nPUB $JS.API.STREAM.DELETE.{stream} 0\r\n\r\nPING\r\n"
    )?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.starts_with("PONG") {
            return Ok(());
        }
    }
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    let mut runs: Vec<Run> = Vec::new();
    let mut notes = Vec::new();
    let mut measured = Vec::new();
    for bus in &args.bus {
        let nats = if bus == "postgres" {
            None
        } else {
            match nats_addr(bus) {
                Some(addr) => Some(addr),
                None => {
                    let note = format!("{bus}: skipped, no NATS server answers there");
                    eprintln!("bus: {note}");
                    notes.push(note);
                    continue;
                }
            }
        };
        measured.push(bus.clone());
        for run in 1..=args.load.common.runs {
            args.load.common.before_run().await;
            eprintln!("bus: run {run}, {bus}");
            runs.extend(one_run(env, args, run, bus, nats).await?);
        }
    }
    Ok(summarize(args, &measured, runs, notes))
}

async fn one_run(
    env: &Env,
    args: &Args,
    run: usize,
    bus: &str,
    nats: Option<SocketAddr>,
) -> anyhow::Result<Vec<Run>> {
    let db = env.fresh_db("bus").await?;
    let stream = format!(
        "rowcast_bench_{}_{}_{run}",
        std::process::id(),
        sys_suffix()
    );
    let extra = [("--bus", bus), ("--nats-stream", stream.as_str())];
    let capture = args.load.one_capture()?;
    let leader = start_leader(env, &db, capture, &extra).await?;
    let follower = RelayProc::start(env, &db, capture, &extra).await?;
    anyhow::ensure!(
        follower.metric("rowcast_leader").await < 1.0,
        "the second node leads"
    );
    let plan = Plan::latency(env, follower.addr);
    let rooms = clients::conns(args.clients, |i| vec![format!("user_{}", i + 1)]);
    let mut group = Clients::start_all(env, plan, rooms, 5000, 2).await?;
    let writers = Writers::connect(&db.url, args.load.writers).await?;
    let meter = CpuMeter {
        relay: Some(leader.pid),
        postmaster: env.postmaster_pid(),
        clients: group.pids(),
    };
    let follower_meter = CpuMeter {
        relay: Some(follower.pid),
        postmaster: None,
        clients: Vec::new(),
    };
    let mut results = Vec::new();
    for &rate in &args.rate {
        group.report().await?;
        let streamed_before = follower.metric("rowcast_events_streamed_total").await;
        let load = Load {
            rows_per_sec: Some(rate as f64),
            batch: 1,
            duration: Duration::from_secs_f64(args.warmup + args.load.seconds),
            pairs: Pairs::Ring {
                first: 1,
                count: args.clients as i64,
            },
            record: true,
        };
        let (before, follower_before) = (meter.read(), follower_meter.read());
        let outcome = writers.run(&load).await;
        let (after, follower_after) = (meter.read(), follower_meter.read());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let totals = group.report().await?;
        let start = outcome.start_ns + (args.warmup * 1e9) as u64;
        results.push(Run {
            run,
            bus: bus.to_string(),
            rate,
            window: window(&outcome.commits, &totals, start, args.load.seconds),
            writer_errors: outcome.errors,
            streamed: follower.metric("rowcast_events_streamed_total").await - streamed_before,
            cpu_leader: CpuMeter::share(&before, &after),
            cpu_follower: CpuMeter::share(&follower_before, &follower_after).relay,
        });
    }
    group.stop().await;
    follower.stop().await;
    leader.stop().await;
    env.drop_db(&db).await;
    if let Some(addr) = nats {
        let name = stream.clone();
        let deleted = tokio::task::spawn_blocking(move || delete_stream(addr, &name)).await;
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("bus: could not delete the NATS stream {stream}: {deleted:?}");
        }
    }
    Ok(results)
}

/// A few digits that keep the streams of separate invocations apart.
fn sys_suffix() -> u64 {
    crate::sys::mono_ns() % 1_000_000
}

fn summarize(args: &Args, measured: &[String], runs: Vec<Run>, mut notes: Vec<String>) -> Report {
    let mut table = Table::new(
        format!(
            "bus: commit → client frame on the follower, ms (median (min–max) over {} runs; {} clients on the follower, {} capture, {} writer connections, {} s per rate)",
            args.load.common.runs, args.clients, args.load.capture_names(), args.load.writers, args.load.seconds
        ),
        &["bus", "rate/s", "achieved/s", "p50", "p90", "p99", "max", "frames", "lost", "streamed", "cpu leader side", "cpu follower"],
    );
    let mut summary = Vec::new();
    for bus in measured {
        for &rate in &args.rate {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| &r.bus == bus && r.rate == rate)
                .collect();
            let spread =
                |f: &dyn Fn(&Run) -> f64| Spread::of(&of.iter().map(|r| f(r)).collect::<Vec<_>>());
            let latency = PercentileSpread::of(of.iter().map(|r| &r.window.latency_ms));
            let PercentileSpread { p50, p90, p99, max } = latency;
            let achieved = spread(&|r| r.window.achieved_rate);
            let samples: u64 = of.iter().map(|r| r.window.samples).sum();
            let lost: u64 = of.iter().map(|r| r.window.lost).sum();
            let streamed: f64 = of.iter().map(|r| r.streamed).sum();
            let mut by_p50 = of.clone();
            by_p50.sort_by(|a, b| a.window.latency_ms.p50.total_cmp(&b.window.latency_ms.p50));
            let median = by_p50.get(by_p50.len() / 2);
            table.row(
                [
                    vec![bus.clone(), rate.to_string(), achieved.show(0)],
                    latency.cells().to_vec(),
                    vec![
                        samples.to_string(),
                        lost.to_string(),
                        format!("{streamed:.0}"),
                        median.map(|r| r.cpu_leader.show()).unwrap_or_default(),
                        median
                            .map(|r| format!("{:.0}%", r.cpu_follower))
                            .unwrap_or_default(),
                    ],
                ]
                .concat(),
            );
            summary.push(json!({
                "bus": bus, "rate": rate, "achieved_rate": achieved,
                "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                "samples": samples, "lost": lost, "streamed": streamed,
            }));
        }
    }
    if measured.len() == 2 {
        notes.push("frames: matched to commits of the window (two per row); streamed: events the follower took from the NATS stream rather than the outbox".into());
    }
    Report::of("bus", args, &summary, &runs)
        .tables([table])
        .notes(notes)
}
