//! `revocation`: commit → `left`. Content rows (author: user 1) each have a
//! room `content_{id}`; strangers (users 2, 3, ..., each with a user token
//! and one connection) join one of them while the content is public, which
//! `realtime.authorize` allows. A trial makes one content row private
//! (`UPDATE content SET visibility = 'private'`, its own transaction) and
//! keeps the time its COMMIT returned; the routes file's `[[access]]` rule
//! for `content` makes the relay authorize the room's members again, and
//! each of them gets `{"type":"left","room":..,"reason":"forbidden"}`,
//! whose arrival the client process notes on the same clock. Before the
//! next trial of a room the content is made public again and its members
//! join again (waiting for the join replies). Trials run one at a time,
//! first on an otherwise idle relay, then while writers insert `messages`
//! rows at `--load-rate` (their events go to rooms nobody joined, so the
//! relay captures and stores them but delivers nothing).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use crate::clients::{Clients, Plan};
use crate::env::{self, Env, USERS};
use crate::relay::RelayProc;
use crate::report::{CpuMeter, CpuShare, Report, Table};
use crate::stats::{PercentileSpread, Percentiles, Spread};
use crate::sys;
use crate::writers::{Load, Pairs, Writers};
use crate::{CaptureMode, Common};

/// Content ids used are `CONTENT_BASE + 1 ..= CONTENT_BASE + rooms`.
const CONTENT_BASE: i64 = 1000;
/// How long a trial waits for its `left` frames.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the client processes are asked for what arrived.
const POLL: Duration = Duration::from_millis(5);
/// Joins refused in a row before a trial gives up on a member (the relay
/// may still hold the refusal of the revocation for a moment).
const REJOIN_ATTEMPTS: u32 = 250;
/// Pause between two refused joins.
const REJOIN_PAUSE: Duration = Duration::from_millis(20);
/// Seconds of background writes before the loaded trials start.
const LOAD_WARMUP: Duration = Duration::from_secs(2);
/// The longest the background writes may run.
const LOAD_LIMIT: Duration = Duration::from_secs(900);
/// The target: commit → `left` under this.
const TARGET_MS: f64 = 1000.0;

/// Options of `revocation`.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Trials per phase (idle, then under load).
    #[arg(long, default_value_t = 200)]
    pub trials: usize,
    /// Content rows, each with its room `content_{id}`.
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    /// Strangers, one connection each; client i joins room i mod rooms.
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
    /// Rows per second written during the second phase (0: no second phase).
    #[arg(long, default_value_t = 1000.0)]
    pub load_rate: f64,
    /// Capture mode of the relay.
    #[arg(long, value_enum, default_value_t = CaptureMode::Trigger)]
    pub capture: CaptureMode,
    /// Writer connections of the background load.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

/// One phase's trials.
#[derive(Clone, Debug, Default, Serialize)]
struct Phase {
    /// Rows per second written in the background (0: none).
    load_rate: f64,
    /// Rows per second the background writers achieved.
    achieved_rate: f64,
    trials: u64,
    /// `left` frames matched to a trial.
    samples: u64,
    /// Members that got no `left` within the trial's timeout.
    lost: u64,
    /// `left` frames that arrived before the writer saw its COMMIT return
    /// (counted as 0 ms).
    before_commit_ack: u64,
    /// `left` frames for a room no trial was waiting for.
    stray: u64,
    /// Joins refused before a member got back into its room.
    rejoins_refused: u64,
    latency_ms: Percentiles,
    /// UPDATE+COMMIT round trips of the revoking statement, ms.
    statement_ms: Percentiles,
    cpu: CpuShare,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    run: usize,
    idle: Phase,
    loaded: Option<Phase>,
    closes: std::collections::BTreeMap<u16, u64>,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rooms >= 1, "--rooms must be at least 1");
    anyhow::ensure!(
        args.clients >= args.rooms,
        "--clients must be at least --rooms (every room needs a member)"
    );
    anyhow::ensure!(
        (args.clients as i64) < USERS,
        "at most {} clients (one seeded user each)",
        USERS - 1
    );
    let runs = args
        .common
        .each_run("revocation", async |run| one(env, args, run).await)
        .await?;
    Ok(summarize(args, runs))
}

/// The room of content row `index` (0-based).
fn content_id(index: usize) -> i64 {
    CONTENT_BASE + 1 + index as i64
}

async fn one(env: &Env, args: &Args, run: usize) -> anyhow::Result<Run> {
    let db = env.fresh_db("revocation").await?;
    let admin = env::connect(&db.url).await?;
    admin
        .execute(
            "INSERT INTO content (id, author_id, title, visibility)
             SELECT g, 1, 'revocation ' || g, 'public' FROM generate_series($1::bigint, $2::bigint) g",
            &[&content_id(0), &content_id(args.rooms - 1)],
        )
        .await?;
    let relay = RelayProc::start(env, &db, args.capture, &[]).await?;
    // Client i is user i + 2 (user 1 is the author) in room i mod rooms.
    let tokens: Vec<String> = (0..args.clients)
        .map(|i| env.user_token(i as i64 + 2))
        .collect();
    let conns: Vec<Vec<String>> = (0..args.clients)
        .map(|i| vec![format!("content_{}", content_id(i % args.rooms))])
        .collect();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); args.rooms];
    for i in 0..args.clients {
        members[i % args.rooms].push(i);
    }
    let plan = Plan {
        token: String::new(),
        tokens,
        control: true,
        ..Plan::of(env, relay.addr)
    };
    let (mut group, ready) = Clients::start(env, plan, conns, 5000, 1).await?;
    anyhow::ensure!(
        ready.failed == 0,
        "{} clients could not connect: {:?}",
        ready.failed,
        ready.first_error
    );
    let meter = CpuMeter {
        relay: Some(relay.pid),
        postmaster: env.postmaster_pid(),
        clients: group.pids(),
    };
    let revoke = admin
        .prepare("UPDATE content SET visibility = 'private' WHERE id = $1")
        .await?;
    let restore = admin
        .prepare("UPDATE content SET visibility = 'public' WHERE id = $1")
        .await?;
    let mut trials = Trials {
        admin: &admin,
        revoke,
        restore,
        members: &members,
        revoked: vec![false; args.rooms],
        next: 0,
    };

    let before = meter.read();
    let mut idle = trials.phase(&mut group, args.trials).await?;
    idle.cpu = CpuMeter::share(&before, &meter.read());

    let loaded = if args.load_rate > 0.0 {
        let writers = Arc::new(Writers::connect(&db.url, args.writers).await?);
        let stop = tokio_util::sync::CancellationToken::new();
        let load = Load {
            rows_per_sec: Some(args.load_rate),
            batch: 1,
            duration: LOAD_LIMIT,
            pairs: Pairs::Ring {
                first: 1,
                count: 100,
            },
            record: false,
        };
        let task = {
            let (writers, stop) = (writers.clone(), stop.clone());
            tokio::spawn(async move { writers.run_until(&load, &stop).await })
        };
        tokio::time::sleep(LOAD_WARMUP).await;
        let before = meter.read();
        let started = tokio::time::Instant::now();
        let phase = trials.phase(&mut group, args.trials).await;
        let after = meter.read();
        let seconds = started.elapsed().as_secs_f64() + LOAD_WARMUP.as_secs_f64();
        stop.cancel();
        let outcome = task.await?;
        let mut phase = phase?;
        phase.load_rate = args.load_rate;
        phase.achieved_rate = outcome.rows as f64 / seconds.max(1e-9);
        phase.cpu = CpuMeter::share(&before, &after);
        if outcome.errors > 0 {
            eprintln!("revocation: {} background writes failed", outcome.errors);
        }
        Some(phase)
    } else {
        None
    };
    let closes = group.report().await?.closes;
    group.stop().await;
    relay.stop().await;
    drop(admin);
    env.drop_db(&db).await;
    Ok(Run {
        run,
        idle,
        loaded,
        closes,
    })
}

/// The trials of one run.
struct Trials<'a> {
    admin: &'a Client,
    revoke: tokio_postgres::Statement,
    restore: tokio_postgres::Statement,
    /// The clients of each room.
    members: &'a [Vec<usize>],
    /// Rooms whose content is private now (their members were removed).
    revoked: Vec<bool>,
    /// The room of the next trial.
    next: usize,
}

impl Trials<'_> {
    async fn phase(&mut self, group: &mut Clients, count: usize) -> anyhow::Result<Phase> {
        let mut phase = Phase::default();
        let mut latencies = Vec::with_capacity(count);
        let mut statements = Vec::with_capacity(count);
        for _ in 0..count {
            let room = self.next;
            self.next = (self.next + 1) % self.members.len();
            let id = content_id(room);
            let name = format!("content_{id}");
            if self.revoked[room] {
                self.admin.execute(&self.restore, &[&id]).await?;
                self.revoked[room] = false;
                for &conn in &self.members[room] {
                    phase.rejoins_refused += rejoin(group, conn).await?;
                }
            }
            // Nothing of an earlier trial is waiting any more.
            phase.stray += group.report().await?.lefts.len() as u64;
            let sent = sys::mono_ns();
            self.admin.execute(&self.revoke, &[&id]).await?;
            let committed = sys::mono_ns();
            self.revoked[room] = true;
            statements.push((committed - sent) as i64);
            phase.trials += 1;
            let expected = self.members[room].len() as u64;
            let mut got = 0;
            let give_up = tokio::time::Instant::now() + TRIAL_TIMEOUT;
            while got < expected && tokio::time::Instant::now() < give_up {
                tokio::time::sleep(POLL).await;
                for (left, at) in group.report().await?.lefts {
                    if left != name {
                        phase.stray += 1;
                        continue;
                    }
                    let ns = at as i64 - committed as i64;
                    if ns < 0 {
                        phase.before_commit_ack += 1;
                    }
                    latencies.push(ns.max(0));
                    got += 1;
                }
            }
            phase.lost += expected.saturating_sub(got);
        }
        phase.samples = latencies.len() as u64;
        phase.latency_ms = Percentiles::of_ns(&mut latencies);
        phase.statement_ms = Percentiles::of_ns(&mut statements);
        Ok(phase)
    }
}

/// Joins a member to its room again, retrying refusals; returns how many
/// joins were refused first.
async fn rejoin(group: &mut Clients, conn: usize) -> anyhow::Result<u64> {
    let mut refused = 0;
    loop {
        match group.rejoin(conn).await? {
            Ok(()) => return Ok(refused),
            Err(error) => {
                refused += 1;
                if refused >= REJOIN_ATTEMPTS as u64 {
                    anyhow::bail!("client {conn} could not join its room again: {error}");
                }
                tokio::time::sleep(REJOIN_PAUSE).await;
            }
        }
    }
}

/// One phase of a run.
type PickPhase = fn(&Run) -> Option<&Phase>;

fn summarize(args: &Args, runs: Vec<Run>) -> Report {
    let mut table = Table::new(
        format!(
            "revocation: commit → left frame, ms ({} trials per phase, {} clients in {} content rooms, {} capture; median (min–max) over {} runs)",
            args.trials, args.clients, args.rooms, args.capture, args.common.runs
        ),
        &["phase", "background rows/s", "p50", "p90", "p99", "max", "left frames", "lost", "rejoins refused", "UPDATE+COMMIT p50", "cpu (median run)"],
    );
    let mut summary = Vec::new();
    let mut notes = Vec::new();
    let phases: [(&str, PickPhase); 2] = [
        ("idle", |r| Some(&r.idle)),
        ("under load", |r| r.loaded.as_ref()),
    ];
    for (name, pick) in phases {
        let of: Vec<&Phase> = runs.iter().filter_map(pick).collect();
        if of.is_empty() {
            continue;
        }
        let spread =
            |f: &dyn Fn(&Phase) -> f64| Spread::of(&of.iter().map(|p| f(p)).collect::<Vec<_>>());
        let latency = PercentileSpread::of(of.iter().map(|p| &p.latency_ms));
        let PercentileSpread { p50, p90, p99, max } = latency;
        let samples: u64 = of.iter().map(|p| p.samples).sum();
        let lost: u64 = of.iter().map(|p| p.lost).sum();
        let refused: u64 = of.iter().map(|p| p.rejoins_refused).sum();
        let cpu = {
            let mut sorted = of.clone();
            sorted.sort_by(|a, b| a.latency_ms.p50.total_cmp(&b.latency_ms.p50));
            sorted[sorted.len() / 2].cpu
        };
        table.row(
            [
                vec![
                    name.to_string(),
                    if name == "idle" {
                        "0".to_string()
                    } else {
                        spread(&|p| p.achieved_rate).show(0)
                    },
                ],
                latency.cells().to_vec(),
                vec![
                    samples.to_string(),
                    lost.to_string(),
                    refused.to_string(),
                    spread(&|p| p.statement_ms.p50).show(2),
                    cpu.show(),
                ],
            ]
            .concat(),
        );
        let worst = of.iter().map(|p| p.latency_ms.max).fold(0.0, f64::max);
        notes.push(format!(
            "target ({name}): commit → left under 1 s: {} (p99 {:.2} ms, max {:.1} ms over all runs{})",
            if worst < TARGET_MS && lost == 0 { "met" } else { "not met" },
            p99.median,
            worst,
            if lost > 0 { format!("; {lost} members got no left within {TRIAL_TIMEOUT:?}") } else { String::new() }
        ));
        summary.push(json!({
            "phase": name, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
            "samples": samples, "lost": lost, "rejoins_refused": refused,
        }));
    }
    Report::of("revocation", args, &summary, &runs)
        .tables([table])
        .notes(notes)
}
