//! The database's own failover, and what looks like one to capture: a
//! logical slot that is gone (dropped, or lost with the primary), consumed
//! by someone else, or lost while the relay streams it is a capture gap:
//! one `ERROR` line, `rowcast_capture_gaps_total`, a gap marker that makes
//! every resume from before it answer `gap: true`, and capture going on
//! (or, with `ROWCAST_ON_CAPTURE_GAP=stop`, an exit). Across a promotion of
//! a physical standby, found through a multi-host `DATABASE_URL`, trigger
//! capture and Postgres 17+ failover slots deliver every change exactly
//! once; on 15 a logical relay reports the gap instead of a silent hole.

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::ws::*;
use common::*;
use rowcast_devkit::cluster::{Cluster, StopMode};
use rowcast_devkit::process::free_port;
use rowcast_devkit::sse::SseStream;
use serde_json::{json, Value};
use tokio_postgres::Client;

const DEADLINE: Duration = Duration::from_secs(60);

in_both_modes! {
    an_outbox_that_went_back_is_a_gap_and_no_seq_is_reused => outbox_went_back,
}

/// A relay binary whose stderr goes to a file the test reads.
struct LoggedRelay {
    process: RelayProcess,
    addr: SocketAddr,
    log: PathBuf,
}

impl LoggedRelay {
    /// Starts `rowcast serve` on a fixed port (restarts keep it), logging
    /// at `info` to `log` (appended), and waits until it is ready.
    async fn start(url: &str, capture: &str, log: &PathBuf, extra: &[(&str, &str)]) -> Self {
        let mut relay = Self::spawn(url, capture, log, free_port(), extra);
        assert!(
            relay.process.ready(relay.addr, DEADLINE).await,
            "the relay did not become ready; its log:\n{}",
            relay.text()
        );
        relay
    }

    fn spawn(url: &str, capture: &str, log: &PathBuf, port: u16, extra: &[(&str, &str)]) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let port_text = port.to_string();
        let mut env = vec![("SOCKET_PORT", port_text.as_str()), ("RUST_LOG", "info")];
        env.extend_from_slice(extra);
        let mut command = serve_command(url, capture, &env);
        command.stderr(Stdio::from(file));
        Self {
            process: RelayProcess::spawn(command).expect("spawn rowcast"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: log.clone(),
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's capture-gap lines.
    fn gap_lines(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("capture gap on slot"))
            .map(str::to_string)
            .collect()
    }

    /// Waits for the first capture-gap line.
    async fn gap_line(&self) -> String {
        wait_for("the capture gap line", DEADLINE, || async {
            self.gap_lines().into_iter().next()
        })
        .await
    }
}

fn log_path(test: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("rowcast-{test}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The slot the relay recorded.
async fn recorded_slot(client: &Client) -> String {
    wait_for("the relay to record its slot", DEADLINE, || async {
        client
            .query_one("SELECT slot_name FROM realtime.state", &[])
            .await
            .ok()?
            .get::<_, Option<String>>(0)
    })
    .await
}

/// Drops a slot once its walsender (of a relay that just exited) is gone.
async fn drop_slot(client: &Client, slot: &str) {
    wait_for("the slot to be dropped", DEADLINE, || async {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .ok()
    })
    .await;
}

async fn insert_content(client: &Client, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        client
            .execute(
                "INSERT INTO content (id, author_id, title, visibility) VALUES ($1, 1, 'c', 'public')",
                &[&id],
            )
            .await
            .unwrap();
    }
}

/// Content ids stored as `content-created`.
async fn stored_content(client: &Client) -> Vec<i64> {
    client
        .query(
            "SELECT (data->>'id')::bigint FROM realtime.outbox
             WHERE event = 'content-created' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Capture gaps stored: (marker seq, slot, last position present).
async fn gaps(client: &Client) -> Vec<(i64, Option<String>, bool)> {
    client
        .query(
            "SELECT seq, slot, last_lsn IS NOT NULL FROM realtime.capture_gaps ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The stored gaps once there is at least one: the relay logs its line
/// before the marker's transaction commits.
async fn stored_gaps(client: &Client) -> Vec<(i64, Option<String>, bool)> {
    wait_for("the gap marker to be stored", DEADLINE, || async {
        let found = gaps(client).await;
        (!found.is_empty()).then_some(found)
    })
    .await
}

async fn join_since(addr: SocketAddr, room: &str, since: i64) -> (Ws, Value) {
    let mut ws = open(addr, &token("1")).await;
    let reply = ws
        .request(json!({"type": "join", "room": room, "since": since}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    (ws, reply)
}

/// Content ids of the `content-created` frames `ws` receives until the one
/// of `last`.
async fn content_frames_until(ws: &mut Ws, last: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    loop {
        let frame = ws.frame().await;
        if frame["event"] == "content-created" {
            let id = frame["data"]["id"].as_i64().unwrap();
            ids.push(id);
            if id == last {
                return ids;
            }
        }
    }
}

async fn history_gap(addr: SocketAddr, room: &str, after: i64) -> bool {
    let (status, page) = http(
        addr,
        "GET",
        &format!("/v1/rooms/{room}/events?after={after}"),
        Some(&token("1")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["gap"].as_bool().unwrap()
}

async fn sse_first_message(addr: SocketAddr, room: &str, since: i64) -> String {
    let path = format!("/v1/sse?rooms={room}&since={since}&token={}", token("1"));
    let mut stream = SseStream::open(addr, &path, &[])
        .await
        .unwrap()
        .expect("the stream opens");
    stream
        .next_before(DEADLINE)
        .await
        .unwrap()
        .expect("a message")
        .event
}

/// A demo database with the basic rows, and a logical relay that streamed from
/// its slot; returns the seq a client had when the relay stopped.
async fn streamed_then_stopped(db: &TestDb, client: &Client, log: &PathBuf) -> (i64, String) {
    insert_basic_rows(client).await;
    let relay = LoggedRelay::start(&db.url, "logical", log, &[]).await;
    insert_content(client, 100..=101).await;
    let since = barrier(client).await;
    let slot = recorded_slot(client).await;
    relay.process.stop(Duration::from_secs(20)).await;
    (since, slot)
}

/// The probe of the report: logical capture stopped, the slot dropped (what
/// a failover before Postgres 17 does to it), a change committed, the relay
/// started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_a_reported_capture_gap_and_capture_goes_on() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    let log = log_path("dropped-slot");
    let (since, slot) = streamed_then_stopped(&db, &client, &log).await;
    drop_slot(&client, &slot).await;
    insert_content(&client, 102..=102).await;

    let relay = LoggedRelay::start(&db.url, "logical", &log, &[]).await;
    let line = relay.gap_line().await;
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("`{slot}`")),
        "names the slot: {line}"
    );
    assert!(line.contains("last position"), "{line}");
    assert!(line.contains("missing"), "says what happened: {line}");
    let stored = stored_gaps(&client).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let (marker, gap_slot, has_position) = stored[0].clone();
    assert_eq!(gap_slot.as_deref(), Some(slot.as_str()));
    assert!(has_position, "the last position is stored");
    assert!(marker > since);
    assert_eq!(
        rowcast_devkit::http::metric(relay.addr, "rowcast_capture_gaps_total").await,
        1.0
    );

    // Capture goes on from a new slot; the change made without one is lost
    // (and reported, which is the point).
    insert_content(&client, 103..=103).await;
    barrier(&client).await;
    assert_eq!(stored_content(&client).await, vec![100, 101, 103]);

    // Every resume from before the marker says gap; from the marker on, not.
    let (mut ws, reply) = join_since(relay.addr, "user_1", since).await;
    assert_eq!(reply["gap"], true, "{reply}");
    assert_eq!(content_frames_until(&mut ws, 103).await, vec![103]);
    let (_ws, reply) = join_since(relay.addr, "user_1", marker).await;
    assert_ne!(reply["gap"], true, "{reply}");
    assert!(history_gap(relay.addr, "user_1", since).await);
    assert!(!history_gap(relay.addr, "user_1", marker).await);
    assert_eq!(sse_first_message(relay.addr, "user_1", since).await, "gap");

    // A restart after the gap is continuous again.
    relay.process.stop(Duration::from_secs(20)).await;
    let relay = LoggedRelay::start(&db.url, "logical", &log, &[]).await;
    insert_content(&client, 104..=104).await;
    barrier(&client).await;
    assert_eq!(stored_content(&client).await, vec![100, 101, 103, 104]);
    assert_eq!(gaps(&client).await.len(), 1, "no second gap");
    assert_eq!(relay.gap_lines().len(), 1, "{}", relay.text());
}

/// With `ROWCAST_ON_CAPTURE_GAP=stop` the relay exits non-zero with the
/// line, storing nothing, for an operator who backfills first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_capture_gap_stop_exits_non_zero_with_the_line() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    let log = log_path("gap-stop");
    let (_, slot) = streamed_then_stopped(&db, &client, &log).await;
    drop_slot(&client, &slot).await;
    let url = db.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = serve_command(&url, "logical", &[("ROWCAST_ON_CAPTURE_GAP", "stop")]);
        command.stderr(Stdio::piped()).output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exits non-zero: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("capture gap on slot"))
        .collect();
    assert!(!lines.is_empty(), "the line: {stderr}");
    assert!(lines[0].contains(&format!("`{slot}`")), "{}", lines[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(gaps(&client).await.is_empty(), "no marker when stopping");
    let slots = slots_named(&client, &slot).await;
    assert_eq!(slots, 0, "no new slot is made before the operator acts");
}

/// A slot consumed by something else (`pg_logical_slot_get_binary_changes`)
/// confirmed past what the relay recorded: a gap, and the slot is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_consumed_by_someone_else_is_a_capture_gap() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    let log = log_path("consumed-slot");
    let (since, slot) = streamed_then_stopped(&db, &client, &log).await;
    insert_content(&client, 102..=102).await;
    let publication: String = client
        .query_one("SELECT pubname::text FROM pg_publication LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let consumed: i64 = wait_for("the slot to be consumed", DEADLINE, || async {
        client
            .query_one(
                "SELECT count(*) FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
                     'proto_version', '1', 'publication_names', $2)",
                &[&slot, &publication],
            )
            .await
            .ok()
            .map(|row| row.get(0))
    })
    .await;
    assert!(consumed > 0);

    let relay = LoggedRelay::start(&db.url, "logical", &log, &[]).await;
    let line = relay.gap_line().await;
    assert!(line.contains("consumed"), "{line}");
    assert_eq!(stored_gaps(&client).await.len(), 1);
    insert_content(&client, 103..=103).await;
    barrier(&client).await;
    assert_eq!(stored_content(&client).await, vec![100, 101, 103]);
    let kept = slots_named(&client, &slot).await;
    assert_eq!(kept, 1, "the same slot streams on");
    let (_ws, reply) = join_since(relay.addr, "user_1", since).await;
    assert_eq!(reply["gap"], true, "{reply}");
}

/// The slot lost while the relay streams it: live members are closed with
/// 1001 so they resume, and their resume says gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_lost_while_streaming_sends_members_to_resume_into_a_gap() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    insert_basic_rows(&client).await;
    let log = log_path("lost-live");
    let relay = LoggedRelay::start(&db.url, "logical", &log, &[]).await;
    let slot = recorded_slot(&client).await;
    let (mut member, _) = join_since(relay.addr, "user_1", 0).await;
    insert_content(&client, 100..=100).await;
    assert_eq!(content_frames_until(&mut member, 100).await, vec![100]);
    let since = barrier(&client).await;

    wait_for("the slot to be dropped", DEADLINE, || async {
        let _ = client
            .execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                 WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&slot],
            )
            .await;
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .ok()
    })
    .await;
    assert_eq!(member.closed().await, 1001, "sent to resume");
    relay.gap_line().await;
    let (_ws, reply) = join_since(relay.addr, "user_1", since).await;
    assert_eq!(reply["gap"], true, "{reply}");
}

/// A primary, its streaming standby, the demo database and a relay on the
/// pair's multi-host URL.
struct Pair {
    primary: Cluster,
    standby: Cluster,
    /// Clients of the current primary's demo database.
    client: Client,
    url: String,
}

impl Pair {
    async fn start(pg: Pg) -> Self {
        let primary = tokio::task::spawn_blocking(move || pg.private_cluster())
            .await
            .unwrap();
        let db = private_demo_db(&primary).await;
        insert_basic_rows(&db.client().await).await;
        let standby = primary.standby().await.expect("a standby");
        let url = format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/demo?target_session_attrs=read-write",
            primary.port(),
            standby.port()
        );
        let client = connect(&primary.url("demo")).await;
        Self {
            primary,
            standby,
            client,
            url,
        }
    }

    async fn wait_caught_up(&self) {
        wait_for("the standby to replay the primary", DEADLINE, || async {
            self.standby
                .caught_up(&self.primary)
                .await
                .ok()
                .filter(|c| *c)
        })
        .await;
    }

    /// Waits until the standby holds `slot` as a synchronised failover slot
    /// that survives a promotion (17+).
    async fn wait_slot_synced(&self, slot: &str) {
        let standby = connect(&self.standby.url("demo")).await;
        wait_for("the standby to synchronise the slot", DEADLINE, || async {
            standby
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots
                     WHERE slot_name = $1 AND synced AND NOT temporary",
                    &[&slot],
                )
                .await
                .ok()
                .flatten()
                .map(|_| ())
        })
        .await;
    }
}

/// What a client that resumed after a promotion got.
struct AfterPromotion {
    /// The join's `gap`.
    gap: bool,
    /// `content-created` ids it received, in order.
    received: Vec<i64>,
    /// Capture gaps stored on the new primary.
    gaps: usize,
    /// `rowcast_capture_gaps_total`.
    counted: f64,
    relay: LoggedRelay,
}

/// The scenario of the report: a relay on the multi-host URL, 30 changes
/// committed and replicated but not captured (the relay is paused), the
/// primary killed and the standby promoted, the relay let go on, and 20
/// changes after the promotion. A client rejoins with its last `since`.
async fn across_a_promotion(pg: Pg, mode: &str) -> AfterPromotion {
    let mut pair = Pair::start(pg).await;
    let log = log_path(&format!("promotion-{mode}-{}", pg.major().unwrap_or(0)));
    let mut relay = LoggedRelay::start(&pair.url, mode, &log, &[]).await;
    insert_content(&pair.client, 1..=10).await;
    let since = barrier(&pair.client).await;
    if mode == "logical" && pg.major().unwrap_or(15) >= 17 {
        let slot = recorded_slot(&pair.client).await;
        pair.wait_slot_synced(&slot).await;
    }

    let pid = relay.process.id() as i32;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    insert_content(&pair.client, 11..=40).await;
    pair.wait_caught_up().await;
    pair.primary.stop(StopMode::Immediate).unwrap();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_for("/readyz to say 503 without a primary", DEADLINE, || async {
        match rowcast_devkit::http::request(relay.addr, "GET", "/readyz", None, None).await {
            Ok((503, _)) => Some(()),
            _ => None,
        }
    })
    .await;
    pair.standby.promote().unwrap();
    pair.client = connect(&pair.standby.url("demo")).await;
    assert!(
        relay.process.ready(relay.addr, DEADLINE).await,
        "the relay found the new primary; its log:\n{}",
        relay.text()
    );
    insert_content(&pair.client, 41..=60).await;
    barrier(&pair.client).await;

    let (mut ws, reply) = join_since(relay.addr, "user_1", since).await;
    let received = content_frames_until(&mut ws, 60).await;
    let gaps = gaps(&pair.client).await.len();
    let counted = rowcast_devkit::http::metric(relay.addr, "rowcast_capture_gaps_total").await;
    AfterPromotion {
        gap: reply["gap"] == true,
        received,
        gaps,
        counted,
        relay,
    }
}

/// Postgres 15 has no failover slots: the slot is gone on the promoted
/// standby. The client gets `gap: true` (never a silent hole), with the
/// line and the metric, and every change after the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_capture_across_a_promotion_reports_the_lost_slot() {
    let after = across_a_promotion(Pg::DEFAULT, "logical").await;
    let every: Vec<i64> = (11..=60).collect();
    if after.gap {
        assert_eq!(after.gaps, 1);
        let line = after.relay.gap_line().await;
        assert!(line.contains("ERROR") && line.contains("missing"), "{line}");
        assert_eq!(after.counted, 1.0);
        let from_promotion: Vec<i64> = (41..=60).collect();
        assert!(
            after.received.ends_with(&from_promotion),
            "{:?}",
            after.received
        );
    } else {
        assert_eq!(after.received, every, "no gap: then every change once");
    }
}

/// Postgres 17 and 18: the failover slot was synchronised to the standby,
/// so the relay resumes on the new primary with every change exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_slot_on_17_keeps_every_change_across_a_promotion() {
    failover_slot_keeps_every_change(Pg::of(17)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_slot_on_18_keeps_every_change_across_a_promotion() {
    failover_slot_keeps_every_change(Pg::of(18)).await;
}

async fn failover_slot_keeps_every_change(pg: Pg) {
    let after = across_a_promotion(pg, "logical").await;
    assert!(!after.gap, "{}", after.relay.text());
    assert_eq!((after.gaps, after.counted), (0, 0.0));
    assert_eq!(after.received, (11..=60).collect::<Vec<i64>>());
    assert!(after.relay.gap_lines().is_empty(), "{}", after.relay.text());
}

/// Trigger capture keeps its capture rows through a physical failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_capture_keeps_every_change_across_a_promotion() {
    let after = across_a_promotion(Pg::DEFAULT, "trigger").await;
    assert!(!after.gap, "{}", after.relay.text());
    assert_eq!(after.gaps, 0);
    assert_eq!(after.received, (11..=60).collect::<Vec<i64>>());
}

/// What an asynchronous failover does to the outbox: the newest events a
/// running node delivered are not on the promoted standby. The node stores
/// a gap marker above everything it delivered, so no seq is used twice and
/// every resume from before the marker says gap.
async fn outbox_went_back(mode: &str) {
    let (_db, client, relay) = basic_relay(mode).await;
    let (mut member, _) = join_since(relay.addr, "user_1", 0).await;
    insert_content(&client, 100..=102).await;
    assert_eq!(
        content_frames_until(&mut member, 102).await,
        vec![100, 101, 102]
    );
    let delivered = barrier_delivered(&client, &relay).await;
    let lost = bigints(&client, "SELECT seq FROM realtime.outbox WHERE event = 'content-created' AND (data->>'id')::int >= 101").await;
    let kept = lost[0] - 1;
    client
        .batch_execute(&format!(
            "BEGIN;
             DELETE FROM realtime.outbox_rooms WHERE seq > {kept};
             DELETE FROM realtime.outbox WHERE seq > {kept};
             UPDATE realtime.state SET head = {kept};
             COMMIT;"
        ))
        .await
        .unwrap();

    insert_content(&client, 103..=103).await;
    assert_eq!(member.closed().await, 1001, "sent to resume");
    let marker = stored_gaps(&client).await[0].0;
    assert!(
        marker > delivered,
        "marker {marker} above delivered {delivered}"
    );
    barrier(&client).await;
    let seq_103: i64 = client
        .query_one(
            "SELECT seq FROM realtime.outbox WHERE event = 'content-created' AND (data->>'id')::int = 103",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(seq_103 > marker, "no seq is reused");
    let (_ws, reply) = join_since(relay.addr, "user_1", lost[0]).await;
    assert_eq!(reply["gap"], true, "{reply}");
    let (mut ws, reply) = join_since(relay.addr, "user_1", marker).await;
    assert_ne!(reply["gap"], true, "{reply}");
    assert_eq!(content_frames_until(&mut ws, 103).await, vec![103]);
    stop_relay(relay).await;
}

/// How many replication slots are named `slot`.
async fn slots_named(client: &tokio_postgres::Client, slot: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}
