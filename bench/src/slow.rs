//! `slow`: clients that stop reading must not cost the others. Healthy
//! clients (one per room `user_{i}`) measure commit → frame latency while
//! writers insert at a steady rate, first alone (baseline), then with
//! stalled clients that joined every one of those rooms, have a small
//! receive buffer and read nothing. Meanwhile the relay's RSS and its
//! `rowcast_queue_overflows_total` counter are sampled every 250 ms: a
//! stalled client is closed with 4008 when its queue overflows, which the
//! counter shows when it happens (the client itself only sees the close
//! frame once it reads again, which it does at the end to confirm the code).

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::clients::{self, Clients, Message, Plan};
use crate::env::Env;
use crate::latency::{self, Window};
use crate::relay::RelayProc;
use crate::report::{Report, Table};
use crate::stats::Spread;
use crate::writers::{Load, Pairs, Writers};
use crate::LoadArgs;

/// The relay's counter of connections closed because their queue overflowed.
const OVERFLOWS: &str = "rowcast_queue_overflows_total";

/// Options of `slow`.
#[derive(clap::Args, Clone, Debug, Serialize)]
#[command(mut_arg("seconds", |a| a.default_value("20")))]
pub struct Args {
    /// Clients that stop reading.
    #[arg(long, default_value_t = 100)]
    pub stalled: usize,
    /// Clients that keep up (and measure latency).
    #[arg(long, default_value_t = 100)]
    pub healthy: usize,
    /// Rows written per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// SO_RCVBUF of the stalled clients' sockets.
    #[arg(long, default_value_t = 4096)]
    pub recv_buffer: u32,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Sample {
    t_s: f64,
    rss_kib: u64,
    overflows: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    run: usize,
    baseline: Window,
    with_stalled: Window,
    /// with_stalled p99 ÷ baseline p99.
    p99_ratio: f64,
    stalled_joined: u64,
    rss_start_kib: u64,
    rss_peak_kib: u64,
    rss_end_kib: u64,
    /// Seconds from the start of the load until the overflow counter
    /// reached 1, half and all of the stalled clients.
    first_close_s: Option<f64>,
    half_closed_s: Option<f64>,
    all_closed_s: Option<f64>,
    /// Close codes the stalled clients found when they read again (1006:
    /// the connection ended without a close frame).
    stalled_closes: std::collections::BTreeMap<u16, u64>,
    /// Event frames they read before that.
    stalled_drained_frames: u64,
    /// Stalled clients the relay had not closed.
    stalled_still_open: u64,
    healthy_closes: std::collections::BTreeMap<u16, u64>,
    samples: Vec<Sample>,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    let runs = args
        .load
        .common
        .each_run("slow", async |run| one(env, args, run).await)
        .await?;
    Ok(summarize(args, runs))
}

async fn one(env: &Env, args: &Args, run: usize) -> anyhow::Result<Run> {
    let db = env.fresh_db("slow").await?;
    let capture = args.load.one_capture()?;
    let relay = RelayProc::start(env, &db, capture, &[]).await?;
    let plan = Plan::latency(env, relay.addr);
    let rooms = clients::conns(args.healthy, |i| vec![format!("user_{}", i + 1)]);
    let mut healthy = Clients::start_all(env, plan.clone(), rooms, 5000, 1).await?;
    let writers = Writers::connect(&db.url, args.load.writers).await?;
    let load = Load {
        rows_per_sec: Some(args.rate),
        batch: 1,
        duration: Duration::from_secs_f64(args.load.seconds),
        pairs: Pairs::Ring {
            first: 1,
            count: args.healthy as i64,
        },
        record: true,
    };

    // Baseline: healthy clients alone.
    healthy.report().await?;
    let outcome = writers.run(&load).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let totals = healthy.report().await?;
    let baseline = latency::window(
        &outcome.commits,
        &totals,
        outcome.start_ns,
        args.load.seconds,
    );

    // The same load with stalled clients in every room.
    let all_rooms: Vec<String> = (1..=args.healthy).map(|i| format!("user_{i}")).collect();
    let stalled_plan = Plan {
        stalled: true,
        recv_buffer: Some(args.recv_buffer),
        latency: false,
        ..plan
    };
    let stalled_rooms = clients::conns(args.stalled, |_| all_rooms.clone());
    let (mut stalled, stalled_ready) =
        Clients::start(env, stalled_plan, stalled_rooms, 5000, 1).await?;
    let overflows_before = relay.metric(OVERFLOWS).await;
    let rss_start = relay.rss_kib();
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (stop, pid, addr) = (stop.clone(), relay.pid, relay.addr);
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            let mut samples = Vec::new();
            while !stop.is_cancelled() {
                let overflows =
                    rowcast_devkit::http::metric(addr, OVERFLOWS).await - overflows_before;
                samples.push(Sample {
                    t_s: start.elapsed().as_secs_f64(),
                    rss_kib: rowcast_devkit::process::rss_kib(pid),
                    overflows,
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.cancelled() => {}
                }
            }
            samples
        })
    };
    healthy.report().await?;
    let outcome = writers.run(&load).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let samples = sampler.await.unwrap_or_default();
    let totals = healthy.report().await?;
    let with_stalled = latency::window(
        &outcome.commits,
        &totals,
        outcome.start_ns,
        args.load.seconds,
    );
    let rss_end = relay.rss_kib();
    let (stalled_closes, stalled_drained_frames, stalled_still_open) =
        match stalled.drain(Duration::from_secs(60)).await? {
            Message::Drained {
                closes,
                frames,
                still_open,
            } => (closes.into_iter().collect(), frames, still_open),
            _ => Default::default(),
        };
    let when = |count: f64| {
        samples
            .iter()
            .find(|s| s.overflows >= count && count > 0.0)
            .map(|s| s.t_s)
    };
    let n = stalled_ready.connected as f64;
    let result = Run {
        run,
        p99_ratio: with_stalled.latency_ms.p99 / baseline.latency_ms.p99.max(1e-9),
        baseline,
        with_stalled,
        stalled_joined: stalled_ready.connected,
        rss_start_kib: rss_start,
        rss_peak_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(rss_end),
        rss_end_kib: rss_end,
        first_close_s: when(1.0),
        half_closed_s: when((n / 2.0).ceil()),
        all_closed_s: when(n),
        stalled_closes,
        stalled_drained_frames,
        stalled_still_open,
        healthy_closes: totals.closes,
        samples,
    };
    stalled.stop().await;
    healthy.stop().await;
    relay.stop().await;
    drop(writers);
    env.drop_db(&db).await;
    Ok(result)
}

/// `4008×100 1006×3 open×2`, summed over runs.
fn ends(runs: &[Run]) -> String {
    let mut codes = std::collections::BTreeMap::new();
    for run in runs {
        for (code, n) in &run.stalled_closes {
            *codes.entry(*code).or_insert(0u64) += n;
        }
    }
    let mut parts: Vec<String> = codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
    let open: u64 = runs.iter().map(|r| r.stalled_still_open).sum();
    if open > 0 {
        parts.push(format!("open×{open}"));
    }
    parts.join(" ")
}

fn summarize(args: &Args, runs: Vec<Run>) -> Report {
    let spread = |f: &dyn Fn(&Run) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut latency = Table::new(
        format!(
            "slow: healthy clients' latency, ms, {} rows/s, {} healthy, {} stalled (median (min–max) over {} runs)",
            args.rate, args.healthy, args.stalled, args.load.common.runs
        ),
        &["phase", "p50", "p90", "p99", "max", "frames", "lost"],
    );
    for (name, pick) in [
        ("baseline", (|r: &Run| &r.baseline) as fn(&Run) -> &Window),
        ("with stalled", |r: &Run| &r.with_stalled),
    ] {
        latency.row(vec![
            name.to_string(),
            spread(&|r| pick(r).latency_ms.p50).show(2),
            spread(&|r| pick(r).latency_ms.p90).show(2),
            spread(&|r| pick(r).latency_ms.p99).show(2),
            spread(&|r| pick(r).latency_ms.max).show(1),
            runs.iter()
                .map(|r| pick(r).samples)
                .sum::<u64>()
                .to_string(),
            runs.iter().map(|r| pick(r).lost).sum::<u64>().to_string(),
        ]);
    }
    let mut memory = Table::new(
        "slow: relay RSS (MiB) and 4008 closes of stalled clients (s from the start of the load)",
        &[
            "RSS start",
            "RSS peak",
            "RSS end",
            "peak − start",
            "first 4008",
            "half",
            "all",
            "stalled clients' ends (code × n)",
        ],
    );
    let opt = |f: &dyn Fn(&Run) -> Option<f64>| {
        let values: Vec<f64> = runs.iter().filter_map(f).collect();
        if values.is_empty() {
            "never".to_string()
        } else if values.len() < runs.len() {
            format!(
                "{} ({} runs: never)",
                Spread::of(&values).show(2),
                runs.len() - values.len()
            )
        } else {
            Spread::of(&values).show(2)
        }
    };
    let growth = spread(&|r| mib(r.rss_peak_kib) - mib(r.rss_start_kib));
    memory.row(vec![
        spread(&|r| mib(r.rss_start_kib)).show(1),
        spread(&|r| mib(r.rss_peak_kib)).show(1),
        spread(&|r| mib(r.rss_end_kib)).show(1),
        growth.show(1),
        opt(&|r| r.first_close_s),
        opt(&|r| r.half_closed_s),
        opt(&|r| r.all_closed_s),
        ends(&runs),
    ]);
    let ratio = spread(&|r| r.p99_ratio);
    let notes = vec![format!(
        "stalled clients: RSS grew {:.1} MiB at peak (median); healthy p99 with stalled ÷ baseline = {:.2}",
        growth.median, ratio.median
    )];
    Report::of(
        "slow",
        args,
        json!({
            "baseline_p50_ms": spread(&|r| r.baseline.latency_ms.p50),
            "baseline_p99_ms": spread(&|r| r.baseline.latency_ms.p99),
            "stalled_p50_ms": spread(&|r| r.with_stalled.latency_ms.p50),
            "stalled_p99_ms": spread(&|r| r.with_stalled.latency_ms.p99),
            "p99_ratio": ratio,
            "rss_growth_mib": growth,
        }),
        &runs,
    )
    .tables([latency, memory])
    .notes(notes)
}
