//! `latency`: commit → client frame. Writers insert `messages` rows at a
//! fixed rate; each row's `body` is its sequence number, and the time its
//! COMMIT returned is kept. Clients (one per room `user_{i}`, spread over
//! client processes) note when each frame arrives. A row yields two frames
//! (`message-sent` to its sender's room, `message-received` to its
//! recipient's), both counted. The first `--warmup` seconds are not counted.
//!
//! `--path` picks the ways in, measured one after the other on the same
//! relay (same database, same writers): `ws` (the WebSocket protocol),
//! `sse` (`GET /v1/sse`, one stream per client), `socketio` (the relay's
//! Socket.IO endpoint, socket.io-client in Node processes). `seed` measures
//! the seed stand-in instead of the relay (`bench/seed/`: `pg_notify`
//! triggers and a Node Socket.IO server, on a database of its own without
//! capture), with the same Node client, rows and rates. With `--together`
//! the relay's paths are connected at once and measured in the same windows.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::chart::{self, Series};
use crate::clients::{self, Clients, Plan, Totals, Transport};
use crate::env::Env;
use crate::relay::RelayProc;
use crate::report::{CpuMeter, CpuShare, Report, Table};
use crate::seed::SeedProc;
use crate::stats::{PercentileSpread, Percentiles, Spread};
use crate::writers::{self, Load, Pairs, Writers};
use crate::{CaptureMode, LoadArgs};

/// Options of `latency`.
#[derive(clap::Args, Clone, Debug, Serialize)]
#[command(mut_arg("capture", |a| a.default_values(["trigger", "logical"])))]
pub struct Args {
    /// Write rates to measure (rows per second; each row makes two frames).
    #[arg(long, value_delimiter = ',', default_values_t = [1000u32, 5000])]
    pub rate: Vec<u32>,
    /// Ways in to measure: `ws`, `sse`, `socketio` (the relay, once per
    /// capture mode) and `seed` (the seed stand-in, once per run).
    #[arg(long, value_delimiter = ',', default_values_t = ["ws".to_string()])]
    pub path: Vec<String>,
    /// Connect every relay path's clients at once (each room then has one
    /// member per path) and measure them in the same windows, instead of one
    /// path after the other: a busy machine then disturbs them alike.
    #[arg(long)]
    pub together: bool,
    /// Seconds written before measuring, at the same rate.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Client connections per path, one per room `user_{i}`.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

/// Latency of one window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    /// Rows committed in the window per second.
    pub achieved_rate: f64,
    /// Frames matched to a commit of the window.
    pub samples: u64,
    /// Frames expected (two per row) but not received.
    pub lost: u64,
    /// Frames that arrived before the writer saw its COMMIT return
    /// (counted as 0 ms).
    pub before_commit_ack: u64,
    /// Percentiles, ms.
    pub latency_ms: Percentiles,
}

/// Matches frames to commits made after `window_start_ns`.
pub fn window(
    commits: &[(u64, u64)],
    totals: &Totals,
    window_start_ns: u64,
    seconds: f64,
) -> Window {
    let commit_of: HashMap<u64, u64> = commits
        .iter()
        .copied()
        .filter(|(_, at)| *at >= window_start_ns)
        .collect();
    let mut latencies = Vec::with_capacity(commit_of.len() * writers::EVENTS_PER_ROW as usize);
    let mut early = 0;
    for (seq, received) in &totals.samples {
        if let Some(committed) = commit_of.get(seq) {
            let ns = *received as i64 - *committed as i64;
            if ns < 0 {
                early += 1;
            }
            latencies.push(ns.max(0));
        }
    }
    let expected = commit_of.len() as u64 * writers::EVENTS_PER_ROW;
    Window {
        achieved_rate: commit_of.len() as f64 / seconds.max(1e-9),
        samples: latencies.len() as u64,
        lost: expected.saturating_sub(latencies.len() as u64),
        before_commit_ack: early,
        latency_ms: Percentiles::of_ns(&mut latencies),
    }
}

#[derive(Clone, Debug, Serialize)]
struct Run {
    run: usize,
    /// The relay's capture mode, or `pg_notify` for the seed.
    capture: String,
    path: String,
    rate: u32,
    #[serde(flatten)]
    window: Window,
    writer_errors: u64,
    /// Statement (INSERT + COMMIT) round trips of the writers, ms.
    statement_ms: Percentiles,
    closes: std::collections::BTreeMap<u16, u64>,
    cpu: CpuShare,
}

/// Capture column of the seed's rows.
const SEED_CAPTURE: &str = "pg_notify";

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    let paths = args
        .path
        .iter()
        .map(|p| Transport::parse(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let relay_paths: Vec<Transport> = paths
        .iter()
        .copied()
        .filter(|p| *p != Transport::Seed)
        .collect();
    let mut runs: Vec<Run> = Vec::new();
    for run in 1..=args.load.common.runs {
        if !relay_paths.is_empty() {
            for &capture in &args.load.capture {
                args.load.common.before_run().await;
                eprintln!("latency: run {run}, {capture} capture");
                runs.extend(one_capture(env, args, run, capture, &relay_paths).await?);
            }
        }
        if paths.contains(&Transport::Seed) {
            args.load.common.before_run().await;
            eprintln!("latency: run {run}, the seed stand-in");
            runs.extend(one_seed(env, args, run).await?);
        }
    }
    Ok(summarize(args, &paths, runs))
}

async fn one_capture(
    env: &Env,
    args: &Args,
    run: usize,
    capture: CaptureMode,
    paths: &[Transport],
) -> anyhow::Result<Vec<Run>> {
    let db = env.fresh_db(&format!("latency_{capture}")).await?;
    let relay = RelayProc::start(env, &db, capture, &[]).await?;
    let writers = Writers::connect(&db.url, args.load.writers).await?;
    let rooms = clients::conns(args.clients, |i| vec![format!("user_{}", i + 1)]);
    // Together: one group per path, all joined, measured in the same
    // windows; otherwise one path after the other.
    let batches: Vec<Vec<Transport>> = if args.together {
        vec![paths.to_vec()]
    } else {
        paths.iter().map(|p| vec![*p]).collect()
    };
    let mut results = Vec::new();
    for batch in batches {
        if paths.len() > 1 {
            let names: Vec<&str> = batch.iter().map(|p| p.name()).collect();
            eprintln!(
                "latency: run {run}, {capture} capture, {} clients",
                names.join(" + ")
            );
        }
        let mut groups = Vec::new();
        for &path in &batch {
            let plan = Plan {
                transport: path,
                ..Plan::latency(env, relay.addr)
            };
            match Clients::start_all(env, plan, rooms.clone(), 5000, 2).await {
                Ok(group) => groups.push((path, group)),
                Err(e) => {
                    for (_, group) in groups {
                        group.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        let meter = CpuMeter {
            relay: Some(relay.pid),
            postmaster: env.postmaster_pid(),
            clients: groups.iter().flat_map(|(_, g)| g.pids()).collect(),
        };
        let measured = rates(args, run, capture.as_str(), &mut groups, &writers, &meter).await;
        for (_, group) in groups {
            group.stop().await;
        }
        results.extend(measured?);
    }
    relay.stop().await;
    env.drop_db(&db).await;
    Ok(results)
}

/// The seed stand-in on a database of its own: its triggers, its server,
/// the Node clients joined with `join-user`.
async fn one_seed(env: &Env, args: &Args, run: usize) -> anyhow::Result<Vec<Run>> {
    let db = env.fresh_db("latency_seed").await?;
    let server = SeedProc::start(env, &db).await?;
    let writers = Writers::connect(&db.url, args.load.writers).await?;
    let plan = Plan {
        transport: Transport::Seed,
        ..Plan::latency(env, server.addr)
    };
    let rooms = clients::conns(args.clients, |i| vec![format!("user_{}", i + 1)]);
    let group = Clients::start_all(env, plan, rooms, 5000, 2).await?;
    let meter = CpuMeter {
        relay: Some(server.pid),
        postmaster: env.postmaster_pid(),
        clients: group.pids(),
    };
    let mut groups = vec![(Transport::Seed, group)];
    let measured = rates(args, run, SEED_CAPTURE, &mut groups, &writers, &meter).await;
    for (_, group) in groups {
        group.stop().await;
    }
    server.stop().await;
    env.drop_db(&db).await;
    measured
}

/// Every rate of `args`, one after the other, with clients already joined
/// (one group per path, all in the same windows).
async fn rates(
    args: &Args,
    run: usize,
    capture: &str,
    groups: &mut [(Transport, Clients)],
    writers: &Writers,
    meter: &CpuMeter,
) -> anyhow::Result<Vec<Run>> {
    let mut results = Vec::new();
    for &rate in &args.rate {
        for (_, group) in groups.iter_mut() {
            group.report().await?;
        }
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
        let before = meter.read();
        let outcome = writers.run(&load).await;
        let after = meter.read();
        // Frames still in flight arrive within this tail.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let start = outcome.start_ns + (args.warmup * 1e9) as u64;
        let statement_ms = Percentiles::of_ns(&mut outcome.statement_ns.clone());
        for (path, group) in groups.iter_mut() {
            let totals = group.report().await?;
            results.push(Run {
                run,
                capture: capture.to_string(),
                path: path.name().to_string(),
                rate,
                window: window(&outcome.commits, &totals, start, args.load.seconds),
                writer_errors: outcome.errors,
                statement_ms,
                closes: totals.closes,
                cpu: CpuMeter::share(&before, &after),
            });
        }
    }
    Ok(results)
}

fn summarize(args: &Args, paths: &[Transport], runs: Vec<Run>) -> Report {
    let mut table = Table::new(
        format!(
            "latency: commit → client frame, ms (median (min–max) over {} runs; {} clients{}, {} writer connections, {} s per rate)",
            args.load.common.runs,
            args.clients,
            if args.together && paths.len() > 1 { " per path, the relay's paths together" } else { "" },
            args.load.writers,
            args.load.seconds
        ),
        &["capture", "path", "rate/s", "achieved/s", "p50", "p90", "p99", "max", "frames", "lost", "INSERT+COMMIT p50/p99", "cpu (median run)"],
    );
    let mut summary = Vec::new();
    let mut series = Vec::new();
    let mut notes = Vec::new();
    // (capture, path) in the order they were measured.
    let mut configs: Vec<(String, Transport)> = Vec::new();
    for &capture in &args.load.capture {
        for &path in paths.iter().filter(|p| **p != Transport::Seed) {
            configs.push((capture.to_string(), path));
        }
    }
    if paths.contains(&Transport::Seed) {
        configs.push((SEED_CAPTURE.to_string(), Transport::Seed));
    }
    for (capture, path) in &configs {
        let (capture, path) = (capture, path.name());
        let label = match path {
            "ws" => capture.clone(),
            "seed" => "seed".to_string(),
            _ => format!("{capture} {path}"),
        };
        let mut lines: Vec<Series> = ["p50", "p90", "p99", "max"]
            .iter()
            .map(|p| Series {
                capture: label.clone(),
                percentile: p.to_string(),
                points: Vec::new(),
            })
            .collect();
        for &rate in &args.rate {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| &r.capture == capture && r.path == path && r.rate == rate)
                .collect();
            let spread =
                |f: &dyn Fn(&Run) -> f64| Spread::of(&of.iter().map(|r| f(r)).collect::<Vec<_>>());
            let latency = PercentileSpread::of(of.iter().map(|r| &r.window.latency_ms));
            let PercentileSpread { p50, p90, p99, max } = latency;
            let achieved = spread(&|r| r.window.achieved_rate);
            let samples: u64 = of.iter().map(|r| r.window.samples).sum();
            let lost: u64 = of.iter().map(|r| r.window.lost).sum();
            let cpu = median_cpu(&of);
            table.row(
                [
                    vec![
                        capture.clone(),
                        path.to_string(),
                        rate.to_string(),
                        achieved.show(0),
                    ],
                    latency.cells().to_vec(),
                    vec![
                        samples.to_string(),
                        lost.to_string(),
                        format!(
                            "{:.1}/{:.1}",
                            spread(&|r| r.statement_ms.p50).median,
                            spread(&|r| r.statement_ms.p99).median
                        ),
                        cpu.show(),
                    ],
                ]
                .concat(),
            );
            for (line, s) in lines.iter_mut().zip([p50, p90, p99, max]) {
                line.points.push((rate as f64, s.median, s.min, s.max));
            }
            let early: u64 = of.iter().map(|r| r.window.before_commit_ack).sum();
            if early * 100 > samples {
                notes.push(format!(
                    "{label} at {rate} rows/s: {early} of {samples} frames arrived before their writer saw COMMIT return (counted as 0 ms)"
                ));
            }
            if rate == 5000 {
                let met = p50.median <= 2.0 && p99.median <= 10.0;
                let of = if path == "ws" {
                    capture.clone()
                } else {
                    format!("{capture}, {path}")
                };
                notes.push(format!(
                    "target at 5,000 rows/s ({of}): p50 ≤ 2 ms and p99 ≤ 10 ms: {} (p50 {:.2} ms, p99 {:.2} ms{})",
                    if met && achieved.median >= 0.95 * rate as f64 { "met" } else { "not met" },
                    p50.median,
                    p99.median,
                    if achieved.median < 0.95 * rate as f64 {
                        format!("; only {:.0} rows/s could be written", achieved.median)
                    } else {
                        String::new()
                    }
                ));
            }
            summary.push(json!({
                "capture": capture, "path": path, "rate": rate, "achieved_rate": achieved,
                "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                "samples": samples, "lost": lost, "cpu_median_run": cpu,
            }));
        }
        series.extend(lines);
    }
    Report::of("latency", args, &summary, &runs)
        .tables([table])
        .notes(notes)
        .chart(chart::latency(
            "rowcast: commit → client frame (median of runs; bars: range)",
            &series,
        ))
}

fn median_cpu(runs: &[&Run]) -> CpuShare {
    let mut sorted: Vec<&Run> = runs.to_vec();
    sorted.sort_by(|a, b| a.window.latency_ms.p50.total_cmp(&b.window.latency_ms.p50));
    sorted
        .get(sorted.len() / 2)
        .map(|r| r.cpu)
        .unwrap_or_default()
}
