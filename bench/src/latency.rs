//! `latency`: commit → client frame. Writers insert `messages` rows at a
//! fixed rate; each row's `body` is its sequence number, and the time its
//! COMMIT returned is kept. Clients (one per room `user_{i}`, spread over
//! client processes) note when each frame arrives. A row yields two frames
//! (`message-sent` to its sender's room, `message-received` to its
//! recipient's), both counted. The first `--warmup` seconds are not counted.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::chart::{self, Series};
use crate::clients::{self, Clients, Plan, Totals};
use crate::env::Env;
use crate::relay::RelayProc;
use crate::report::{self, CpuMeter, CpuShare, Outcome, Table};
use crate::stats::{Percentiles, Spread};
use crate::writers::{self, Load, Pairs, Writers};
use crate::Common;

/// Options of `latency`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Write rates to measure (rows per second; each row makes two frames).
    #[arg(long, value_delimiter = ',', default_values_t = [1000u32, 5000])]
    pub rate: Vec<u32>,
    /// Capture modes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = ["trigger".to_string(), "logical".to_string()])]
    pub capture: Vec<String>,
    /// Measured seconds per rate.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds written before measuring, at the same rate.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// WebSocket connections, one per room `user_{i}`.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Writer connections the rate is spread over.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    #[command(flatten)]
    pub common: Common,
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
    capture: String,
    rate: u32,
    #[serde(flatten)]
    window: Window,
    writer_errors: u64,
    /// Statement (INSERT + COMMIT) round trips of the writers, ms.
    statement_ms: Percentiles,
    closes: std::collections::BTreeMap<u16, u64>,
    cpu: CpuShare,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Outcome> {
    let mut runs: Vec<Run> = Vec::new();
    for run in 1..=args.common.runs {
        for capture in &args.capture {
            args.common.before_run().await;
            eprintln!("latency: run {run}, {capture} capture");
            runs.extend(one_capture(env, args, run, capture).await?);
        }
    }
    Ok(summarize(args, runs))
}

async fn one_capture(
    env: &Env,
    args: &Args,
    run: usize,
    capture: &str,
) -> anyhow::Result<Vec<Run>> {
    let db = env.fresh_db(&format!("latency_{capture}")).await?;
    let relay = RelayProc::start(env, &db, capture, &[]).await?;
    let plan = Plan::latency(env, relay.addr);
    let rooms = clients::conns(args.clients, |i| vec![format!("user_{}", i + 1)]);
    let mut group = Clients::start_all(env, plan, rooms, 5000, 2).await?;
    let writers = Writers::connect(&db.url, args.writers).await?;
    let meter = CpuMeter {
        relay: Some(relay.pid),
        postmaster: env.postmaster_pid(),
        clients: group.pids(),
    };
    let mut results = Vec::new();
    for &rate in &args.rate {
        group.report().await?;
        let load = Load {
            rows_per_sec: Some(rate as f64),
            batch: 1,
            duration: Duration::from_secs_f64(args.warmup + args.seconds),
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
        let totals = group.report().await?;
        let start = outcome.start_ns + (args.warmup * 1e9) as u64;
        results.push(Run {
            run,
            capture: capture.to_string(),
            rate,
            window: window(&outcome.commits, &totals, start, args.seconds),
            writer_errors: outcome.errors,
            statement_ms: Percentiles::of_ns(&mut outcome.statement_ns.clone()),
            closes: totals.closes,
            cpu: CpuMeter::share(&before, &after),
        });
    }
    group.stop().await;
    relay.stop().await;
    env.drop_db(&db).await;
    Ok(results)
}

fn summarize(args: &Args, runs: Vec<Run>) -> Outcome {
    let mut table = Table::new(
        format!(
            "latency: commit → client frame, ms (median (min–max) over {} runs; {} clients, {} writer connections, {} s per rate)",
            args.common.runs, args.clients, args.writers, args.seconds
        ),
        &["capture", "rate/s", "achieved/s", "p50", "p90", "p99", "max", "frames", "lost", "INSERT+COMMIT p50/p99", "cpu (median run)"],
    );
    let mut summary = Vec::new();
    let mut series = Vec::new();
    let mut notes = Vec::new();
    for capture in &args.capture {
        let mut lines: Vec<Series> = ["p50", "p90", "p99", "max"]
            .iter()
            .map(|p| Series {
                capture: capture.clone(),
                percentile: p.to_string(),
                points: Vec::new(),
            })
            .collect();
        for &rate in &args.rate {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| &r.capture == capture && r.rate == rate)
                .collect();
            let spread =
                |f: &dyn Fn(&Run) -> f64| Spread::of(&of.iter().map(|r| f(r)).collect::<Vec<_>>());
            let p50 = spread(&|r| r.window.latency_ms.p50);
            let p90 = spread(&|r| r.window.latency_ms.p90);
            let p99 = spread(&|r| r.window.latency_ms.p99);
            let max = spread(&|r| r.window.latency_ms.max);
            let achieved = spread(&|r| r.window.achieved_rate);
            let samples: u64 = of.iter().map(|r| r.window.samples).sum();
            let lost: u64 = of.iter().map(|r| r.window.lost).sum();
            let cpu = median_cpu(&of);
            table.row(vec![
                capture.clone(),
                rate.to_string(),
                achieved.show(0),
                p50.show(2),
                p90.show(2),
                p99.show(2),
                max.show(1),
                samples.to_string(),
                lost.to_string(),
                format!(
                    "{:.1}/{:.1}",
                    spread(&|r| r.statement_ms.p50).median,
                    spread(&|r| r.statement_ms.p99).median
                ),
                cpu.show(),
            ]);
            for (line, s) in lines.iter_mut().zip([p50, p90, p99, max]) {
                line.points.push((rate as f64, s.median, s.min, s.max));
            }
            if rate == 5000 {
                let met = p50.median <= 2.0 && p99.median <= 10.0;
                notes.push(format!(
                    "target at 5,000 rows/s ({capture}): p50 ≤ 2 ms and p99 ≤ 10 ms: {} (p50 {:.2} ms, p99 {:.2} ms{})",
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
                "capture": capture, "rate": rate, "achieved_rate": achieved,
                "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                "samples": samples, "lost": lost, "cpu_median_run": cpu,
            }));
        }
        series.extend(lines);
    }
    let mut json = report::header(
        "latency",
        json!({
            "rate": args.rate, "capture": args.capture, "seconds": args.seconds, "warmup": args.warmup,
            "clients": args.clients, "writers": args.writers, "runs": args.common.runs,
        }),
    );
    json["summary"] = json!(summary);
    json["runs"] = json!(runs);
    Outcome {
        name: "latency".into(),
        tables: vec![table],
        notes,
        json,
        svg: Some(chart::latency(
            "rowcast: commit → client frame (median of runs; bars: range)",
            &series,
        )),
    }
}

fn median_cpu(runs: &[&Run]) -> CpuShare {
    let mut sorted: Vec<&Run> = runs.to_vec();
    sorted.sort_by(|a, b| a.window.latency_ms.p50.total_cmp(&b.window.latency_ms.p50));
    sorted
        .get(sorted.len() / 2)
        .map(|r| r.cpu)
        .unwrap_or_default()
}
