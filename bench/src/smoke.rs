//! `smoke`: every scenario once at a tiny size, to prove the harness works
//! end to end (processes, clients, writers, results). The numbers it prints
//! mean nothing; `bench/tests/smoke.rs` checks only that each scenario
//! produced results with non-zero counts.

use std::path::PathBuf;

use serde_json::json;

use crate::env::Env;
use crate::report::Report;
use crate::{
    bus, capture, failover, fanout, latency, nodes, promotion, replay, revocation, slow, soak,
    Common,
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
    let modes = vec!["trigger".to_string(), "logical".to_string()];
    let mut outcomes = Vec::new();
    outcomes.push(
        latency::run(
            env,
            &latency::Args {
                rate: vec![200],
                capture: modes.clone(),
                // The Node paths (socketio, seed) are left out: no npm here.
                path: vec!["ws".into(), "sse".into()],
                together: false,
                seconds: 1.0,
                warmup: 0.5,
                clients: 10,
                writers: 4,
                common: common.clone(),
            },
        )
        .await?,
    );
    outcomes.push(
        capture::run(
            env,
            &capture::Args {
                capture: modes,
                seconds: 1.0,
                writers: 4,
                batch: 1,
                common: common.clone(),
            },
        )
        .await?,
    );
    outcomes.push(
        fanout::run(
            env,
            &fanout::Args {
                connections: vec![100],
                seconds: 1.0,
                deliveries: 20_000.0,
                room_size: 10,
                per_process: 50,
                capture: "trigger".into(),
                writers: 4,
                common: common.clone(),
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
                capture: "trigger".into(),
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
                seconds: 2.0,
                rate: 200.0,
                recv_buffer: 4096,
                capture: "trigger".into(),
                writers: 4,
                common: common.clone(),
            },
        )
        .await?,
    );
    outcomes.push(
        soak::run(
            env,
            &soak::Args {
                seconds: 3.0,
                rate: 200.0,
                clients: 5,
                capture: "trigger".into(),
                writers: 4,
                runs: 1,
                out: args.out.clone(),
                quiet_wait: 0,
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
                capture: "trigger".into(),
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
                capture: vec!["trigger".into()],
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
                capture: vec!["trigger".into()],
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
                capture: "trigger".into(),
                seconds: 1.0,
                warmup: 0.5,
                clients: 4,
                writers: 4,
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
                capture: "trigger".into(),
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
