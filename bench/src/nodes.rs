//! `nodes`: idle connections spread over several relay nodes on one
//! database. The first node leads (it reports `rowcast_leader` 1 before the
//! others start); the connections are split evenly over the nodes, each
//! node's share over client processes of at most `--per-process`
//! connections (each process binds its own loopback address), and every
//! connection joins one room `user_{k}` (k = its index modulo 20,000 + 1).
//! Idle KiB per connection, per node = (RSS once all joined − RSS before
//! any connection) ÷ the node's connections. Each node must stay under the
//! open-file limit of one process, so a node takes at most 19,500.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::clients::{Clients, Plan};
use crate::env::Env;
use crate::failover::start_leader;
use crate::relay::RelayProc;
use crate::report::{Report, Table};
use crate::stats::Spread;
use crate::{CaptureMode, Common};

/// The most connections one node is given (its open-file limit is 20,000).
const PER_NODE_MAX: usize = 19_500;

/// Options of `nodes`.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Relay nodes on the database.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Idle connections in total, split evenly over the nodes.
    #[arg(long, default_value_t = 50_000)]
    pub connections: usize,
    /// Connections per client process.
    #[arg(long, default_value_t = 4000)]
    pub per_process: usize,
    /// Capture mode of the nodes.
    #[arg(long, value_enum, default_value_t = CaptureMode::Trigger)]
    pub capture: CaptureMode,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Clone, Debug, Serialize)]
struct Node {
    node: usize,
    leader: bool,
    connections: u64,
    connected: u64,
    failed: u64,
    connect_ms: u64,
    rss_before_kib: u64,
    rss_idle_kib: u64,
    idle_kib_per_conn: f64,
}

#[derive(Clone, Debug, Serialize)]
struct Run {
    run: usize,
    connections: u64,
    connected: u64,
    nodes: Vec<Node>,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    let share = args.connections.div_ceil(args.nodes);
    anyhow::ensure!(
        share <= PER_NODE_MAX,
        "{share} connections per node: one process may open 20,000 files; use more --nodes"
    );
    let mut runs = Vec::new();
    for run in 1..=args.common.runs {
        args.common.before_run().await;
        eprintln!(
            "nodes: run {run}, {} connections over {} nodes",
            args.connections, args.nodes
        );
        runs.push(one_run(env, args, run).await?);
    }
    Ok(summarize(args, runs))
}

async fn one_run(env: &Env, args: &Args, run: usize) -> anyhow::Result<Run> {
    let db = env.fresh_db("nodes").await?;
    let mut nodes = vec![start_leader(env, &db, args.capture, &[]).await?];
    for _ in 1..args.nodes {
        nodes.push(RelayProc::start(env, &db, args.capture, &[]).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<u64> = nodes.iter().map(|n| n.rss_kib()).collect();
    let mut groups = Vec::new();
    let mut results = Vec::new();
    let mut first = 0;
    for (i, node) in nodes.iter().enumerate() {
        let count = args.connections / args.nodes + usize::from(i < args.connections % args.nodes);
        let conns: Vec<Vec<String>> = (first..first + count)
            .map(|k| vec![format!("user_{}", k % 20_000 + 1)])
            .collect();
        first += count;
        let plan = Plan::of(env, node.addr);
        let (group, ready) = Clients::start(env, plan, conns, args.per_process, 1).await?;
        if ready.failed > 0 {
            eprintln!(
                "nodes: node {}: {} connections failed: {:?}",
                i + 1,
                ready.failed,
                ready.first_error
            );
        }
        groups.push(group);
        results.push(Node {
            node: i + 1,
            leader: node.metric("rowcast_leader").await >= 1.0,
            connections: count as u64,
            connected: ready.connected,
            failed: ready.failed,
            connect_ms: ready.elapsed_ms,
            rss_before_kib: before[i],
            rss_idle_kib: 0,
            idle_kib_per_conn: 0.0,
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (result, node) in results.iter_mut().zip(&nodes) {
        result.rss_idle_kib = node.rss_kib();
        result.idle_kib_per_conn = (result.rss_idle_kib as f64 - result.rss_before_kib as f64)
            / result.connected.max(1) as f64;
    }
    for group in groups {
        group.stop().await;
    }
    for node in nodes {
        node.stop().await;
    }
    env.drop_db(&db).await;
    Ok(Run {
        run,
        connections: args.connections as u64,
        connected: results.iter().map(|n| n.connected).sum(),
        nodes: results,
    })
}

fn summarize(args: &Args, runs: Vec<Run>) -> Report {
    let mut table = Table::new(
        format!(
            "nodes: {} idle connections over {} nodes, one room each (median (min–max) over {} runs)",
            args.connections, args.nodes, args.common.runs
        ),
        &["node", "role", "connections", "connected", "connect s", "RSS before MiB", "RSS idle MiB", "idle KiB/conn"],
    );
    let mut summary = Vec::new();
    for i in 0..args.nodes {
        let of: Vec<&Node> = runs.iter().filter_map(|r| r.nodes.get(i)).collect();
        let spread =
            |f: &dyn Fn(&Node) -> f64| Spread::of(&of.iter().map(|n| f(n)).collect::<Vec<_>>());
        let kib = spread(&|n| n.idle_kib_per_conn);
        let leader = of.iter().filter(|n| n.leader).count();
        table.row(vec![
            (i + 1).to_string(),
            if leader == of.len() {
                "leader"
            } else if leader == 0 {
                "follower"
            } else {
                "mixed"
            }
            .into(),
            spread(&|n| n.connections as f64).show(0),
            spread(&|n| n.connected as f64).show(0),
            spread(&|n| n.connect_ms as f64 / 1000.0).show(1),
            spread(&|n| n.rss_before_kib as f64 / 1024.0).show(1),
            spread(&|n| n.rss_idle_kib as f64 / 1024.0).show(1),
            kib.show(1),
        ]);
        summary.push(json!({ "node": i + 1, "idle_kib_per_conn": kib }));
    }
    let total = Spread::of(&runs.iter().map(|r| r.connected as f64).collect::<Vec<_>>());
    table.row(vec![
        "all".into(),
        String::new(),
        args.connections.to_string(),
        total.show(0),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    Report::of("nodes", args, &summary, &runs)
        .tables([table])
        .notes(vec![format!(
            "idle connections held in total: {} of {} (median of runs)",
            total.median, args.connections
        )])
}
