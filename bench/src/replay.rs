//! `replay`: one client catching up. With the relay running, `--events`
//! events are published into one room with `realtime.publish` (in chunks,
//! one transaction each) and stored; then one client joins that room with
//! `since: 0`. The replayed events arrive before the join reply, so the
//! time from sending the join to reading its reply covers all of them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::env::{self, Env};
use crate::relay::RelayProc;
use crate::report::{CpuMeter, CpuShare, Report, Table};
use crate::stats::Spread;
use crate::{CaptureMode, Common};

/// The room the events are published to.
const ROOM: &str = "replay_1";

/// Options of `replay`.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Events stored in the room before the client joins.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Events per publishing transaction.
    #[arg(long, default_value_t = 10_000)]
    pub chunk: u64,
    /// Capture mode of the relay.
    #[arg(long, value_enum, default_value_t = CaptureMode::Trigger)]
    pub capture: CaptureMode,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    run: usize,
    events: u64,
    /// Events stored per second while publishing (publish to stored head).
    store_rate: f64,
    /// Event frames the client received before the join reply.
    frames: u64,
    /// `replayed` in the join reply.
    replayed: u64,
    seconds: f64,
    events_per_sec: f64,
    cpu: CpuShare,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    let runs = args
        .common
        .each_run("replay", async |run| one(env, args, run).await)
        .await?;
    Ok(summarize(args, runs))
}

async fn one(env: &Env, args: &Args, run: usize) -> anyhow::Result<Run> {
    let db = env.fresh_db("replay").await?;
    let relay = RelayProc::start(env, &db, args.capture, &[]).await?;
    let client = env::connect(&db.url).await?;
    let head0 = env::head(&client).await?;
    let started = Instant::now();
    let mut from = 1i64;
    while from <= args.events as i64 {
        let to = (from + args.chunk.max(1) as i64 - 1).min(args.events as i64);
        client
            .execute(
                "SELECT realtime.publish(ARRAY['replay_1'], 'tick', jsonb_build_object('i', g))
                 FROM generate_series($1::bigint, $2::bigint) g",
                &[&from, &to],
            )
            .await
            .context("publishing events")?;
        from = to + 1;
    }
    let target = head0 + args.events as i64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while env::head(&client).await? < target {
        if Instant::now() > deadline {
            bail!("the relay did not store the published events in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store_rate = args.events as f64 / started.elapsed().as_secs_f64();

    let meter = CpuMeter {
        relay: Some(relay.pid),
        postmaster: env.postmaster_pid(),
        clients: Vec::new(),
    };
    let before = meter.read();
    let (frames, replayed, seconds) = join_since_zero(env, relay.addr).await?;
    let cpu = CpuMeter::share(&before, &meter.read());
    relay.stop().await;
    drop(client);
    env.drop_db(&db).await;
    Ok(Run {
        run,
        events: args.events,
        store_rate,
        frames,
        replayed,
        seconds,
        events_per_sec: frames as f64 / seconds.max(1e-9),
        cpu,
    })
}

/// Connects, joins with `since: 0`, counts event frames until the reply.
async fn join_since_zero(env: &Env, addr: SocketAddr) -> anyhow::Result<(u64, u64, f64)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(env.next_ip().into(), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}/v1/ws?token={}", env.token());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    loop {
        if let Ws::Text(text) = next(&mut ws).await? {
            if text.contains("\"welcome\"") {
                break;
            }
        }
    }
    let join = json!({"type": "join", "room": ROOM, "since": 0, "ref": "replay"});
    let start = Instant::now();
    ws.send(Ws::Text(join.to_string().into())).await?;
    let mut frames = 0u64;
    loop {
        match next(&mut ws).await? {
            Ws::Text(text) => {
                if text.starts_with("{\"type\":\"event\"") {
                    frames += 1;
                } else if text.contains("\"reply\"") {
                    let seconds = start.elapsed().as_secs_f64();
                    let reply: Value = serde_json::from_str(&text)?;
                    if reply["ok"] != true {
                        bail!("join refused: {text}");
                    }
                    let replayed = reply["replayed"].as_u64().unwrap_or(0);
                    let _ = ws.close(None).await;
                    return Ok((frames, replayed, seconds));
                }
            }
            Ws::Close(frame) => bail!("closed during the replay: {frame:?}"),
            _ => {}
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn next(ws: &mut Socket) -> anyhow::Result<Ws> {
    match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
        Ok(Some(Ok(message))) => Ok(message),
        Ok(other) => bail!("the connection ended: {other:?}"),
        Err(_) => bail!("no frame within 60 s"),
    }
}

fn summarize(args: &Args, runs: Vec<Run>) -> Report {
    let rate = Spread::of(&runs.iter().map(|r| r.events_per_sec).collect::<Vec<_>>());
    let seconds = Spread::of(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>());
    let store = Spread::of(&runs.iter().map(|r| r.store_rate).collect::<Vec<_>>());
    let mut table = Table::new(
        format!(
            "replay: one client joins with since 0 (median (min–max) over {} runs)",
            args.common.runs
        ),
        &[
            "events",
            "replayed",
            "seconds",
            "events/s",
            "stored/s while publishing",
            "cpu (last run)",
        ],
    );
    let replayed = runs.iter().map(|r| r.replayed).min().unwrap_or(0);
    table.row(vec![
        args.events.to_string(),
        replayed.to_string(),
        seconds.show(3),
        rate.show(0),
        store.show(0),
        runs.last().map(|r| r.cpu.show()).unwrap_or_default(),
    ]);
    let notes = vec![format!(
        "target: replay to one client ≥ 200,000 events/s: {} ({:.0}/s)",
        if rate.median >= 200_000.0 {
            "met"
        } else {
            "not met"
        },
        rate.median
    )];
    Report::of("replay", args, json!({"events_per_sec": rate, "seconds": seconds, "store_rate": store, "replayed_min": replayed}), &runs)
        .tables([table])
        .notes(notes)
}
