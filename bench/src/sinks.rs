//! `sinks`: deliveries beyond the open socket, to receivers in this
//! process on loopback.
//!
//! - **Webhook.** The built-in routes plus one `[[webhook]]` for
//!   `message-sent` and `message-received`, signed with a `whsec_` secret,
//!   POSTed to a receiver that answers 204 at once and notes the arrival
//!   time of each frame. Writers insert `messages` rows at half of
//!   `--rate` (each row is two events), one transaction per row, and keep
//!   the time each COMMIT returned. A delivery's latency is its arrival
//!   minus its row's commit: it covers capture, the outbox store and the
//!   webhook's own read of the outbox, one event after another in seq
//!   order (the order a webhook promises).
//! - **Web Push.** `--subscriptions` users (2, 3, ...) each have one
//!   subscription (RFC 8291's example keys) on one of `--origins` push
//!   service stand-ins, distinct origins on loopback, that answer 201 after
//!   `--push-delay` (a real push service is tens of ms away). Nobody is
//!   connected, so the demo route of `message-received` pushes every one.
//!   A burst of `--pushes` rows, 1,000 per transaction, and the pushes/s
//!   the stand-ins receive, from the first to the last; the encryption
//!   (an ECDH and AES-GCM per message) and the VAPID token are the relay's
//!   real ones, only the push service's decryption is skipped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Serialize;
use serde_json::{json, Value};

use crate::env::{self, Db, Env, USERS};
use crate::relay::RelayProc;
use crate::report::{CpuMeter, CpuShare, Report, Table};
use crate::stats::{PercentileSpread, Percentiles, Spread};
use crate::sys;
use crate::writers::{Load, Pairs, Writers, EVENTS_PER_ROW};
use crate::{CaptureMode, Common};

/// The webhook's signing secret (`whsec_` and 24 bytes in base64).
const WEBHOOK_SECRET: &str = "whsec_cm93Y2FzdC1iZW5jaC13ZWJob29rLXNlY3JldA==";
/// A VAPID private key (RFC 8291's example application server key).
const VAPID_KEY: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
/// A browser subscription's keys (RFC 8291's example user agent keys).
const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
/// How long the deliveries of a phase may take after its last commit.
const DRAIN: Duration = Duration::from_secs(120);
/// How often the receivers' counts are read while draining.
const POLL: Duration = Duration::from_millis(10);
/// Rows per transaction of the push burst.
const BURST_CHUNK: usize = 1000;

/// Options of `sinks`.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Webhook events per second (rows at half of it).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured seconds of webhook load.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Writer connections of the webhook load.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Capture mode of the relay.
    #[arg(long, value_enum, default_value_t = CaptureMode::Trigger)]
    pub capture: CaptureMode,
    /// Pushes per burst (0: no push phase).
    #[arg(long, default_value_t = 20_000)]
    pub pushes: usize,
    /// Users with a subscription; push i goes to user 2 + i mod this.
    #[arg(long, default_value_t = 1000)]
    pub subscriptions: usize,
    /// Push service stand-ins, each its own origin.
    #[arg(long, default_value_t = 2)]
    pub origins: usize,
    /// How long a stand-in waits before its 201, one push phase per value.
    #[arg(long, value_delimiter = ',', default_values_t = [0, 50])]
    pub push_delay_ms: Vec<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

/// The webhook phase of a run.
#[derive(Clone, Debug, Default, Serialize)]
struct Hook {
    /// Events per second the writers offered (two per row).
    achieved_rate: f64,
    /// Events committed.
    events: u64,
    /// Events the receiver got (repeats included).
    received: u64,
    /// Events that never arrived.
    lost: u64,
    /// Arrivals out of seq order.
    out_of_order: u64,
    latency_ms: Percentiles,
    cpu: CpuShare,
}

/// One push phase of a run.
#[derive(Clone, Debug, Default, Serialize)]
struct Push {
    delay_ms: u64,
    pushes: u64,
    received: u64,
    /// From the first to the last push the stand-ins received.
    seconds: f64,
    pushes_per_sec: f64,
    /// From the burst's last commit to the last push.
    drain_s: f64,
    cpu: CpuShare,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    run: usize,
    hook: Hook,
    push: Vec<Push>,
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        args.subscriptions >= 1 && (args.subscriptions as i64) < USERS - 1,
        "--subscriptions: 1 to {}",
        USERS - 2
    );
    anyhow::ensure!(args.origins >= 1, "--origins must be at least 1");
    let runs = args
        .common
        .each_run("sinks", async |run| {
            let hook = hook(env, args).await?;
            let mut push = Vec::new();
            if args.pushes > 0 {
                for &delay in &args.push_delay_ms {
                    push.push(push_burst(env, args, delay).await?);
                }
            }
            Ok(Run { run, hook, push })
        })
        .await?;
    Ok(summarize(args, runs))
}

/// What a receiver noted: per request, its JSON body and arrival time.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(Value, u64)>>>);

impl Arrivals {
    fn note(&self, body: Value) {
        let at = sys::mono_ns();
        self.0.lock().expect("arrivals").push((body, at));
    }

    fn len(&self) -> usize {
        self.0.lock().expect("arrivals").len()
    }

    fn take(&self) -> Vec<(Value, u64)> {
        std::mem::take(&mut *self.0.lock().expect("arrivals"))
    }
}

/// A receiver on a free loopback port: POSTs to any path are noted and
/// answered with `status` after `delay`.
async fn receiver(
    status: StatusCode,
    delay: Duration,
    arrivals: Arrivals,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let handler = move |State(arrivals): State<Arrivals>, body: axum::body::Bytes| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        arrivals.note(serde_json::from_slice(&body).unwrap_or(Value::Null));
        status
    };
    let app = axum::Router::new()
        .route("/{*path}", post(handler))
        .with_state(arrivals);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Waits until `arrivals` holds `want` or nothing new came for `DRAIN`.
async fn drain(arrivals: &Arrivals, want: usize) {
    let mut last = (arrivals.len(), tokio::time::Instant::now());
    while arrivals.len() < want {
        tokio::time::sleep(POLL).await;
        let now = arrivals.len();
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        } else if last.1.elapsed() > DRAIN {
            eprintln!("sinks: {now} of {want} deliveries arrived; giving up");
            return;
        }
    }
}

/// The built-in routes with `extra` appended, in a file of the run.
fn routes_file(db: &Db, extra: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!("{}-routes.toml", db.name));
    std::fs::write(
        &path,
        format!("{}\n{extra}", include_str!("../../routes.toml")),
    )?;
    Ok(path)
}

async fn hook(env: &Env, args: &Args) -> anyhow::Result<Hook> {
    let arrivals = Arrivals::default();
    let addr = receiver(StatusCode::NO_CONTENT, Duration::ZERO, arrivals.clone()).await?;
    let db = env.fresh_db("sinks_webhook").await?;
    let routes = routes_file(
        &db,
        &format!(
            "[[webhook]]\nname = \"bench\"\nurl = \"http://{addr}/hook\"\n\
             events = [\"message-sent\", \"message-received\"]\n\
             secret_env = \"ROWCAST_WEBHOOK_SECRET\"\nallow_insecure = true\n"
        ),
    )?;
    let routes_arg = routes.display().to_string();
    let relay = RelayProc::start_with(
        env,
        &db,
        args.capture,
        &[("--routes", &routes_arg)],
        &[("ROWCAST_WEBHOOK_SECRET", WEBHOOK_SECRET)],
    )
    .await?;
    let meter = CpuMeter {
        relay: Some(relay.pid),
        postmaster: env.postmaster_pid(),
        clients: Vec::new(),
    };
    let writers = Writers::connect(&db.url, args.writers).await?;
    let before = meter.read();
    let written = writers
        .run(&Load {
            rows_per_sec: Some(args.rate / EVENTS_PER_ROW as f64),
            batch: 1,
            duration: Duration::from_secs_f64(args.seconds),
            pairs: Pairs::Ring {
                first: 2,
                count: 100,
            },
            record: true,
        })
        .await;
    let events = written.rows * EVENTS_PER_ROW;
    drain(&arrivals, events as usize).await;
    let cpu = CpuMeter::share(&before, &meter.read());
    relay.stop().await;
    env.drop_db(&db).await;
    let _ = std::fs::remove_file(&routes);

    let commits: HashMap<u64, u64> = written.commits.iter().copied().collect();
    let mut seen = std::collections::HashSet::new();
    let mut latencies = Vec::new();
    let (mut last_seq, mut out_of_order) = (0, 0);
    let received = arrivals.take();
    for (frame, at) in &received {
        let seq = frame["seq"].as_i64().unwrap_or(0);
        if seq < last_seq {
            out_of_order += 1;
        }
        last_seq = last_seq.max(seq);
        let row = frame["data"]["body"].as_str().and_then(|b| b.parse().ok());
        let Some(committed) = row.and_then(|row: u64| commits.get(&row)) else {
            continue;
        };
        if seen.insert(seq) {
            latencies.push(*at as i64 - *committed as i64);
        }
    }
    Ok(Hook {
        achieved_rate: events as f64 / written.elapsed_s.max(1e-9),
        events,
        received: received.len() as u64,
        lost: events.saturating_sub(seen.len() as u64),
        out_of_order,
        latency_ms: Percentiles::of_ns(&mut latencies),
        cpu,
    })
}

async fn push_burst(env: &Env, args: &Args, delay_ms: u64) -> anyhow::Result<Push> {
    let arrivals = Arrivals::default();
    let mut origins = Vec::new();
    for _ in 0..args.origins {
        let addr = receiver(
            StatusCode::CREATED,
            Duration::from_millis(delay_ms),
            arrivals.clone(),
        )
        .await?;
        origins.push(format!("http://{addr}"));
    }
    let db = env.fresh_db("sinks_push").await?;
    let admin = env::connect(&db.url).await?;
    let listed = origins.join(",");
    let relay = RelayProc::start(
        env,
        &db,
        args.capture,
        &[
            ("--vapid-private-key", VAPID_KEY),
            ("--vapid-subject", "mailto:bench@example.com"),
            ("--push-origins", &listed),
        ],
    )
    .await?;
    // The relay's migrations made the table; its registry reads it per event.
    admin
        .execute(
            "INSERT INTO realtime.push_subscriptions (endpoint, sub, p256dh, auth)
             SELECT ($1::text[])[1 + g % cardinality($1::text[])] || '/push/' || g,
                    (2 + g)::text, $2, $3
             FROM generate_series(0, $4::int - 1) g",
            &[&origins, &P256DH, &AUTH, &(args.subscriptions as i32)],
        )
        .await?;
    let meter = CpuMeter {
        relay: Some(relay.pid),
        postmaster: env.postmaster_pid(),
        clients: Vec::new(),
    };
    let before = meter.read();
    let mut first = 0;
    while first < args.pushes {
        let count = BURST_CHUNK.min(args.pushes - first);
        admin
            .execute(
                "INSERT INTO messages (sender_id, recipient_id, body)
                 SELECT 1, 2 + g % $3::int, g::text FROM generate_series($1::int, $2::int) g",
                &[
                    &(first as i32),
                    &((first + count - 1) as i32),
                    &(args.subscriptions as i32),
                ],
            )
            .await?;
        first += count;
    }
    let committed = sys::mono_ns();
    drain(&arrivals, args.pushes).await;
    let cpu = CpuMeter::share(&before, &meter.read());
    relay.stop().await;
    drop(admin);
    env.drop_db(&db).await;

    let received = arrivals.take();
    let (start, end) = received.iter().fold((u64::MAX, 0), |(lo, hi), (_, at)| {
        (lo.min(*at), hi.max(*at))
    });
    let seconds = end.saturating_sub(start) as f64 / 1e9;
    Ok(Push {
        delay_ms,
        pushes: args.pushes as u64,
        received: received.len() as u64,
        seconds,
        pushes_per_sec: received.len() as f64 / seconds.max(1e-9),
        drain_s: end.saturating_sub(committed) as f64 / 1e9,
        cpu,
    })
}

fn summarize(args: &Args, runs: Vec<Run>) -> Report {
    let hooks: Vec<&Hook> = runs.iter().map(|r| &r.hook).collect();
    let spread =
        |f: &dyn Fn(&Hook) -> f64| Spread::of(&hooks.iter().map(|h| f(h)).collect::<Vec<_>>());
    let mut webhook = Table::new(
        format!(
            "sinks: commit → webhook receipt, ms ({} events/s offered for {} s, {} capture; median (min–max) over {} runs)",
            args.rate, args.seconds, args.capture, args.common.runs
        ),
        &["events/s", "p50", "p90", "p99", "max", "events", "lost", "out of order", "cpu (median run)"],
    );
    let latency = PercentileSpread::of(hooks.iter().map(|h| &h.latency_ms));
    let lost: u64 = hooks.iter().map(|h| h.lost).sum();
    let disorder: u64 = hooks.iter().map(|h| h.out_of_order).sum();
    let median_cpu = |mut cpus: Vec<CpuShare>| {
        cpus.sort_by(|a, b| a.relay.total_cmp(&b.relay));
        cpus.get(cpus.len() / 2).copied().unwrap_or_default()
    };
    webhook.row(
        [
            vec![spread(&|h| h.achieved_rate).show(0)],
            latency.cells().to_vec(),
            vec![
                hooks.iter().map(|h| h.events).sum::<u64>().to_string(),
                lost.to_string(),
                disorder.to_string(),
                median_cpu(hooks.iter().map(|h| h.cpu).collect()).show(),
            ],
        ]
        .concat(),
    );
    let mut push = Table::new(
        format!(
            "sinks: Web Push burst of {} to {} subscriptions over {} push service origins ({} capture; median (min–max) over {} runs)",
            args.pushes, args.subscriptions, args.origins, args.capture, args.common.runs
        ),
        &["push service answers after", "pushes/s", "received", "last commit → last push, s", "cpu (median run)"],
    );
    let mut summary_push = Vec::new();
    for (i, delay) in args.push_delay_ms.iter().enumerate() {
        let of: Vec<&Push> = runs.iter().filter_map(|r| r.push.get(i)).collect();
        if of.is_empty() {
            continue;
        }
        let spread =
            |f: &dyn Fn(&Push) -> f64| Spread::of(&of.iter().map(|p| f(p)).collect::<Vec<_>>());
        let received: u64 = of.iter().map(|p| p.received).sum();
        let expected: u64 = of.iter().map(|p| p.pushes).sum();
        push.row(vec![
            format!("{delay} ms"),
            spread(&|p| p.pushes_per_sec).show(0),
            format!("{received} of {expected}"),
            spread(&|p| p.drain_s).show(2),
            median_cpu(of.iter().map(|p| p.cpu).collect()).show(),
        ]);
        summary_push.push(json!({
            "delay_ms": delay,
            "pushes_per_sec": spread(&|p| p.pushes_per_sec),
            "received": received,
            "expected": expected,
        }));
    }
    let notes = vec![format!(
        "webhook target: p50/p99 at {} events/s: p50 {:.2} ms, p99 {:.2} ms; {} lost, {} out of order",
        args.rate, latency.p50.median, latency.p99.median, lost, disorder
    )];
    let summary = json!({
        "webhook": { "p50_ms": latency.p50, "p90_ms": latency.p90, "p99_ms": latency.p99,
                     "max_ms": latency.max, "lost": lost, "out_of_order": disorder },
        "push": summary_push,
    });
    let mut tables = vec![webhook];
    if args.pushes > 0 {
        tables.push(push);
    }
    Report::of("sinks", args, &summary, &runs)
        .tables(tables)
        .notes(notes)
}
