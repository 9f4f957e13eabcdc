//! Several relay nodes on one database, started exactly like one: one leads
//! (captures), the others follow the outbox. Every node's clients get each
//! change once, in order; explicit events published on any node reach the
//! clients of every node; and when the leader is killed in the middle of a
//! burst, another node takes over with nothing lost or stored twice.
//!
//! Each scenario runs over the Postgres bus and over NATS
//! (`ROWCAST_BUS=nats://127.0.0.1:4222`, a stream of its own per test);
//! the NATS variant fails when no server listens there (unless
//! `ROWCAST_TEST_SKIP=nats`).

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::ws::*;
use common::*;
use serde_json::json;
use tokio_postgres::Client;

in_both_modes! {
    every_node_delivers_each_change_once_in_order => two_nodes,
    a_killed_leader_is_replaced_and_nothing_is_lost => failover,
    over_nats_every_node_delivers_each_change_once_in_order => two_nodes_over_nats,
    over_nats_a_killed_leader_is_replaced_and_nothing_is_lost => failover_over_nats,
    a_nats_server_killed_mid_stream_loses_nothing_on_a_follower => nats_server_killed,
}

/// Where the NATS variant finds its server.
const NATS: &str = "127.0.0.1:4222";

/// A NATS bus with a stream of its own, so tests run in parallel.
struct NatsBus {
    /// `ROWCAST_BUS`.
    url: String,
    /// `ROWCAST_NATS_STREAM`.
    stream: String,
}

impl NatsBus {
    /// A bus on the server at [`NATS`], or `None` (and a message saying
    /// the test is skipped) when none is reachable.
    fn reachable(test: &str) -> Option<Self> {
        if !required(
            "nats",
            (!cfg!(feature = "nats")).then(|| format!("{test}: built without the `nats` feature")),
        ) {
            return None;
        }
        let addr: SocketAddr = NATS.parse().unwrap();
        let down = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err();
        if !required(
            "nats",
            down.then(|| {
                format!("{test}: no NATS server at {NATS} (start `nats-server -js` there)")
            }),
        ) {
            return None;
        }
        Some(Self {
            url: format!("nats://{NATS}"),
            stream: format!("rowcast_test_{:016x}", rand_stream_suffix()),
        })
    }

    /// The settings, as `spawn_listening_relay` takes them.
    fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("ROWCAST_BUS", self.url.as_str()),
            ("ROWCAST_NATS_STREAM", self.stream.as_str()),
        ]
    }

    /// Removes the stream the nodes made.
    async fn remove(self) {
        let client = async_nats::connect(NATS).await.expect("connect to NATS");
        async_nats::jetstream::new(client)
            .delete_stream(&self.stream)
            .await
            .expect("the nodes made their stream");
    }
}

/// A NATS server of a test's own (JetStream on, on a free port), which the
/// test kills with SIGKILL and starts again on the same port and store.
struct PrivateNats {
    binary: std::path::PathBuf,
    port: u16,
    store: std::path::PathBuf,
    process: Option<std::process::Child>,
}

impl PrivateNats {
    /// Starts one, or `None` (saying the test is skipped) without a
    /// `nats-server` binary.
    async fn start(test: &str) -> Option<Self> {
        let binary = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !required(
            "nats",
            binary
                .is_none()
                .then(|| format!("{test}: no nats-server binary")),
        ) {
            return None;
        }
        let binary = binary?;
        let port = rowcast_devkit::process::free_port();
        let store =
            std::env::temp_dir().join(format!("rowcast-nats-{}-{port}", std::process::id()));
        let mut nats = Self {
            binary,
            port,
            store,
            process: None,
        };
        nats.run().await;
        Some(nats)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let mut command = std::process::Command::new(&self.binary);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        rowcast_devkit::process::dies_with_parent(&mut command);
        self.process = Some(command.spawn().expect("start nats-server"));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_for("nats-server to listen", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// The bus server dies (SIGKILL) in the middle of a burst and comes back:
/// the follower's clients get every event exactly once, in order; the
/// outbox covers the outage.
async fn nats_server_killed(capture: &str) {
    if !required(
        "nats",
        (!cfg!(feature = "nats")).then(|| "built without the `nats` feature".to_string()),
    ) {
        return;
    }
    let Some(mut nats) = PrivateNats::start("nats_server_killed").await else {
        return;
    };
    let url = nats.url();
    let bus = [
        ("ROWCAST_BUS", url.as_str()),
        ("ROWCAST_NATS_STREAM", "rowcast_kill"),
    ];
    let db = TestDb::demo().await;
    let client = db.client().await;
    burst::setup(&client).await;
    let (_a, addr_a) = spawn_listening_relay(&db, capture, &bus).await;
    let (_b, addr_b) = spawn_listening_relay(&db, capture, &bus).await;
    assert!(is_leader(addr_a).await);
    let mut wb = watcher(addr_b).await;

    let writers = burst::start(&db.url, 4, 150);
    let start = head(&client).await;
    let under_way = |at_least: i64| {
        let client = &client;
        async move {
            wait_for("the burst to go on", Duration::from_secs(30), || async {
                (head(client).await >= at_least).then_some(())
            })
            .await
        }
    };
    under_way(start + 40).await;
    nats.kill();
    // Writes go on while the bus is down, then it comes back.
    let down = head(&client).await;
    under_way(down + 40).await;
    nats.run().await;
    burst::join(writers).await;
    let until = barrier(&client).await;
    burst::verify(&client, until).await;
    let expected = stored_per_room(&client, until).await;
    receives_exactly(&mut wb, &expected, "b").await;
}

/// A suffix that keeps parallel tests' streams apart.
fn rand_stream_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

async fn two_nodes(capture: &str) {
    two_nodes_over(capture, &[]).await;
}

async fn two_nodes_over_nats(capture: &str) {
    if let Some(bus) = NatsBus::reachable("two_nodes") {
        two_nodes_over(capture, &bus.env()).await;
        bus.remove().await;
    }
}

async fn failover(capture: &str) {
    failover_over(capture, &[]).await;
}

async fn failover_over_nats(capture: &str) {
    if let Some(bus) = NatsBus::reachable("failover") {
        failover_over(capture, &bus.env()).await;
        bus.remove().await;
    }
}

/// The rooms the burst writes to.
const ROOMS: [&str; 6] = [
    "content_1",
    "content_2",
    "content_3",
    "content_4",
    "user_1",
    "user_2",
];

/// A client of `addr` in every burst room, from the first event on.
async fn watcher(addr: SocketAddr) -> Ws {
    let mut ws = open(addr, &service_token()).await;
    for room in ROOMS {
        let reply = ws
            .request(json!({"type": "join", "room": room, "since": 0}))
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    ws
}

/// Each room's stored seqs up to `until`.
async fn stored_per_room(client: &Client, until: i64) -> BTreeMap<String, Vec<i64>> {
    let rooms: Vec<String> = ROOMS.iter().map(|r| r.to_string()).collect();
    client
        .query(
            "SELECT room, array_agg(seq ORDER BY seq) FROM realtime.outbox_rooms
             WHERE room = ANY($1) AND seq <= $2 GROUP BY room",
            &[&rooms, &until],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Reads frames until every room reached its last expected seq; checks each
/// room got exactly the expected seqs, in order.
async fn receives_exactly(ws: &mut Ws, expected: &BTreeMap<String, Vec<i64>>, node: &str) {
    let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let done = |got: &BTreeMap<String, Vec<i64>>| {
        expected
            .iter()
            .all(|(room, seqs)| got.get(room).and_then(|g| g.last()) >= seqs.last())
    };
    while !done(&got) {
        let frame = ws.frame().await;
        if let (Some(room), Some(seq)) = (frame["room"].as_str(), frame["seq"].as_i64()) {
            got.entry(room.to_string()).or_default().push(seq);
        }
    }
    for (room, seqs) in expected {
        let received: Vec<i64> = got
            .get(room)
            .map(|g| {
                g.iter()
                    .copied()
                    .filter(|s| s <= seqs.last().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            &received, seqs,
            "node {node}, room {room}: each event once, in order"
        );
    }
}

async fn is_leader(addr: SocketAddr) -> bool {
    rowcast_devkit::http::metric(addr, "rowcast_leader").await == 1.0
}

async fn publish(addr: SocketAddr, marker: &str) -> i64 {
    let (status, body) = rowcast_devkit::http::json(
        addr,
        "POST",
        "/v1/publish",
        Some(&service_token()),
        Some(json!({"rooms": ["user_1"], "event": "announcement", "data": {"marker": marker}})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    body["seq"].as_i64().expect("a seq")
}

/// Waits for the published event `seq` with `marker` on `ws`.
async fn receives_published(ws: &mut Ws, seq: i64, marker: &str) {
    loop {
        let frame = ws.frame().await;
        if frame["seq"] == seq {
            assert_eq!(frame["data"]["marker"], marker);
            return;
        }
    }
}

async fn two_nodes_over(capture: &str, bus: &[(&str, &str)]) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    burst::setup(&client).await;
    let (_a, addr_a) = spawn_listening_relay(&db, capture, bus).await;
    let (_b, addr_b) = spawn_listening_relay(&db, capture, bus).await;
    assert!(is_leader(addr_a).await, "the first node leads");
    assert!(!is_leader(addr_b).await, "the second follows");
    let (mut wa, mut wb) = (watcher(addr_a).await, watcher(addr_b).await);

    burst::join(burst::start(&db.url, 4, 100)).await;
    let until = barrier(&client).await;
    burst::verify(&client, until).await;
    let expected = stored_per_room(&client, until).await;
    receives_exactly(&mut wa, &expected, "a").await;
    receives_exactly(&mut wb, &expected, "b").await;
    let streamed = rowcast_devkit::http::metric(addr_b, "rowcast_events_streamed_total").await;
    if bus.is_empty() {
        assert_eq!(streamed, 0.0, "the Postgres bus carries no stored events");
    } else {
        assert!(streamed > 0.0, "the follower got events from the stream");
    }

    // Explicit events published on either node reach the clients of both.
    for (addr, marker) in [(addr_b, "from b"), (addr_a, "from a")] {
        let seq = publish(addr, marker).await;
        receives_published(&mut wa, seq, marker).await;
        receives_published(&mut wb, seq, marker).await;
    }

    // A right taken away by a commit removes the member on a follower too.
    let mut stranger = open(addr_b, &token("2")).await;
    assert_eq!(stranger.join("content_2").await["ok"], true);
    client
        .batch_execute("UPDATE content SET visibility = 'private' WHERE id = 2")
        .await
        .unwrap();
    loop {
        let frame = stranger.frame().await;
        if frame["type"] == "left" {
            assert_eq!(frame["room"], "content_2");
            break;
        }
    }
}

async fn failover_over(capture: &str, bus: &[(&str, &str)]) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    burst::setup(&client).await;
    let (mut a, addr_a) = spawn_listening_relay(&db, capture, bus).await;
    let (mut b, addr_b) = spawn_listening_relay(&db, capture, bus).await;
    assert!(is_leader(addr_a).await);
    let mut wb = watcher(addr_b).await;

    // The leader dies in the middle of a burst.
    let writers = burst::start(&db.url, 4, 75);
    let start = head(&client).await;
    wait_for(
        "the burst to be under way",
        Duration::from_secs(20),
        || async { (head(&client).await >= start + 40).then_some(()) },
    )
    .await;
    a.kill();
    burst::join(writers).await;
    let until = barrier(&client).await;
    assert!(is_leader(addr_b).await, "the follower took over");
    burst::verify(&client, until).await;
    let expected = stored_per_room(&client, until).await;
    receives_exactly(&mut wb, &expected, "b").await;

    // The killed node comes back as a follower; a client of it resumes
    // exactly with `since`.
    let (_a, addr_a) = spawn_listening_relay(&db, capture, bus).await;
    assert!(!is_leader(addr_a).await);
    let middle = expected["content_1"][expected["content_1"].len() / 2];
    let mut wa = open(addr_a, &service_token()).await;
    let reply = wa
        .request(json!({"type": "join", "room": "content_1", "since": middle}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let rest: Vec<i64> = expected["content_1"]
        .iter()
        .copied()
        .filter(|s| *s > middle)
        .collect();
    let mut replayed = Vec::new();
    while replayed.len() < rest.len() {
        let frame = wa.frame().await;
        if frame["room"] == "content_1" {
            replayed.push(frame["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(replayed, rest, "the rejoin resumes exactly after since");

    // Then the new leader dies too: the restarted node takes over.
    b.kill();
    burst::join(burst::start(&db.url, 2, 20)).await;
    let last = barrier(&client).await;
    assert!(is_leader(addr_a).await, "the restarted node leads now");
    burst::verify(&client, last).await;
}

/// A user is online while any live node has a connection of theirs: closing
/// one of two (on different nodes) stores nothing, closing the last stores
/// `offline` once, and a killed node's users go offline when its lease runs
/// out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_connections_on_every_node() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    let grace = [("ROWCAST_PRESENCE_GRACE", "100ms")];
    let (_a, addr_a) = spawn_listening_relay(&db, "trigger", &grace).await;
    let (mut b, addr_b) = spawn_listening_relay(&db, "trigger", &grace).await;
    let online = |user: &'static str, expected: &'static [&'static str]| {
        let client = &client;
        async move {
            wait_for(
                &format!("user {user}: {expected:?}"),
                Duration::from_secs(30),
                || async { (statuses(client, user).await == expected).then_some(()) },
            )
            .await
        }
    };

    let alice_a = open(addr_a, &token("1")).await;
    let alice_b = open(addr_b, &token("1")).await;
    online("1", &["online"]).await;
    drop(alice_a);
    // Node a applies its changes in order, and bob's `offline` there is due
    // after alice's would be: once it is stored, alice's close is settled.
    let bob = open(addr_a, &token("2")).await;
    online("2", &["online"]).await;
    drop(bob);
    online("2", &["online", "offline"]).await;
    assert_eq!(
        statuses(&client, "1").await,
        ["online"],
        "alice is still on node b"
    );
    drop(alice_b);
    online("1", &["online", "offline"]).await;

    // A node that dies leaves its users to its lease.
    let _carol = open(addr_b, &token("3")).await;
    online("3", &["online"]).await;
    b.kill();
    online("3", &["online", "offline"]).await;
}

/// Ephemeral emits reach members on every node, once, and are not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_on_one_node_reaches_members_on_another() {
    typing_across(&[]).await;
}

/// The same over NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_typing_on_one_node_reaches_members_on_another() {
    if let Some(bus) = NatsBus::reachable("typing_on_one_node_reaches_members_on_another") {
        typing_across(&bus.env()).await;
        bus.remove().await;
    }
}

async fn typing_across(bus: &[(&str, &str)]) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    let (_a, addr_a) = spawn_listening_relay(&db, "trigger", bus).await;
    let (_b, addr_b) = spawn_listening_relay(&db, "trigger", bus).await;
    let mut alice = open(addr_a, &token("1")).await;
    let mut bob = open(addr_b, &token("2")).await;
    for ws in [&mut alice, &mut bob] {
        assert_eq!(ws.join("content_10").await["ok"], true);
    }
    let reply = alice
        .request(json!({"type": "emit", "room": "content_10", "event": "user-typing", "data": {"typing": true}}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let typing = loop {
        let frame = bob.frame().await;
        if frame["event"] == "user-typing" {
            break frame;
        }
    };
    assert_eq!(typing["from"], "1");
    assert_eq!(typing["room"], "content_10");
    assert!(typing.get("seq").is_none(), "ephemeral: no seq");
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM realtime.outbox WHERE event = 'user-typing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "ephemeral events are not stored");
    // The sender's own node does not echo it back to the sender.
    let echoed = alice.drain().await;
    assert!(
        echoed.iter().all(|f| f["event"] != "user-typing"),
        "{echoed:?}"
    );
}

/// A node whose NATS server cannot be reached stops at startup, with one
/// line that names the bus.
#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nats_server_stops_startup() {
    let db = TestDb::demo().await;
    let url = format!("nats://127.0.0.1:{}", rowcast_devkit::process::free_port());
    let mut command = relay_binary(
        &["serve"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("ROWCAST_BUS", &url),
            ("SOCKET_PORT", "0"),
            ("ROWCAST_BIND", "127.0.0.1"),
        ],
    );
    let output = tokio::task::spawn_blocking(move || command.output().expect("run rowcast"))
        .await
        .unwrap();
    assert!(!output.status.success(), "the relay must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NATS bus: cannot connect"), "{stderr}");
}
