//! `failover`: two relay nodes on one database; a client on the follower,
//! joined to room `user_1`; writers insert `messages` rows into that room at
//! a steady rate. The leader is SIGKILLed, and two times are taken from the
//! kill: when the follower first reports `rowcast_leader` 1 (polled every
//! 10 ms), and when the client receives the first frame of a row whose
//! INSERT was sent after the kill (only a new leader can capture such a
//! row). The killed node is then started again, as a follower, and the next
//! trial kills the other node, with a fresh client on the new follower.
//! Trial k waits (k - 1) / 10 s (modulo 1 s) longer before the kill, so the
//! kills sweep the followers' one-second attempts to lead.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clients::{Clients, Plan};
use crate::env::{Db, Env};
use crate::relay::RelayProc;
use crate::report::{Report, Table};
use crate::stats::{nearest_rank, Spread};
use crate::sys;
use crate::writers::{Load, Pairs, Writers};
use crate::{CaptureMode, Common};

/// How long a node may take to lead before a trial fails.
const LEAD_DEADLINE: Duration = Duration::from_secs(30);
/// How long the writers go on after the new leader took over.
const AFTER_TAKEOVER: Duration = Duration::from_millis(1500);

/// Options of `failover`.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Kills of the leader per capture mode.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Rows per second written into the client's room.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Capture modes to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [CaptureMode::Trigger, CaptureMode::Logical])]
    pub capture: Vec<CaptureMode>,
    /// Seconds written before each kill (plus 0 to 0.9 s, a tenth more
    /// at each trial, so the kills fall at every point of the followers'
    /// one-second attempts to lead).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Writer connections the rate is spread over.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

/// One kill of the leader.
#[derive(Clone, Debug, Serialize)]
struct Trial {
    capture: CaptureMode,
    trial: usize,
    /// Kill → the follower reports `rowcast_leader` 1, ms.
    leader_ms: f64,
    /// Kill → the client's first frame of a row whose INSERT was sent after
    /// the kill, ms.
    first_event_ms: f64,
    /// Rows sent (and committed) after the kill.
    rows_after_kill: u64,
    /// Of those, rows whose frame the client did not receive.
    lost_after_kill: u64,
    writer_errors: u64,
}

/// Starts a node and waits until it leads.
pub async fn start_leader(
    env: &Env,
    db: &Db,
    capture: CaptureMode,
    extra: &[(&str, &str)],
) -> anyhow::Result<RelayProc> {
    let node = RelayProc::start(env, db, capture, extra).await?;
    anyhow::ensure!(
        node.wait_leader(LEAD_DEADLINE).await.is_some(),
        "the first node did not lead within {LEAD_DEADLINE:?}"
    );
    Ok(node)
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    let mut trials = Vec::new();
    for &capture in &args.capture {
        args.common.before_run().await;
        eprintln!("failover: {capture} capture, {} trials", args.trials);
        trials.extend(one_capture(env, args, capture).await?);
    }
    Ok(summarize(args, trials))
}

async fn one_capture(env: &Env, args: &Args, capture: CaptureMode) -> anyhow::Result<Vec<Trial>> {
    let db = env.fresh_db(&format!("failover_{capture}")).await?;
    let mut nodes = [
        start_leader(env, &db, capture, &[]).await?,
        RelayProc::start(env, &db, capture, &[]).await?,
    ];
    let writers = Writers::connect(&db.url, args.writers).await?;
    let mut leader = 0;
    let mut trials = Vec::new();
    for trial in 1..=args.trials {
        let follower = 1 - leader;
        anyhow::ensure!(
            nodes[follower].metric("rowcast_leader").await < 1.0,
            "trial {trial}: the follower already leads"
        );
        let plan = Plan::latency(env, nodes[follower].addr);
        let mut group =
            Clients::start_all(env, plan, vec![vec!["user_1".to_string()]], 1, 1).await?;
        let load = Load {
            rows_per_sec: Some(args.rate),
            batch: 1,
            duration: Duration::from_secs(600),
            pairs: Pairs::Fixed {
                sender: 1,
                recipient: 2,
            },
            record: true,
        };
        let stop = CancellationToken::new();
        let (outcome, timing) = {
            let nodes = &mut nodes;
            let stop = &stop;
            let kill = async move {
                tokio::time::sleep(Duration::from_secs_f64(args.warmup + phase(trial))).await;
                let killed_at = sys::mono_ns();
                nodes[leader].kill();
                let led_at = nodes[follower].wait_leader(LEAD_DEADLINE).await;
                tokio::time::sleep(AFTER_TAKEOVER).await;
                stop.cancel();
                (killed_at, led_at)
            };
            tokio::join!(writers.run_until(&load, stop), kill)
        };
        let (killed_at, led_at) = timing;
        let led_at = led_at.ok_or_else(|| {
            anyhow::anyhow!("trial {trial}: no node led within {LEAD_DEADLINE:?} of the kill")
        })?;
        // Frames still in flight arrive within this tail.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let totals = group.report().await?;
        group.stop().await;
        // Rows whose INSERT was sent after the kill: the old leader cannot
        // have captured them.
        let committed: HashMap<u64, u64> = outcome
            .sends
            .iter()
            .copied()
            .filter(|(_, at)| *at >= killed_at)
            .collect();
        let received: Vec<u64> = totals
            .samples
            .iter()
            .filter(|(seq, _)| committed.contains_key(seq))
            .map(|(_, at)| *at)
            .collect();
        let first = received.iter().min().copied().ok_or_else(|| {
            anyhow::anyhow!("trial {trial}: no frame of a row sent after the kill arrived")
        })?;
        let t = Trial {
            capture,
            trial,
            leader_ms: led_at.saturating_sub(killed_at) as f64 / 1e6,
            first_event_ms: first.saturating_sub(killed_at) as f64 / 1e6,
            rows_after_kill: committed.len() as u64,
            lost_after_kill: (committed.len() as u64).saturating_sub(received.len() as u64),
            writer_errors: outcome.errors,
        };
        eprintln!(
            "failover: {capture} trial {trial}: leader after {:.0} ms, first event after {:.0} ms",
            t.leader_ms, t.first_event_ms
        );
        trials.push(t);
        // The killed node comes back as a follower.
        nodes[leader] = RelayProc::start(env, &db, capture, &[]).await?;
        leader = follower;
    }
    let [a, b] = nodes;
    a.stop().await;
    b.stop().await;
    env.drop_db(&db).await;
    Ok(trials)
}

/// A delay added to the warm-up of trial `trial` (1-based): 0, 0.1, ...,
/// 0.9 s, then again. A follower tries for the lock once a second from
/// when it started, and each trial starts right after a node started, so
/// without it every kill would fall at the same point of that second.
fn phase(trial: usize) -> f64 {
    ((trial - 1) % 10) as f64 / 10.0
}

/// p50, p99 and max (nearest rank) of values in ms.
fn percentiles(values: &[f64]) -> (f64, f64, f64, f64) {
    let mut ns: Vec<i64> = values.iter().map(|v| (v * 1e6) as i64).collect();
    ns.sort_unstable();
    let ms = |p: f64| nearest_rank(&ns, p) as f64 / 1e6;
    (
        ns.first().copied().unwrap_or(0) as f64 / 1e6,
        ms(50.0),
        ms(99.0),
        ns.last().copied().unwrap_or(0) as f64 / 1e6,
    )
}

fn summarize(args: &Args, trials: Vec<Trial>) -> Report {
    let mut table = Table::new(
        format!(
            "failover: SIGKILL of the leader → ..., ms ({} trials per mode; {} rows/s into the client's room; the client is on the follower)",
            args.trials, args.rate
        ),
        &["capture", "measure", "min", "p50", "p99", "max", "rows after kill", "lost"],
    );
    let mut summary = Vec::new();
    let mut notes = Vec::new();
    for &capture in &args.capture {
        let of: Vec<&Trial> = trials.iter().filter(|t| t.capture == capture).collect();
        let rows: u64 = of.iter().map(|t| t.rows_after_kill).sum();
        let lost: u64 = of.iter().map(|t| t.lost_after_kill).sum();
        let leader: Vec<f64> = of.iter().map(|t| t.leader_ms).collect();
        let event: Vec<f64> = of.iter().map(|t| t.first_event_ms).collect();
        for (name, values) in [
            ("follower reports rowcast_leader 1", &leader),
            ("first event from the new leader", &event),
        ] {
            let (min, p50, p99, max) = percentiles(values);
            table.row(vec![
                capture.to_string(),
                name.to_string(),
                format!("{min:.0}"),
                format!("{p50:.0}"),
                format!("{p99:.0}"),
                format!("{max:.0}"),
                rows.to_string(),
                lost.to_string(),
            ]);
        }
        let (_, p50, p99, max) = percentiles(&event);
        notes.push(format!(
            "target ({capture}): takeover within 5 s (kill → first event from the new leader): {} (p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms)",
            if max < 5000.0 && !event.is_empty() { "met" } else { "not met" }
        ));
        summary.push(json!({
            "capture": capture,
            "leader_ms": Spread::of(&leader),
            "first_event_ms": Spread::of(&event),
            "first_event_p50_ms": p50, "first_event_p99_ms": p99, "first_event_max_ms": max,
            "rows_after_kill": rows, "lost_after_kill": lost,
        }));
    }
    Report::of("failover", args, &summary, &trials)
        .tables([table])
        .notes(notes)
}
