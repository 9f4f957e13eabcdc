//! `soak`: minutes of steady writes with clients joined and nobody reading
//! `/metrics`, to see whether the relay's memory levels off. Writers insert
//! `messages` rows at a fixed rate between the clients' rooms (`user_{i}`,
//! one client each, as in `latency`); the relay's RSS is read from `/proc`
//! every second and `/metrics` is never requested. Reported: RSS at the
//! start of the writes, at the half and at the end, the least-squares slope
//! over the second half, and the events delivered against those expected
//! (every row makes two frames and each must arrive), with their latency.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::clients::{self, Clients, Plan, Totals};
use crate::env::Env;
use crate::latency::{self, Window};
use crate::relay::RelayProc;
use crate::report::{Report, Table};
use crate::stats::Spread;
use crate::writers::{Load, Pairs, Writers, EVENTS_PER_ROW};
use crate::LoadArgs;

/// How often the relay's RSS is read.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often the client processes hand over their samples (bounds what
/// they hold).
const REPORT_EVERY: usize = 10;
/// Frames still in flight after the writes arrive within this tail.
const TAIL: Duration = Duration::from_millis(1500);
/// How long after the planned end the writes may still run.
const OVERRUN: Duration = Duration::from_secs(60);

/// Options of `soak`.
#[derive(clap::Args, Clone, Debug, Serialize)]
#[command(mut_arg("seconds", |a| a.default_value("180")), mut_arg("runs", |a| a.default_value("1")))]
pub struct Args {
    /// Rows written per second (each row makes two frames).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// WebSocket connections, one per room `user_{i}`.
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

/// One reading of the relay's RSS.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds from the start of the writes.
    pub t_s: f64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    run: usize,
    rows: u64,
    achieved_rate: f64,
    writer_errors: u64,
    /// Events the rows should have produced (two per row, one client each).
    expected: u64,
    /// Events received that match a committed row.
    delivered: u64,
    /// Event frames received in all.
    frames: u64,
    #[serde(flatten)]
    window: Window,
    rss_start_kib: u64,
    rss_half_kib: u64,
    rss_end_kib: u64,
    rss_peak_kib: u64,
    /// RSS after the frames in flight arrived.
    rss_after_kib: u64,
    /// Least-squares slope of RSS over the second half, KiB per minute.
    slope_kib_per_min: f64,
    closes: std::collections::BTreeMap<u16, u64>,
    samples: Vec<Sample>,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    eprintln!("soak: {} s at {} rows/s", args.load.seconds, args.rate);
    let runs = args
        .load
        .common
        .each_run("soak", async |run| one(env, args, run).await)
        .await?;
    Ok(summarize(args, runs))
}

async fn one(env: &Env, args: &Args, run: usize) -> anyhow::Result<Run> {
    let db = env.fresh_db("soak").await?;
    let capture = args.load.one_capture()?;
    let relay = RelayProc::start(env, &db, capture, &[]).await?;
    let plan = Plan::latency(env, relay.addr);
    let clients = args.clients.max(1);
    let rooms = clients::conns(clients, |i| vec![format!("user_{}", i + 1)]);
    let mut group = Clients::start_all(env, plan, rooms, 5000, 1).await?;
    let writers = Arc::new(Writers::connect(&db.url, args.load.writers).await?);
    let load = Load {
        rows_per_sec: Some(args.rate),
        batch: 1,
        duration: Duration::from_secs_f64(args.load.seconds),
        pairs: Pairs::Ring {
            first: 1,
            count: clients as i64,
        },
        record: true,
    };
    group.report().await?;
    let started = tokio::time::Instant::now();
    let mut samples = vec![Sample {
        t_s: 0.0,
        rss_kib: relay.rss_kib(),
    }];
    let task = {
        let writers = writers.clone();
        tokio::spawn(async move { writers.run(&load).await })
    };
    let mut totals = Totals::default();
    let merge = |t: Totals, into: &mut Totals| {
        into.frames += t.frames;
        into.samples.extend(t.samples);
        for (code, n) in t.closes {
            *into.closes.entry(code).or_default() += n;
        }
    };
    let give_up = started + Duration::from_secs_f64(args.load.seconds) + OVERRUN;
    let mut tick = tokio::time::interval_at(started + SAMPLE_EVERY, SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !task.is_finished() && tokio::time::Instant::now() < give_up {
        tick.tick().await;
        samples.push(Sample {
            t_s: started.elapsed().as_secs_f64(),
            rss_kib: relay.rss_kib(),
        });
        if samples.len().is_multiple_of(REPORT_EVERY) {
            let t = group.report().await?;
            merge(t, &mut totals);
        }
    }
    anyhow::ensure!(task.is_finished(), "the writers did not stop in time");
    let outcome = task.await?;
    samples.push(Sample {
        t_s: started.elapsed().as_secs_f64(),
        rss_kib: relay.rss_kib(),
    });
    tokio::time::sleep(TAIL).await;
    let t = group.report().await?;
    merge(t, &mut totals);
    let rss_after = relay.rss_kib();
    let window = latency::window(
        &outcome.commits,
        &totals,
        outcome.start_ns,
        args.load.seconds,
    );
    let half = args.load.seconds / 2.0;
    let at = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.t_s - t).abs().total_cmp(&(b.t_s - t).abs()))
            .map(|s| s.rss_kib)
            .unwrap_or_default()
    };
    let second_half: Vec<Sample> = samples.iter().copied().filter(|s| s.t_s >= half).collect();
    let result = Run {
        run,
        rows: outcome.rows,
        achieved_rate: outcome.rows as f64 / args.load.seconds.max(1e-9),
        writer_errors: outcome.errors,
        expected: outcome.rows * EVENTS_PER_ROW,
        delivered: window.samples,
        frames: totals.frames,
        rss_start_kib: samples[0].rss_kib,
        rss_half_kib: at(half),
        rss_end_kib: samples.last().map(|s| s.rss_kib).unwrap_or_default(),
        rss_peak_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or_default(),
        rss_after_kib: rss_after,
        slope_kib_per_min: slope(&second_half) * 60.0,
        closes: totals.closes.clone(),
        window,
        samples,
    };
    group.stop().await;
    relay.stop().await;
    drop(writers);
    env.drop_db(&db).await;
    Ok(result)
}

/// Least-squares slope of RSS against time, KiB per second (0 with fewer
/// than two samples).
pub fn slope(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.t_s).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.t_s - mean_t) * (s.rss_kib as f64 - mean_r);
        den += (s.t_s - mean_t).powi(2);
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

fn summarize(args: &Args, runs: Vec<Run>) -> Report {
    let spread = |f: &dyn Fn(&Run) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut table = Table::new(
        format!(
            "soak: relay RSS (MiB) over {} s at {} rows/s, {} clients, {} capture, no /metrics scrape (median (min–max) over {} runs)",
            args.load.seconds, args.rate, args.clients, args.load.capture_names(), runs.len()
        ),
        &[
            "RSS start",
            "RSS half",
            "RSS end",
            "end − half",
            "slope 2nd half KiB/min",
            "achieved rows/s",
            "events delivered/expected",
            "lost",
            "p50 ms",
            "p99 ms",
            "closes",
        ],
    );
    let expected: u64 = runs.iter().map(|r| r.expected).sum();
    let delivered: u64 = runs.iter().map(|r| r.delivered).sum();
    let lost: u64 = runs.iter().map(|r| r.window.lost).sum();
    let closes: u64 = runs.iter().flat_map(|r| r.closes.values()).sum();
    let slope = spread(&|r| r.slope_kib_per_min);
    let growth = spread(&|r| mib(r.rss_end_kib) - mib(r.rss_half_kib));
    table.row(vec![
        spread(&|r| mib(r.rss_start_kib)).show(1),
        spread(&|r| mib(r.rss_half_kib)).show(1),
        spread(&|r| mib(r.rss_end_kib)).show(1),
        growth.show(2),
        slope.show(1),
        spread(&|r| r.achieved_rate).show(0),
        format!("{delivered}/{expected}"),
        lost.to_string(),
        spread(&|r| r.window.latency_ms.p50).show(2),
        spread(&|r| r.window.latency_ms.p99).show(2),
        closes.to_string(),
    ]);
    let mut tables = vec![table];
    // The first run's RSS about every tenth of the way.
    if let Some(first) = runs.first() {
        let steps = 10;
        let marks: Vec<f64> = (0..=steps)
            .map(|i| args.load.seconds * i as f64 / steps as f64)
            .collect();
        let mut trace = Table::new(
            "soak: relay RSS (MiB) of run 1 against seconds of writing",
            &marks
                .iter()
                .map(|t| format!("{t:.0} s"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        trace.row(
            marks
                .iter()
                .map(|&t| {
                    first
                        .samples
                        .iter()
                        .min_by(|a, b| (a.t_s - t).abs().total_cmp(&(b.t_s - t).abs()))
                        .map(|s| format!("{:.1}", mib(s.rss_kib)))
                        .unwrap_or_default()
                })
                .collect(),
        );
        tables.push(trace);
    }
    let notes = vec![format!(
        "RSS in the second half: {:+.2} MiB, slope {:.1} KiB/min (median); events delivered {delivered} of {expected}{}",
        growth.median,
        slope.median,
        if lost == 0 && delivered == expected { ", none lost" } else { "" }
    )];
    let summary = json!({
        "rss_start_mib": spread(&|r| mib(r.rss_start_kib)),
        "rss_half_mib": spread(&|r| mib(r.rss_half_kib)),
        "rss_end_mib": spread(&|r| mib(r.rss_end_kib)),
        "second_half_growth_mib": growth,
        "slope_kib_per_min": slope,
        "delivered": delivered, "expected": expected, "lost": lost,
    });
    Report::of("soak", args, summary, &runs)
        .tables(tables)
        .notes(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_least_squares() {
        let line: Vec<Sample> = (0..10)
            .map(|i| Sample {
                t_s: i as f64,
                rss_kib: 1000 + 3 * i,
            })
            .collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat = [
            Sample {
                t_s: 1.0,
                rss_kib: 5,
            },
            Sample {
                t_s: 2.0,
                rss_kib: 5,
            },
        ];
        assert_eq!(slope(&flat), 0.0);
        assert_eq!(slope(&flat[..1]), 0.0);
    }
}
