//! SIGKILL in the delivery path. Logical capture fans an event out once its
//! change is durable in the WAL, before its outbox row commits; trigger
//! capture after the commit. Either way, killing the relay at any point
//! must leave every client with every change exactly once, in seq order,
//! and the outbox holding exactly what any client was shown, under the
//! same seq.
//!
//! Eight writers commit while the relay is killed again and again. One
//! client follows live, resuming with `since` = the last seq it saw after
//! every kill; another keeps reconnecting with a `since` behind what it
//! saw. Every session of either must be exactly the outbox's events of its
//! rooms after its `since`: same seqs, same names, same data, none missing
//! in between, none twice.
//!
//! Logical capture also opens each outbox transaction ahead of the batch
//! it will store, so that the batch is fanned out with the state row
//! already locked. The same clients check that Postgres terminating that
//! waiting session, again and again while the writers commit, loses and
//! repeats nothing either.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Kills of the relay per capture mode.
const KILLS: usize = 20;
/// The rooms the burst writes to that user 1 may join.
const ROOMS: [&str; 5] = ["content_1", "content_2", "content_3", "content_4", "user_1"];
/// How long a client keeps trying to reach a restarting relay.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_with_clients_joined_logical() {
    sigkill_with_clients("logical").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_with_clients_joined_trigger() {
    sigkill_with_clients("trigger").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminating_the_transaction_opened_ahead_with_clients_joined() {
    with_clients_joined("logical", Disruption::TerminateAhead).await;
}

/// What happens to the relay at each random point.
#[derive(Clone, Copy, PartialEq)]
enum Disruption {
    /// SIGKILL, then a restart.
    Kill,
    /// Postgres terminates the outbox transaction the relay opened ahead
    /// of its next batch (the relay keeps running).
    TerminateAhead,
}

/// Ends the relay's outbox transaction that waits for the next batch, if
/// one is open; whether one was.
async fn terminate_ahead(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'rowcast ingest'
               AND state = 'idle in transaction'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
}

/// What one connection of a client received in one room: the `since` it
/// joined with and the events that followed, in arrival order.
#[derive(Debug, Default)]
struct Session {
    since: i64,
    events: Vec<(i64, String, Value)>,
}

/// How a client picks the `since` of its next session.
#[derive(Clone, Copy)]
enum Resume {
    /// The last seq it saw: a client following live.
    Last,
    /// Some way behind the last seq it saw: a client catching up from an
    /// older cursor.
    Behind,
}

async fn sigkill_with_clients(mode: &str) {
    with_clients_joined(mode, Disruption::Kill).await;
}

async fn with_clients_joined(mode: &str, disruption: Disruption) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    burst::setup(&client).await;
    let port = rowcast_devkit::process::free_port();
    let (mut relay, addr) = spawn_relay_on(&db, mode, port, &[]).await;
    let done = Arc::new(AtomicBool::new(false));
    let progress = Progress::default();
    let follower = tokio::spawn(follow(addr, Resume::Last, done.clone(), progress.clone()));
    let resumer = tokio::spawn(follow(
        addr,
        Resume::Behind,
        done.clone(),
        Progress::default(),
    ));
    let writers = burst::start(&db.url, 8, 1500);
    let mut while_writing = 0;
    let mut terminated = 0;
    for _ in 0..KILLS {
        // A random point: some tens of events after the last restart,
        // while the writers still write.
        let target = head(&client).await + 20 + (rand_u64() % 100) as i64;
        wait_for(
            "the relay to store more events",
            Duration::from_secs(60),
            || async {
                let stored = scalar(&client, "SELECT head FROM realtime.state").await? >= target;
                (stored || writers.iter().all(|w| w.is_finished())).then_some(())
            },
        )
        .await;
        if !writers.iter().all(|w| w.is_finished()) {
            while_writing += 1;
        }
        match disruption {
            Disruption::Kill => {
                relay.kill();
                relay = spawn_relay_on(&db, mode, port, &[]).await.0;
            }
            Disruption::TerminateAhead => terminated += usize::from(terminate_ahead(&client).await),
        }
    }
    assert!(
        while_writing >= KILLS / 2,
        "{mode}: only {while_writing} of {KILLS} disruptions came while the writers wrote"
    );
    if disruption == Disruption::TerminateAhead {
        assert!(
            terminated >= KILLS / 4,
            "a transaction opened ahead was found only {terminated} times of {KILLS}"
        );
    }
    burst::join(writers).await;
    let until = barrier(&client).await;
    burst::verify(&client, until).await;
    let outbox = room_events(&client, until).await;
    let last: BTreeMap<&str, i64> = ROOMS
        .iter()
        .map(|room| (*room, outbox[*room].last().map_or(0, |e| e.0)))
        .collect();
    wait_for(
        "the clients to reach the end",
        RECONNECT_DEADLINE,
        || async { (follower.is_finished() || reached(&progress, &last)).then_some(()) },
    )
    .await;
    done.store(true, Ordering::Release);
    let followed = follower.await.expect("the following client");
    let resumed = resumer.await.expect("the resuming client");
    for (who, sessions) in [("following", &followed), ("resuming", &resumed)] {
        check(who, sessions, &outbox);
    }
    for room in ROOMS {
        let seen: Vec<i64> = followed[room]
            .iter()
            .flat_map(|s| s.events.iter().map(|e| e.0))
            .collect();
        let stored: Vec<i64> = outbox[room].iter().map(|e| e.0).collect();
        assert_eq!(
            seen, stored,
            "{mode}: the following client saw {room}'s events exactly once each, all of them"
        );
    }
    drop(relay);
}

/// Each room's last seq the following client saw.
type Progress = Arc<Mutex<BTreeMap<String, i64>>>;

/// Whether the following client saw every room's last stored seq.
fn reached(progress: &Progress, last: &BTreeMap<&str, i64>) -> bool {
    let progress = progress.lock().unwrap_or_else(|e| e.into_inner());
    last.iter()
        .all(|(room, seq)| progress.get(*room).is_some_and(|seen| seen >= seq))
}

/// A client of user 1 in every burst room: connects, joins each room with
/// a `since`, reads until the connection ends, and starts again, until
/// `done`. Returns its sessions per room.
async fn follow(
    addr: SocketAddr,
    resume: Resume,
    done: Arc<AtomicBool>,
    progress: Progress,
) -> BTreeMap<String, Vec<Session>> {
    let mut sessions: BTreeMap<String, Vec<Session>> = BTreeMap::new();
    let mut last: BTreeMap<String, i64> = ROOMS.iter().map(|r| (r.to_string(), 0)).collect();
    while !done.load(Ordering::Acquire) {
        let url = format!("ws://{addr}/v1/ws?token={}", common::ws::token("1"));
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
            // The relay is restarting: try again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut open: BTreeMap<String, Session> = BTreeMap::new();
        for room in ROOMS {
            let since = match resume {
                Resume::Last => last[room],
                Resume::Behind => last[room] - (rand_u64() % 40) as i64,
            }
            .max(0);
            open.insert(
                room.to_string(),
                Session {
                    since,
                    events: Vec::new(),
                },
            );
            let join = json!({"type": "join", "room": room, "since": since, "ref": room});
            let _ = ws.send(Message::Text(join.to_string().into())).await;
        }
        // A resuming client also leaves on its own now and then.
        let leave_after = matches!(resume, Resume::Behind).then(|| 50 + rand_u64() % 200);
        let mut read = 0u64;
        while !done.load(Ordering::Acquire) && leave_after.is_none_or(|n| read < n) {
            let frame = match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(text)))) => {
                    serde_json::from_str::<Value>(&text).expect("a JSON frame")
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => break,
                Ok(Some(Ok(_))) => continue,
            };
            match frame["type"].as_str() {
                Some("event") => {
                    let room = frame["room"].as_str().unwrap_or_default().to_string();
                    let seq = frame["seq"].as_i64().expect("an event has a seq");
                    let name = frame["event"].as_str().unwrap_or_default().to_string();
                    let Some(session) = open.get_mut(&room) else {
                        continue;
                    };
                    session.events.push((seq, name, frame["data"].clone()));
                    let seen = last.get_mut(&room).expect("a joined room");
                    *seen = (*seen).max(seq);
                    if matches!(resume, Resume::Last) {
                        let mut progress = progress.lock().unwrap_or_else(|e| e.into_inner());
                        progress.insert(room, *seen);
                    }
                    read += 1;
                }
                // A join refused (the relay starting or stopping): start again.
                Some("reply") if frame["ok"] == false => break,
                Some("error") => break,
                _ => {}
            }
        }
        for (room, session) in open {
            sessions.entry(room).or_default().push(session);
        }
    }
    sessions
}

/// The outbox's events per burst room up to `until`, in seq order.
async fn room_events(
    client: &tokio_postgres::Client,
    until: i64,
) -> BTreeMap<String, Vec<(i64, String, Value)>> {
    let mut rooms: BTreeMap<String, Vec<(i64, String, Value)>> =
        ROOMS.iter().map(|r| (r.to_string(), Vec::new())).collect();
    for event in stored_between(client, 0, until).await {
        for room in &event.rooms {
            if let Some(events) = rooms.get_mut(room) {
                events.push((event.seq, event.event.clone(), event.data.clone()));
            }
        }
    }
    rooms
}

/// Every session is exactly the outbox's events of its room after its
/// `since`, in order, as far as it read.
fn check(
    who: &str,
    sessions: &BTreeMap<String, Vec<Session>>,
    outbox: &BTreeMap<String, Vec<(i64, String, Value)>>,
) {
    for (room, sessions) in sessions {
        let stored = &outbox[room];
        for (n, session) in sessions.iter().enumerate() {
            let expected: Vec<&(i64, String, Value)> = stored
                .iter()
                .filter(|e| e.0 > session.since)
                .take(session.events.len())
                .collect();
            let got: Vec<&(i64, String, Value)> = session.events.iter().collect();
            if got != expected {
                let first = got.iter().zip(&expected).position(|(a, b)| a != b);
                panic!(
                    "the {who} client's session {n} in {room} (since {}) differs from the outbox at index {first:?}: \
                     got {:?}, the outbox has {:?}",
                    session.since,
                    got.iter().map(|e| e.0).collect::<Vec<_>>(),
                    expected.iter().map(|e| e.0).collect::<Vec<_>>(),
                );
            }
        }
    }
}

/// The routes file changes between a crash and the restart. Events may
/// have been delivered under the old file before their outbox rows
/// committed, so changes committed before the restart are routed by the
/// routes recorded at the crash (a delivered event never changes); later
/// changes by the new file. After a clean stop nothing is pending, and the
/// new file applies at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_file_changed_across_a_crash_applies_once_the_stream_caught_up() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    burst::setup(&client).await;
    let original = include_str!("../../routes.toml");
    let renamed = original.replace("event = \"content-updated\"", "event = \"content-changed\"");
    assert_ne!(renamed, original, "the routes file names content-updated");
    let path = std::env::temp_dir().join(format!(
        "rowcast-routes-{}-{}.toml",
        std::process::id(),
        rand_u64()
    ));
    let routes = path.display().to_string();
    let extra = [("ROWCAST_ROUTES", routes.as_str())];
    let port = rowcast_devkit::process::free_port();
    std::fs::write(&path, original).unwrap();
    let (mut relay, _) = spawn_relay_on(&db, "logical", port, &extra).await;
    let title = |id: i64, title: &'static str| {
        let client = &client;
        async move {
            client
                .execute(
                    "UPDATE content SET title = $1 WHERE id = $2",
                    &[&title, &id],
                )
                .await
                .unwrap();
        }
    };
    title(1, "before the crash").await;
    barrier(&client).await;
    relay.kill();
    // Committed while the relay is down, after a crash: routed by the
    // routes the stream was read with.
    title(2, "while down after a crash").await;
    std::fs::write(&path, &renamed).unwrap();
    let (relay, _) = spawn_relay_on(&db, "logical", port, &extra).await;
    barrier(&client).await;
    title(3, "after the restart").await;
    barrier(&client).await;
    let recorded: Option<String> = client
        .query_one("SELECT ahead_routes FROM realtime.state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recorded.as_deref(),
        Some(renamed.as_str()),
        "the new file is recorded"
    );
    // A clean stop leaves nothing to derive again: the next file applies
    // to what was committed while the relay was down.
    assert!(
        relay.stop(Duration::from_secs(20)).await.is_some(),
        "the relay stopped cleanly"
    );
    title(4, "while down after a clean stop").await;
    std::fs::write(&path, original).unwrap();
    let (relay, _) = spawn_relay_on(&db, "logical", port, &extra).await;
    let until = barrier(&client).await;
    let names: BTreeMap<String, String> = stored_between(&client, 0, until)
        .await
        .into_iter()
        .filter(|e| e.rooms.iter().any(|r| r.starts_with("content_")))
        .map(|e| {
            (
                e.data["title"].as_str().unwrap_or_default().to_string(),
                e.event,
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("before the crash", "content-updated"),
        ("while down after a crash", "content-updated"),
        ("after the restart", "content-changed"),
        ("while down after a clean stop", "content-updated"),
    ]
    .into_iter()
    .map(|(t, e)| (t.to_string(), e.to_string()))
    .collect();
    assert_eq!(names, expected);
    drop(relay);
    let _ = std::fs::remove_file(&path);
}
