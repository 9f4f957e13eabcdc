//! `fanout`: many connections on one relay. For each connection count N,
//! with a fresh relay: the relay's RSS before any connection and after all
//! N joined (idle KiB per connection); then two loads offered at
//! `--deliveries` frames per second: (b) one hot room every connection is
//! in (`user_1`; each row is one frame per connection), and (c) many small
//! rooms of `--room-size` members (each row goes to two of them). Reported:
//! frames received by all clients per second, summed, from the first write
//! until the last frame of the rows written arrived (a relay that falls
//! behind is not credited for the frames it delivers late; the rate during
//! the writes alone is in the JSON), and the relay's RSS per connection
//! under load. Clients reconnect when the relay closes them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rowcast_devkit::process;
use serde::Serialize;
use serde_json::json;

use crate::clients::{self, Clients, Plan};
use crate::env::{self, Env, USERS};
use crate::relay::RelayProc;
use crate::report::{CpuMeter, CpuShare, Report, Table};
use crate::stats::Spread;
use crate::sys;
use crate::writers::{Load, Pairs, Writers, EVENTS_PER_ROW};
use crate::LoadArgs;

/// How long to wait for the frames still queued after a load.
const TAIL_LIMIT: Duration = Duration::from_secs(120);
/// The tail ends after this long without a frame (longer than the relay's
/// poll interval, so a relay that missed a wake-up is waited for).
const TAIL_QUIET: Duration = Duration::from_secs(3);

/// Open files the relay needs besides its connections (pool, listener, ...).
const RELAY_FILES: u64 = 500;

/// Options of `fanout`.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Connection counts to measure (at most the open-files limit of one
    /// process minus a margin; 50,000 is not possible with 20,000 files).
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10000, 19000])]
    pub connections: Vec<usize>,
    /// Frames per second offered to all clients together.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub deliveries: f64,
    /// Members of each small room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Most connections per client process.
    #[arg(long, default_value_t = 4000)]
    pub per_process: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Phase {
    /// Frames per second the writers offered (rows/s × members reached).
    offered_per_sec: f64,
    /// Rows per second the writers achieved.
    rows_per_sec: f64,
    /// Frames the rows written should have produced.
    expected_frames: u64,
    /// Frames received, during the writes and after until none arrived.
    frames: u64,
    /// frames ÷ (writing time + time until the last of them arrived).
    deliveries_per_sec: f64,
    /// Frames received per second while the writers were writing.
    window_deliveries_per_sec: f64,
    /// Seconds after the writers stopped until the last frame arrived.
    tail_s: f64,
    /// Events the relay stored while the writers wrote.
    stored_during_writes: u64,
    /// Events it stored by the end of the tail.
    stored_in_all: u64,
    /// What the relay's database sessions were doing when the writers
    /// stopped (state, wait event, seconds in the query, the query).
    relay_queries: Vec<String>,
    closes: std::collections::BTreeMap<u16, u64>,
    reconnects: u64,
    open_at_end: u64,
    rss_peak_kib: u64,
    kib_per_conn: f64,
    cpu: CpuShare,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    run: usize,
    connections: usize,
    connected: u64,
    failed: u64,
    connect_s: f64,
    rss_before_kib: u64,
    rss_idle_kib: u64,
    idle_kib_per_conn: f64,
    hot: Phase,
    small: Phase,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    let most = sys::nofile_hard().saturating_sub(RELAY_FILES) as usize;
    let mut notes = vec![format!(
        "one relay process may open {} files here (RLIMIT_NOFILE hard limit), so at most {most} connections are measured; 50,000 needs a higher limit",
        sys::nofile_hard()
    )];
    let mut counts = Vec::new();
    for &n in &args.connections {
        if n > most {
            notes.push(format!(
                "{n} connections asked for: measured {most} instead"
            ));
        }
        counts.push(n.min(most).max(1));
    }
    let mut runs = Vec::new();
    for run in 1..=args.load.common.runs {
        for &n in &counts {
            args.load.common.before_run().await;
            eprintln!("fanout: run {run}, {n} connections");
            runs.push(one(env, args, run, n).await?);
        }
    }
    Ok(summarize(args, &counts, runs, notes))
}

async fn one(env: &Env, args: &Args, run: usize, n: usize) -> anyhow::Result<Run> {
    let db = env.fresh_db("fanout").await?;
    let capture = args.load.one_capture()?;
    let relay = RelayProc::start(env, &db, capture, &[]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = relay.rss_kib();
    let room_size = args.room_size.max(1);
    let rooms = n.div_ceil(room_size) as i64;
    let sink = USERS;
    anyhow::ensure!(
        rooms + 2 < sink,
        "too many small rooms for the seeded users"
    );
    let plan = Plan {
        reconnect: true,
        ..Plan::of(env, relay.addr)
    };
    let conns = clients::conns(n, |i| {
        vec!["user_1".to_string(), format!("user_{}", 2 + i / room_size)]
    });
    let started = std::time::Instant::now();
    let (mut group, ready) = Clients::start(env, plan, conns, args.per_process, 2).await?;
    let connect_s = started.elapsed().as_secs_f64();
    if ready.failed > 0 {
        eprintln!(
            "fanout: {} of {n} connections failed: {:?}",
            ready.failed, ready.first_error
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = relay.rss_kib();
    let writers = Writers::connect(&db.url, args.load.writers).await?;
    let admin = env::connect(&db.url).await?;
    let meter = CpuMeter {
        relay: Some(relay.pid),
        postmaster: env.postmaster_pid(),
        clients: group.pids(),
    };
    let connected = ready.connected.max(1) as f64;

    // (b) one hot room: each row is one frame for every connection.
    let hot_rows = args.deliveries / connected;
    let hot = Load {
        rows_per_sec: Some(hot_rows),
        batch: batch_for(hot_rows),
        duration: Duration::from_secs_f64(args.load.seconds),
        pairs: Pairs::Fixed {
            sender: 1,
            recipient: sink,
        },
        record: false,
    };
    let parts = Parts {
        writers: &writers,
        relay: &relay,
        meter: &meter,
        admin: &admin,
        rss_before,
        n,
    };
    let hot = phase(&mut group, &parts, hot, connected).await?;

    // (c) small rooms: each row is a frame for the members of two rooms.
    let small_rows = args.deliveries / (EVENTS_PER_ROW as f64 * room_size as f64);
    let small = Load {
        rows_per_sec: Some(small_rows),
        batch: batch_for(small_rows),
        duration: Duration::from_secs_f64(args.load.seconds),
        pairs: Pairs::Ring {
            first: 2,
            count: rooms,
        },
        record: false,
    };
    let per_row = EVENTS_PER_ROW as f64 * room_size as f64;
    let small = phase(&mut group, &parts, small, per_row).await?;

    group.stop().await;
    relay.stop().await;
    drop(writers);
    env.drop_db(&db).await;
    Ok(Run {
        run,
        connections: n,
        connected: ready.connected,
        failed: ready.failed,
        connect_s,
        rss_before_kib: rss_before,
        rss_idle_kib: rss_idle,
        idle_kib_per_conn: (rss_idle as f64 - rss_before as f64) / n as f64,
        hot,
        small,
    })
}

/// Rows per statement: about 400 statements per second at most.
fn batch_for(rows_per_sec: f64) -> usize {
    (rows_per_sec / 400.0).ceil().max(1.0) as usize
}

/// What a phase measures with.
struct Parts<'a> {
    writers: &'a Writers,
    relay: &'a RelayProc,
    meter: &'a CpuMeter,
    admin: &'a tokio_postgres::Client,
    /// The relay's RSS before any connection.
    rss_before: u64,
    /// Connections asked for.
    n: usize,
}

async fn phase(
    group: &mut Clients,
    parts: &Parts<'_>,
    load: Load,
    frames_per_row: f64,
) -> anyhow::Result<Phase> {
    let _ = group.report().await?;
    let peak = Arc::new(AtomicU64::new(parts.relay.rss_kib()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (peak.clone(), stop.clone(), parts.relay.pid);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(process::rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let head_before = env::head(parts.admin).await?;
    let before = parts.meter.read();
    let started = tokio::time::Instant::now();
    let outcome = parts.writers.run(&load).await;
    let window = group.report().await?;
    let head_at_end = env::head(parts.admin).await?;
    let relay_queries = relay_queries(parts.admin).await;
    // Then until nothing more arrives: the frames of rows written during
    // the window that the relay had not delivered yet.
    let (mut frames, mut closes, mut reconnects) =
        (window.frames, window.closes.clone(), window.reconnects);
    let mut last_frame_at = tokio::time::Instant::now();
    let mut open = window.open;
    let give_up = last_frame_at + TAIL_LIMIT;
    loop {
        let now = tokio::time::Instant::now();
        if now.duration_since(last_frame_at) >= TAIL_QUIET || now >= give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tail = group.report().await?;
        if tail.frames > 0 {
            last_frame_at = tokio::time::Instant::now();
        }
        frames += tail.frames;
        reconnects += tail.reconnects;
        open = tail.open;
        for (code, n) in tail.closes {
            *closes.entry(code).or_default() += n;
        }
    }
    let cpu = CpuMeter::share(&before, &parts.meter.read());
    let head_after = env::head(parts.admin).await?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let rss_peak = peak.load(Ordering::Relaxed);
    let seconds = load.duration.as_secs_f64();
    let end_to_end = last_frame_at.duration_since(started).as_secs_f64();
    Ok(Phase {
        offered_per_sec: load.rows_per_sec.unwrap_or(0.0) * frames_per_row,
        rows_per_sec: outcome.rows as f64 / seconds,
        expected_frames: (outcome.rows as f64 * frames_per_row) as u64,
        frames,
        deliveries_per_sec: frames as f64 / end_to_end.max(1e-9),
        window_deliveries_per_sec: window.frames as f64 / window.window_s.max(1e-9),
        tail_s: (end_to_end - seconds).max(0.0),
        stored_during_writes: (head_at_end - head_before).max(0) as u64,
        stored_in_all: (head_after - head_before).max(0) as u64,
        relay_queries,
        closes,
        reconnects,
        open_at_end: open,
        rss_peak_kib: rss_peak,
        kib_per_conn: (rss_peak as f64 - parts.rss_before as f64) / parts.n as f64,
        cpu,
    })
}

/// The relay's sessions in `pg_stat_activity`, for when it falls behind.
async fn relay_queries(admin: &tokio_postgres::Client) -> Vec<String> {
    let rows = admin
        .query(
            "SELECT concat_ws(' | ', state, wait_event_type || ':' || wait_event,
                    round(extract(epoch FROM clock_timestamp() - query_start)::numeric, 3),
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 80))
             FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'rowcast'",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter().map(|row| row.get(0)).collect()
}

fn summarize(args: &Args, counts: &[usize], runs: Vec<Run>, mut notes: Vec<String>) -> Report {
    let mut table = Table::new(
        format!(
            "fanout: {} offered frames/s, {} s per layout, rooms of {} (median (min–max) over {} runs)",
            args.deliveries, args.load.seconds, args.room_size, args.load.common.runs
        ),
        &["connections", "idle KiB/conn", "hot deliveries/s", "hot KiB/conn", "small deliveries/s", "small tail s", "small KiB/conn", "4008 closes (hot/small)", "cpu hot (median run)"],
    );
    let mut summary = Vec::new();
    for &n in counts {
        let of: Vec<&Run> = runs.iter().filter(|r| r.connections == n).collect();
        let spread =
            |f: &dyn Fn(&Run) -> f64| Spread::of(&of.iter().map(|r| f(r)).collect::<Vec<_>>());
        let idle = spread(&|r| r.idle_kib_per_conn);
        let hot = spread(&|r| r.hot.deliveries_per_sec);
        let hot_kib = spread(&|r| r.hot.kib_per_conn);
        let small = spread(&|r| r.small.deliveries_per_sec);
        let small_kib = spread(&|r| r.small.kib_per_conn);
        let slow = |l: &Phase| l.closes.get(&4008).copied().unwrap_or(0);
        let closes: (u64, u64) = of
            .iter()
            .fold((0, 0), |(h, s), r| (h + slow(&r.hot), s + slow(&r.small)));
        let cpu = {
            let mut sorted = of.clone();
            sorted.sort_by(|a, b| {
                a.hot
                    .deliveries_per_sec
                    .total_cmp(&b.hot.deliveries_per_sec)
            });
            sorted
                .get(sorted.len() / 2)
                .map(|r| r.hot.cpu)
                .unwrap_or_default()
        };
        table.row(vec![
            n.to_string(),
            idle.show(1),
            hot.show(0),
            hot_kib.show(1),
            small.show(0),
            spread(&|r| r.small.tail_s).show(1),
            small_kib.show(1),
            format!("{}/{}", closes.0, closes.1),
            cpu.show(),
        ]);
        summary.push(json!({
            "connections": n, "idle_kib_per_conn": idle, "hot_deliveries_per_sec": hot,
            "hot_kib_per_conn": hot_kib, "small_deliveries_per_sec": small, "small_kib_per_conn": small_kib,
            "closes_4008_hot": closes.0, "closes_4008_small": closes.1,
        }));
        let best = hot.median.max(small.median);
        notes.push(format!(
            "target: deliveries ≥ 500,000/s on one node, {n} connections: {} (best layout {:.0}/s of {:.0} offered)",
            if best >= 500_000.0 { "met" } else { "not met" },
            best,
            args.deliveries
        ));
        if Some(&n) == counts.iter().max() {
            notes.push(format!(
                "target: idle memory ≤ 16 KiB per connection at {n} connections: {} ({:.1} KiB)",
                if idle.median <= 16.0 {
                    "met"
                } else {
                    "not met"
                },
                idle.median
            ));
        }
    }
    Report::of("fanout", args, &summary, &runs)
        .tables([table])
        .notes(notes)
}
