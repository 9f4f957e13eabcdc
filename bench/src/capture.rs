//! `capture`: what capturing costs the database and how fast the relay
//! stores events. With the same writer connections each time, in one run:
//! (a) Postgres's own insert rate into `messages` on a fresh database with
//! no capture installed (the relay never started there); (b) the insert
//! rate with capture installed and the relay running, while the relay's
//! stored head is sampled (its stored-events rate during the window and the
//! lag at the end, then how long it takes to catch up); (c) the relay's own
//! ceiling: with the relay stopped, the same writers build a backlog for the
//! same time, then the relay is started and its drain rate measured.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::env::{self, Env};
use crate::relay::RelayProc;
use crate::report::{CpuMeter, CpuShare, Report, Table};
use crate::stats::Spread;
use crate::writers::{Load, Pairs, Writers, EVENTS_PER_ROW};
use crate::{CaptureMode, Common, LoadArgs};

/// Options of `capture`.
#[derive(clap::Args, Clone, Debug, Serialize)]
#[command(mut_arg("capture", |a| a.default_values(["trigger", "logical"])))]
pub struct Args {
    /// Rows per INSERT statement (one transaction).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Mode {
    capture: CaptureMode,
    /// Rows committed per second with capture installed and the relay running.
    write_rate: f64,
    rows: u64,
    cpu_write: CpuShare,
    /// Changes (rows) stored by the relay per second during the window.
    stored_rate: f64,
    stored_events: u64,
    /// Events committed but not yet stored when the writers stopped.
    lag_events_at_end: i64,
    /// Seconds the relay then needed to store them.
    catch_up_s: f64,
    /// Rows per second written with capture installed but the relay stopped.
    backlog_write_rate: f64,
    backlog_rows: u64,
    /// Rows per second the relay stored while draining that backlog.
    drain_rate: f64,
    cpu_drain: CpuShare,
    /// write_rate ÷ Postgres's rate without capture.
    write_ratio: f64,
    /// stored_rate ÷ Postgres's rate without capture.
    stored_ratio: f64,
    /// drain_rate ÷ Postgres's rate without capture.
    drain_ratio: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    run: usize,
    /// Rows committed per second without capture.
    pg_rate: f64,
    pg_rows: u64,
    cpu_pg: CpuShare,
    modes: Vec<Mode>,
}

fn load(args: &Args) -> Load {
    Load {
        rows_per_sec: None,
        batch: args.batch,
        duration: Duration::from_secs_f64(args.load.seconds),
        pairs: Pairs::Ring {
            first: 1,
            count: 1000,
        },
        record: false,
    }
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    let mut runs = Vec::new();
    for run in 1..=args.common.runs {
        args.common.before_run().await;
        eprintln!("capture: run {run}, Postgres alone");
        let db = env.fresh_db("capture_none").await?;
        let writers = Writers::connect(&db.url, args.load.writers).await?;
        let meter = CpuMeter {
            postmaster: env.postmaster_pid(),
            ..CpuMeter::default()
        };
        let before = meter.read();
        let alone = writers.run(&load(args)).await;
        let cpu_pg = CpuMeter::share(&before, &meter.read());
        drop(writers);
        env.drop_db(&db).await;
        let mut result = Run {
            run,
            pg_rate: alone.rows as f64 / args.load.seconds,
            pg_rows: alone.rows,
            cpu_pg,
            modes: Vec::new(),
        };
        for &capture in &args.load.capture {
            args.common.before_run().await;
            eprintln!("capture: run {run}, {capture} capture");
            let mut mode = one_mode(env, args, capture).await?;
            mode.write_ratio = mode.write_rate / result.pg_rate.max(1e-9);
            mode.stored_ratio = mode.stored_rate / result.pg_rate.max(1e-9);
            mode.drain_ratio = mode.drain_rate / result.pg_rate.max(1e-9);
            result.modes.push(mode);
        }
        runs.push(result);
    }
    Ok(summarize(args, runs))
}

/// Samples the stored head every `every` until stopped.
struct HeadSampler {
    samples: Arc<Mutex<Vec<(tokio::time::Instant, i64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HeadSampler {
    async fn start(url: &str, every: Duration) -> anyhow::Result<Self> {
        let client = env::connect(url).await?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(head) = env::head(&client).await {
                    out.lock().await.push((tokio::time::Instant::now(), head));
                }
                tokio::time::sleep(every).await;
            }
        });
        Ok(Self { samples, task })
    }

    async fn latest(&self) -> Option<(tokio::time::Instant, i64)> {
        self.samples.lock().await.last().copied()
    }

    /// Waits until the head reaches `target`; returns when it was seen.
    async fn until(&self, target: i64, deadline: Duration) -> Option<tokio::time::Instant> {
        let end = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < end {
            if let Some((at, head)) = self.latest().await {
                if head >= target {
                    return Some(at);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

impl Drop for HeadSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn one_mode(env: &Env, args: &Args, capture: CaptureMode) -> anyhow::Result<Mode> {
    let db = env.fresh_db(&format!("capture_{capture}")).await?;
    let relay = RelayProc::start(env, &db, capture, &[]).await?;
    let writers = Writers::connect(&db.url, args.load.writers).await?;
    let admin = env::connect(&db.url).await?;
    let head0 = env::head(&admin).await?;
    let meter = CpuMeter {
        relay: Some(relay.pid),
        postmaster: env.postmaster_pid(),
        clients: Vec::new(),
    };

    // (b) writers and relay together.
    let before = meter.read();
    let outcome = writers.run(&load(args)).await;
    let cpu_write = CpuMeter::share(&before, &meter.read());
    let head_end = env::head(&admin).await?;
    let stopped = tokio::time::Instant::now();
    let target = head0 + (outcome.rows * EVENTS_PER_ROW) as i64;
    let sampler = HeadSampler::start(&db.url, Duration::from_millis(20)).await?;
    let caught_up = sampler.until(target, Duration::from_secs(300)).await;
    drop(sampler);
    let stored_events = (head_end - head0).max(0) as u64;
    let mut mode = Mode {
        capture,
        write_rate: outcome.rows as f64 / args.load.seconds,
        rows: outcome.rows,
        cpu_write,
        stored_rate: stored_events as f64 / EVENTS_PER_ROW as f64 / args.load.seconds,
        stored_events,
        lag_events_at_end: target - head_end,
        catch_up_s: caught_up
            .map(|at| at.duration_since(stopped).as_secs_f64())
            .unwrap_or(f64::NAN),
        ..Mode::default()
    };

    // (c) a backlog written while the relay is stopped, then drained.
    relay.stop().await;
    let backlog = writers.run(&load(args)).await;
    mode.backlog_write_rate = backlog.rows as f64 / args.load.seconds;
    mode.backlog_rows = backlog.rows;
    let start_head = env::head(&admin).await?;
    let target = start_head + (backlog.rows * EVENTS_PER_ROW) as i64;
    let sampler = HeadSampler::start(&db.url, Duration::from_millis(10)).await?;
    let relay = RelayProc::start(env, &db, capture, &[]).await?;
    let meter = CpuMeter {
        relay: Some(relay.pid),
        ..meter
    };
    let before = meter.read();
    let done = sampler.until(target, Duration::from_secs(300)).await;
    mode.cpu_drain = CpuMeter::share(&before, &meter.read());
    let samples = sampler.samples.lock().await.clone();
    drop(sampler);
    // The drain starts at the last sample that still saw the old head.
    let began = samples
        .iter()
        .rev()
        .find(|(_, head)| *head <= start_head)
        .map(|(at, _)| *at);
    if let (Some(began), Some(done)) = (began, done) {
        let seconds = done.duration_since(began).as_secs_f64().max(1e-3);
        mode.drain_rate = backlog.rows as f64 / seconds;
    }
    relay.stop().await;
    drop(writers);
    drop(admin);
    env.drop_db(&db).await;
    Ok(mode)
}

fn summarize(args: &Args, runs: Vec<Run>) -> Report {
    let pg = Spread::of(&runs.iter().map(|r| r.pg_rate).collect::<Vec<_>>());
    let mut table = Table::new(
        format!(
            "capture: rows/s with {} writer connections, {} row(s) per transaction, {} s each (median (min–max) over {} runs); Postgres alone: {} rows/s",
            args.load.writers, args.batch, args.load.seconds, args.common.runs, pg.show(0)
        ),
        &["capture", "writes/s", "with ÷ without", "stored/s (live)", "lag at end (events)", "catch-up s", "drain/s (backlog)", "relay ÷ pg (live)", "relay ÷ pg (drain)"],
    );
    let mut summary = Vec::new();
    let mut notes = Vec::new();
    for &capture in &args.load.capture {
        let modes: Vec<&Mode> = runs
            .iter()
            .flat_map(|r| r.modes.iter().filter(|m| m.capture == capture))
            .collect();
        let spread =
            |f: &dyn Fn(&Mode) -> f64| Spread::of(&modes.iter().map(|m| f(m)).collect::<Vec<_>>());
        let write = spread(&|m| m.write_rate);
        let write_ratio = spread(&|m| m.write_ratio);
        let stored = spread(&|m| m.stored_rate);
        let lag = spread(&|m| m.lag_events_at_end as f64);
        let catch_up = spread(&|m| m.catch_up_s);
        let drain = spread(&|m| m.drain_rate);
        let stored_ratio = spread(&|m| m.stored_ratio);
        let drain_ratio = spread(&|m| m.drain_ratio);
        table.row(vec![
            capture.to_string(),
            write.show(0),
            write_ratio.show(2),
            stored.show(0),
            lag.show(0),
            catch_up.show(2),
            drain.show(0),
            stored_ratio.show(2),
            drain_ratio.show(2),
        ]);
        let want = if capture == CaptureMode::Logical {
            0.95
        } else {
            0.85
        };
        notes.push(format!(
            "target {capture}: writes with capture ÷ without ≥ {want}: {} ({:.2}); relay throughput ÷ Postgres insert rate ≥ 1.0: live {:.2}, backlog drain {:.2}",
            if write_ratio.median >= want { "met" } else { "not met" },
            write_ratio.median,
            stored_ratio.median,
            drain_ratio.median
        ));
        summary.push(json!({
            "capture": capture, "pg_rate": pg, "write_rate": write, "write_ratio": write_ratio,
            "stored_rate": stored, "lag_events_at_end": lag, "catch_up_s": catch_up,
            "drain_rate": drain, "stored_ratio": stored_ratio, "drain_ratio": drain_ratio,
        }));
    }
    notes.push("rates count messages rows (changes); each row is stored as 2 events".into());
    Report::of("capture", args, &summary, &runs)
        .tables([table])
        .notes(notes)
}
