//! `rowcast-bench`: the benchmark harness of rowcast.
//!
//! Each scenario starts everything it needs: a throwaway Postgres with
//! fsync on (or the server `DATABASE_URL` names), the relay in its own
//! process (this binary's hidden `relay` subcommand), WebSocket and SSE
//! clients in several child processes (the hidden `clients` subcommand),
//! Socket.IO clients in Node processes (`bench/node/`) and SQL writers in
//! this process; `latency --path seed` runs the seed stand-in (`bench/seed/`)
//! instead of the relay. It prints a table of medians and spreads over `--runs`
//! runs and writes JSON results (and, for latency, an SVG chart) into the
//! results directory. Nothing here asserts on timings.

mod bus;
mod capture;
mod chart;
mod client_proc;
mod clients;
mod env;
mod failover;
mod fanout;
mod latency;
mod nodejs;
mod nodes;
mod promotion;
mod relay;
mod replay;
mod report;
mod revocation;
mod seed;
mod sinks;
mod slow;
mod smoke;
mod soak;
mod stats;
mod sys;
mod writers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks of rowcast: latency, capture cost, fan-out, replay, slow
/// clients, memory over minutes, revocation, failover, the database's promotion, the bus between nodes, connections over nodes, webhooks and Web Push.
#[derive(Debug, Parser)]
#[command(name = "rowcast-bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Commit → client frame latency at fixed write rates, per way in
    /// (WebSocket, SSE, Socket.IO) and for the seed stand-in.
    Latency(latency::Args),
    /// Write throughput with and without capture, and the relay's throughput.
    Capture(capture::Args),
    /// Many connections: memory per connection and deliveries per second.
    Fanout(fanout::Args),
    /// One client replaying a room's stored events with `since: 0`.
    Replay(replay::Args),
    /// Clients that stop reading, next to healthy ones.
    Slow(slow::Args),
    /// Minutes of steady writes with nobody scraping /metrics: does RSS level off?
    Soak(soak::Args),
    /// Commit that takes a right away → the member's `left` frame.
    Revocation(revocation::Args),
    /// Two nodes: SIGKILL of the leader → first event from the new leader.
    Failover(failover::Args),
    /// A primary and a standby: promotion of the standby → first event from the new primary.
    Promotion(promotion::Args),
    /// Two nodes: commit → client on the follower, per bus (Postgres, NATS).
    Bus(bus::Args),
    /// Idle connections spread over several relay nodes: memory per node.
    Nodes(nodes::Args),
    /// Outbox → webhook receipt latency, and Web Push throughput.
    Sinks(sinks::Args),
    /// Every scenario at a tiny size, to prove the harness works.
    Smoke(smoke::Args),
    /// (internal) The relay process.
    #[command(hide = true)]
    Relay(Box<rowcast::settings::Settings>),
    /// (internal) A client process.
    #[command(hide = true)]
    Clients,
}

/// A capture mode of the relay.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    #[default]
    Trigger,
    Logical,
    /// Logical capture delivering after the outbox commit
    /// (`ROWCAST_DELIVER=outbox`), to compare with delivery at WAL
    /// durability in the same run.
    #[value(name = "logical-outbox")]
    #[serde(rename = "logical-outbox")]
    LogicalOutbox,
}

impl CaptureMode {
    /// The name `--capture` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Trigger => "trigger",
            CaptureMode::Logical => "logical",
            CaptureMode::LogicalOutbox => "logical-outbox",
        }
    }

    /// The relay's settings for it.
    pub fn relay_flags(self) -> [&'static str; 4] {
        match self {
            CaptureMode::Trigger => ["--capture", "trigger", "--deliver", "wal"],
            CaptureMode::Logical => ["--capture", "logical", "--deliver", "wal"],
            CaptureMode::LogicalOutbox => ["--capture", "logical", "--deliver", "outbox"],
        }
    }

    /// Whether it streams a replication slot.
    pub fn is_logical(self) -> bool {
        self != CaptureMode::Trigger
    }
}

impl std::fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The write load of the scenarios that measure one: capture modes,
/// writer connections and the measured window, with the options every
/// scenario has. A scenario changes a
/// default with `#[command(mut_arg("seconds", |a| a.default_value("20")))]`.
#[derive(clap::Args, Clone, Debug, serde::Serialize)]
pub struct LoadArgs {
    /// Capture modes to measure, one after the other.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [CaptureMode::Trigger])]
    pub capture: Vec<CaptureMode>,
    /// Writer connections the load is spread over.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

impl LoadArgs {
    /// The capture modes, as `--capture` takes them.
    pub fn capture_names(&self) -> String {
        let names: Vec<&str> = self.capture.iter().map(|c| c.as_str()).collect();
        names.join(",")
    }

    /// The one capture mode of a scenario that runs a single relay setup.
    pub fn one_capture(&self) -> anyhow::Result<CaptureMode> {
        match self.capture.as_slice() {
            [mode] => Ok(*mode),
            _ => anyhow::bail!("this scenario measures one capture mode at a time (--capture trigger or --capture logical)"),
        }
    }
}

/// Options every scenario has.
#[derive(clap::Args, Clone, Debug, serde::Serialize)]
pub struct Common {
    /// Runs of each configuration; tables show the median and the range.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Directory for the JSON results and charts.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Before each run, wait up to this many seconds for the machine to be
    /// nearly idle (under 15% CPU), so other work is not measured too.
    #[arg(long, default_value_t = 120)]
    pub quiet_wait: u64,
}

impl Common {
    /// Waits for a quiet machine before a run (see `--quiet-wait`).
    pub async fn before_run(&self) {
        if self.quiet_wait > 0 {
            sys::wait_for_quiet(std::time::Duration::from_secs(self.quiet_wait), 15.0).await;
        }
    }

    /// Runs `one` for runs 1 to `--runs`, each after [`Common::before_run`],
    /// saying which run starts under the scenario's `name`.
    pub async fn each_run<T>(
        &self,
        name: &str,
        mut one: impl AsyncFnMut(usize) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        let mut runs = Vec::new();
        for run in 1..=self.runs.max(1) {
            self.before_run().await;
            eprintln!("{name}: run {run}");
            runs.push(one(run).await?);
        }
        Ok(runs)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Relay(settings) => return relay::main(*settings),
        Command::Clients => return client_proc::main(),
        _ => {}
    }
    sys::raise_nofile();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let load = sys::loadavg();
    eprintln!("bench: load average before starting: {load}");
    if load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l > 0.5)
    {
        eprintln!("bench: warning: the machine is busy; figures will be noisy");
    }
    let _ = sys::LOAD_AT_START.set(load);
    let env = env::Env::start().await?;
    let result = scenario(&env, command).await;
    env.finish().await;
    result
}

async fn scenario(env: &env::Env, command: Command) -> anyhow::Result<()> {
    let (outcome, out) = match command {
        Command::Latency(args) => (latency::run(env, &args).await?, args.load.common.out),
        Command::Capture(args) => (capture::run(env, &args).await?, args.load.common.out),
        Command::Fanout(args) => (fanout::run(env, &args).await?, args.load.common.out),
        Command::Replay(args) => (replay::run(env, &args).await?, args.common.out),
        Command::Slow(args) => (slow::run(env, &args).await?, args.load.common.out),
        Command::Soak(args) => (soak::run(env, &args).await?, args.load.common.out),
        Command::Revocation(args) => (revocation::run(env, &args).await?, args.common.out),
        Command::Failover(args) => (failover::run(env, &args).await?, args.common.out),
        Command::Promotion(args) => (promotion::run(env, &args).await?, args.common.out),
        Command::Bus(args) => (bus::run(env, &args).await?, args.load.common.out),
        Command::Nodes(args) => (nodes::run(env, &args).await?, args.common.out),
        Command::Sinks(args) => (sinks::run(env, &args).await?, args.common.out),
        Command::Smoke(args) => {
            let (outcomes, json) = smoke::run(env, &args).await?;
            for outcome in &outcomes {
                outcome.print();
            }
            let svg = outcomes.iter().find_map(|o| o.svg.clone());
            report::write(&args.out, "smoke", &json, None)?;
            if let Some(svg) = svg {
                report::write_svg(&args.out, "smoke-latency", &svg)?;
            }
            return Ok(());
        }
        Command::Relay(_) | Command::Clients => unreachable!("handled in main"),
    };
    outcome.print();
    report::write(&out, &outcome.name, &outcome.json, outcome.svg.as_deref())
}
