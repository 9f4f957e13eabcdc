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

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::env::{self, Env};
use crate::relay::RelayProc;
use crate::report::{CpuMeter, CpuReading, CpuShare, Report, Table};
use crate::stats::Spread;
use crate::sys;
use crate::writers::{Load, Pairs, Writers, EVENTS_PER_ROW};
use crate::{CaptureMode, LoadArgs};

/// Options of `capture`.
#[derive(clap::Args, Clone, Debug, Serialize)]
#[command(mut_arg("capture", |a| a.default_values(["trigger", "logical"])))]
pub struct Args {
    /// Rows per INSERT statement (one transaction).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Pin Postgres (every backend) to CPU 0 and the relay and the bench's
    /// writers to CPU 1, so that neither side takes the other's core (a
    /// throwaway cluster only).
    #[arg(long)]
    pub pin: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
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
    /// What Postgres did per change (row), in each phase.
    cost: ModeCost,
    /// WAL bytes per change by the relation a record changes (the
    /// writers and the relay together; `(none)`: commit records and the
    /// like), from pg_walinspect.
    wal_by_relation: Vec<(String, f64)>,
    /// Postgres execution time per change by top-level statement (the
    /// writers' insert includes its triggers), from pg_stat_statements,
    /// over the live phase until the relay caught up.
    time_by_statement: Vec<(String, f64)>,
}

/// Clears the database's statement statistics; false where
/// pg_stat_statements is not loaded.
async fn reset_statement_stats(admin: &tokio_postgres::Client) -> bool {
    let reset = admin
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
             SELECT pg_stat_statements_reset()",
        )
        .await;
    reset.is_ok()
}

/// The statements that took the most execution time in this database
/// since the reset, in µs per `rows`.
async fn time_by_statement(
    admin: &tokio_postgres::Client,
    rows: u64,
) -> anyhow::Result<Vec<(String, f64)>> {
    let stats = admin
        .query(
            "SELECT left(btrim(regexp_replace(query, '\\s+', ' ', 'g')), 60), total_exec_time
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '%pg_stat_statements%'
               AND query NOT LIKE '%pg_current_wal%'
             ORDER BY total_exec_time DESC LIMIT 6",
            &[],
        )
        .await?;
    let per_row = rows.max(1) as f64;
    Ok(stats
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                row.get::<_, f64>(1) * 1000.0 / per_row,
            )
        })
        .collect())
}

/// One second of closed-loop writes with the relay running, then, once it
/// has stored them, the WAL in between split by the relation each record
/// changes (the first block it references), per row written.
async fn wal_by_relation(
    args: &Args,
    admin: &tokio_postgres::Client,
    writers: &Writers,
) -> anyhow::Result<Vec<(String, f64)>> {
    admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .await?;
    let start: String = admin
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let head = env::head(admin).await?;
    let sample = Load {
        duration: Duration::from_secs(1),
        ..load(args)
    };
    let written = writers.run(&sample).await;
    let target = head + (written.rows * EVENTS_PER_ROW) as i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env::head(admin).await? < target {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the relay did not store the sample"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rows = admin
        .query(
            "WITH r AS (
                 SELECT record_length,
                        substring(block_ref from 'rel [0-9]+/[0-9]+/([0-9]+)')::oid AS node
                 FROM pg_get_wal_records_info($1::text::pg_lsn, pg_current_wal_flush_lsn())
             )
             SELECT coalesce(c.relname, CASE WHEN r.node IS NULL THEN '(none)' ELSE '(other)' END),
                    sum(r.record_length)::float8
             FROM r LEFT JOIN pg_class c ON c.relfilenode = r.node
             GROUP BY 1 ORDER BY 2 DESC",
            &[&start],
        )
        .await?;
    let per_row = written.rows.max(1) as f64;
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, f64>(1) / per_row))
        .collect())
}

/// Postgres's work per change (row) in one capture mode: WAL bytes and
/// CPU µs, for the writers and the relay together (live), the writers
/// alone (a backlog written while the relay is stopped) and the relay
/// alone (that backlog drained).
#[derive(Clone, Debug, Default, Serialize)]
struct ModeCost {
    wal_live: f64,
    wal_writers: f64,
    wal_relay: f64,
    cpu_us_live: f64,
    cpu_us_writers: f64,
    cpu_us_relay: f64,
}

/// Postgres CPU µs per row between two readings.
fn cpu_us_per_row(before: &CpuReading, after: &CpuReading, rows: u64) -> f64 {
    CpuMeter::postgres_seconds(before, after) * 1e6 / rows.max(1) as f64
}

#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    run: usize,
    /// Rows committed per second without capture.
    pg_rate: f64,
    pg_rows: u64,
    cpu_pg: CpuShare,
    /// WAL bytes and Postgres CPU µs per row without capture.
    wal_alone: f64,
    cpu_us_alone: f64,
    /// Execution µs per row by statement without capture.
    time_alone: Vec<(String, f64)>,
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
    if args.pin {
        let postmaster = env
            .postmaster_pid()
            .context("--pin needs the bench's own cluster, not DATABASE_URL")?;
        sys::pin(postmaster, 0, true)?;
        sys::pin(std::process::id(), 1, false)?;
    }
    let mut runs = Vec::new();
    for run in 1..=args.load.common.runs {
        args.load.common.before_run().await;
        eprintln!("capture: run {run}, Postgres alone");
        let db = env.fresh_db("capture_none").await?;
        let writers = Writers::connect(&db.url, args.load.writers).await?;
        let meter = CpuMeter {
            postmaster: env.postmaster_pid(),
            ..CpuMeter::default()
        };
        let admin = env::connect(&db.url).await?;
        let statements = reset_statement_stats(&admin).await;
        let wal0 = env::wal_position(&admin).await?;
        let before = meter.read();
        let alone = writers.run(&load(args)).await;
        let after = meter.read();
        let cpu_pg = CpuMeter::share(&before, &after);
        let wal_alone = (env::wal_position(&admin).await? - wal0) / alone.rows.max(1) as f64;
        let time_alone = if statements {
            time_by_statement(&admin, alone.rows).await?
        } else {
            Vec::new()
        };
        drop((writers, admin));
        env.drop_db(&db).await;
        let mut result = Run {
            run,
            pg_rate: alone.rows as f64 / args.load.seconds,
            pg_rows: alone.rows,
            cpu_us_alone: cpu_us_per_row(&before, &after, alone.rows),
            cpu_pg,
            wal_alone,
            time_alone,
            modes: Vec::new(),
        };
        for &capture in &args.load.capture {
            args.load.common.before_run().await;
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

/// The relay, pinned to CPU 1 under `--pin`.
async fn start_relay(
    env: &Env,
    args: &Args,
    db: &crate::env::Db,
    capture: CaptureMode,
) -> anyhow::Result<RelayProc> {
    let relay = RelayProc::start(env, db, capture, &[]).await?;
    if args.pin {
        sys::pin(relay.pid, 1, false)?;
    }
    Ok(relay)
}

async fn one_mode(env: &Env, args: &Args, capture: CaptureMode) -> anyhow::Result<Mode> {
    let db = env.fresh_db(&format!("capture_{capture}")).await?;
    let relay = start_relay(env, args, &db, capture).await?;
    let writers = Writers::connect(&db.url, args.load.writers).await?;
    let admin = env::connect(&db.url).await?;
    let head0 = env::head(&admin).await?;
    let meter = CpuMeter {
        relay: Some(relay.pid),
        postmaster: env.postmaster_pid(),
        clients: Vec::new(),
    };

    // (b) writers and relay together.
    let statements = reset_statement_stats(&admin).await;
    let wal0 = env::wal_position(&admin).await?;
    let before = meter.read();
    let live_start = before;
    let outcome = writers.run(&load(args)).await;
    let cpu_write = CpuMeter::share(&before, &meter.read());
    let head_end = env::head(&admin).await?;
    let stopped = tokio::time::Instant::now();
    let target = head0 + (outcome.rows * EVENTS_PER_ROW) as i64;
    let sampler = HeadSampler::start(&db.url, Duration::from_millis(20)).await?;
    let caught_up = sampler.until(target, Duration::from_secs(300)).await;
    drop(sampler);
    // Once caught up, the relay's work for these rows is in the WAL too.
    let wal_live = env::wal_position(&admin).await? - wal0;
    let live_end = meter.read();
    let time_by_statement = if statements {
        time_by_statement(&admin, outcome.rows).await?
    } else {
        Vec::new()
    };
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
        time_by_statement,
        ..Mode::default()
    };

    // (c) a backlog written while the relay is stopped, then drained.
    relay.stop().await;
    let wal1 = env::wal_position(&admin).await?;
    let pg_only = CpuMeter {
        relay: None,
        ..meter.clone()
    };
    let backlog_start = pg_only.read();
    let backlog = writers.run(&load(args)).await;
    let backlog_end = pg_only.read();
    let wal2 = env::wal_position(&admin).await?;
    mode.backlog_write_rate = backlog.rows as f64 / args.load.seconds;
    mode.backlog_rows = backlog.rows;
    let start_head = env::head(&admin).await?;
    let target = start_head + (backlog.rows * EVENTS_PER_ROW) as i64;
    let sampler = HeadSampler::start(&db.url, Duration::from_millis(10)).await?;
    let relay = start_relay(env, args, &db, capture).await?;
    let meter = CpuMeter {
        relay: Some(relay.pid),
        ..meter
    };
    let drain_start = meter.read();
    let done = sampler.until(target, Duration::from_secs(300)).await;
    let drain_end = meter.read();
    mode.cpu_drain = CpuMeter::share(&drain_start, &drain_end);
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
    let wal3 = env::wal_position(&admin).await?;
    let per_row = |bytes: f64, rows: u64| bytes / rows.max(1) as f64;
    mode.cost = ModeCost {
        wal_live: per_row(wal_live, outcome.rows),
        wal_writers: per_row(wal2 - wal1, backlog.rows),
        wal_relay: per_row(wal3 - wal2, backlog.rows),
        cpu_us_live: cpu_us_per_row(&live_start, &live_end, outcome.rows),
        cpu_us_writers: cpu_us_per_row(&backlog_start, &backlog_end, backlog.rows),
        cpu_us_relay: cpu_us_per_row(&drain_start, &drain_end, backlog.rows),
    };
    match wal_by_relation(args, &admin, &writers).await {
        Ok(breakdown) => mode.wal_by_relation = breakdown,
        Err(e) => eprintln!("capture: no WAL breakdown by relation ({e:#})"),
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
            args.load.writers, args.batch, args.load.seconds, args.load.common.runs, pg.show(0)
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
        let want = if capture.is_logical() { 0.95 } else { 0.85 };
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
    if args.pin {
        notes.push("pinned: Postgres on CPU 0, the relay and the bench's writers on CPU 1".into());
    }
    notes.push("WAL by relation: one second of writes with the relay running, the last run's, from pg_walinspect (each record counted for the first relation it changes)".into());
    notes.push("cost: WAL bytes from pg_current_wal_insert_lsn(), Postgres CPU from the postmaster and its children; live = writers and relay together until the relay caught up, writers = a backlog written while the relay was stopped, relay = that backlog drained".into());
    Report::of("capture", args, &summary, &runs)
        .tables([
            table,
            cost_table(args, &runs),
            wal_table(args, &runs),
            statement_table(&runs),
        ])
        .notes(notes)
}

/// Postgres execution time per change by statement, for each mode (the
/// last run's).
fn statement_table(runs: &[Run]) -> Table {
    let mut table = Table::new(
        "capture: Postgres execution µs per change by top-level statement (live, the last run; pg_stat_statements)",
        &["capture", "µs/row", "statement"],
    );
    let Some(last) = runs.last() else {
        return table;
    };
    for (statement, micros) in &last.time_alone {
        table.row(vec![
            "none".into(),
            format!("{micros:.1}"),
            statement.clone(),
        ]);
    }
    for mode in &last.modes {
        for (statement, micros) in &mode.time_by_statement {
            table.row(vec![
                mode.capture.to_string(),
                format!("{micros:.1}"),
                statement.clone(),
            ]);
        }
    }
    table
}

/// WAL bytes per change by relation, for each mode (the last run's).
fn wal_table(args: &Args, runs: &[Run]) -> Table {
    let mut headers = vec!["relation"];
    headers.extend(args.load.capture.iter().map(|c| c.as_str()));
    let mut table = Table::new(
        "capture: WAL bytes per change by relation (writers and relay, the last run)",
        &headers,
    );
    let Some(last) = runs.last() else {
        return table;
    };
    let mut relations: Vec<&str> = Vec::new();
    for mode in &last.modes {
        for (relation, _) in &mode.wal_by_relation {
            if !relations.contains(&relation.as_str()) {
                relations.push(relation);
            }
        }
    }
    for relation in relations {
        let mut row = vec![relation.to_string()];
        for &capture in &args.load.capture {
            let bytes = last
                .modes
                .iter()
                .find(|m| m.capture == capture)
                .and_then(|m| m.wal_by_relation.iter().find(|(r, _)| r == relation))
                .map_or(0.0, |(_, b)| *b);
            row.push(format!("{bytes:.0}"));
        }
        table.row(row);
    }
    table
}

/// What Postgres does per change, in each mode and phase.
fn cost_table(args: &Args, runs: &[Run]) -> Table {
    let mut table = Table::new(
        "capture: Postgres's work per change (messages row): WAL bytes and CPU µs (median (min–max) over runs)",
        &["capture", "WAL B live", "WAL B writers", "WAL B relay", "CPU µs live", "CPU µs writers", "CPU µs relay"],
    );
    let alone = |f: &dyn Fn(&Run) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    let none = [alone(&|r| r.wal_alone), alone(&|r| r.cpu_us_alone)];
    table.row(vec![
        "none".into(),
        none[0].show(0),
        none[0].show(0),
        "–".into(),
        none[1].show(1),
        none[1].show(1),
        "–".into(),
    ]);
    for &capture in &args.load.capture {
        let costs: Vec<&ModeCost> = runs
            .iter()
            .flat_map(|r| r.modes.iter().filter(|m| m.capture == capture))
            .map(|m| &m.cost)
            .collect();
        let of = |f: &dyn Fn(&ModeCost) -> f64| {
            Spread::of(&costs.iter().map(|c| f(c)).collect::<Vec<_>>())
        };
        table.row(vec![
            capture.to_string(),
            of(&|c| c.wal_live).show(0),
            of(&|c| c.wal_writers).show(0),
            of(&|c| c.wal_relay).show(0),
            of(&|c| c.cpu_us_live).show(1),
            of(&|c| c.cpu_us_writers).show(1),
            of(&|c| c.cpu_us_relay).show(1),
        ]);
    }
    table
}
