//! `smoke`: every scenario once at a tiny size, to prove the harness works
//! end to end (processes, clients, writers, results). The numbers it prints
//! mean nothing; `bench/tests/smoke.rs` checks only that each scenario
//! produced results with non-zero counts.

use std::path::PathBuf;

use serde_json::json;

use crate::env::Env;
use crate::report::Report;
use crate::{
    bus, capture, failover, fanout, latency, nodes, promotion, replay, revocation, sinks, slow,
    soak, CaptureMode, Common, LoadArgs,
};

/// Options of `smoke`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Directory for `smoke.json` and `smoke-latency.svg`.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// Runs every scenario at a tiny size; returns their outcomes and the
/// combined results (`{"scenarios": {name: results}}`).
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<(Vec<Report>, serde_json::Value)> {
    let common = Common {
        runs: 1,
        out: args.out.clone(),
        quiet_wait: 0,
    };
    let modes = vec![CaptureMode::Trigger, CaptureMode::Logical];
    let load = |capture: Vec<CaptureMode>, seconds: f64| LoadArgs {
        capture,
        writers: 4,
        seconds,
        common: common.clone(),
    };
    let mut outcomes = Vec::new();
    outcomes.push(
        latency::run(
            env,
            &latency::Args {
                rate: vec![200],
                // The Node paths (socketio, seed) are left out: no npm here.
                path: vec!["ws".into(), "sse".into()],
                together: false,
                warmup: 0.5,
                clients: 10,
                load: load(modes.clone(), 1.0),
            },
        )
        .await?,
    );
    outcomes.push(
        capture::run(
            env,
            &capture::Args {
                batch: 1,
                pin: false,
                load: load(modes, 1.0),
            },
        )
        .await?,
    );
    outcomes.push(
        fanout::run(
            env,
            &fanout::Args {
                connections: vec![100],
                deliveries: 20_000.0,
                room_size: 10,
                per_process: 50,
                load: load(vec![CaptureMode::Trigger], 1.0),
            },
        )
        .await?,
    );
    outcomes.push(
        replay::run(
            env,
            &replay::Args {
                events: 500,
                chunk: 250,
                capture: CaptureMode::Trigger,
                common: common.clone(),
            },
        )
        .await?,
    );
    outcomes.push(
        slow::run(
            env,
            &slow::Args {
                stalled: 5,
                healthy: 5,
                rate: 200.0,
                recv_buffer: 4096,
                load: load(vec![CaptureMode::Trigger], 2.0),
            },
        )
        .await?,
    );
    outcomes.push(
        soak::run(
            env,
            &soak::Args {
                rate: 200.0,
                clients: 5,
                load: load(vec![CaptureMode::Trigger], 3.0),
            },
        )
        .await?,
    );
    outcomes.push(
        revocation::run(
            env,
            &revocation::Args {
                trials: 6,
                rooms: 3,
                clients: 4,
                load_rate: 200.0,
                capture: CaptureMode::Trigger,
                writers: 4,
                common: common.clone(),
            },
        )
        .await?,
    );
    outcomes.push(
        failover::run(
            env,
            &failover::Args {
                trials: 2,
                rate: 200.0,
                capture: vec![CaptureMode::Trigger],
                warmup: 0.5,
                writers: 2,
                common: common.clone(),
            },
        )
        .await?,
    );
    outcomes.push(
        promotion::run(
            env,
            &promotion::Args {
                trials: 1,
                capture: vec![CaptureMode::Trigger],
                url: vec!["multi-host".into()],
                postgres: None,
                common: common.clone(),
            },
        )
        .await?,
    );
    outcomes.push(
        bus::run(
            env,
            &bus::Args {
                bus: vec!["postgres".into(), "nats://127.0.0.1:4222".into()],
                rate: vec![200],
                warmup: 0.5,
                clients: 4,
                load: load(vec![CaptureMode::Trigger], 1.0),
            },
        )
        .await?,
    );
    outcomes.push(
        sinks::run(
            env,
            &sinks::Args {
                rate: 200.0,
                seconds: 1.0,
                writers: 2,
                capture: CaptureMode::Trigger,
                pushes: 200,
                subscriptions: 20,
                origins: 2,
                push_delay_ms: vec![0],
                common: common.clone(),
            },
        )
        .await?,
    );
    outcomes.push(
        nodes::run(
            env,
            &nodes::Args {
                nodes: 3,
                connections: 30,
                per_process: 10,
                capture: CaptureMode::Trigger,
                common,
            },
        )
        .await?,
    );
    let scenarios: serde_json::Map<String, serde_json::Value> = outcomes
        .iter()
        .map(|o| (o.name.clone(), o.json.clone()))
        .collect();
    Ok((outcomes, json!({ "scenarios": scenarios })))
}
