//! Presence end to end: one status change per user however many tabs they
//! open, and users left online by a crashed relay go offline when the next
//! one starts.

use crate::common;

use std::time::Duration;

use common::ws::*;
use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_changes_once_per_user_not_per_tab() {
    let (_db, client, relay) = seeded_relay("trigger").await;
    let mut bob = open(relay.addr, &token("2")).await;
    bob.join("user_2").await;
    let start = barrier_delivered(&client, &relay).await;
    bob.drain().await;
    let tab1 = open(relay.addr, &token("1")).await;
    let tab2 = open(relay.addr, &token("1")).await;
    drop(tab1);
    drop(tab2);
    let statuses = wait_for("alice online then offline", Duration::from_secs(20), || async {
        let rows = client
            .query(
                "SELECT data->>'status' FROM realtime.events
                 WHERE event = 'user-status-changed' AND room = 'user_2' AND data->>'user_id' = '1' AND seq > $1
                 ORDER BY seq",
                &[&start],
            )
            .await
            .ok()?;
        let statuses: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        (statuses.len() >= 2).then_some(statuses)
    })
    .await;
    assert_eq!(statuses, vec!["online", "offline"]);
    barrier_delivered(&client, &relay).await;
    let frames: Vec<Value> = bob
        .drain()
        .await
        .into_iter()
        .filter(|f| f["event"] == "user-status-changed" && f["data"]["user_id"] == 1)
        .collect();
    let seen: Vec<&str> = frames
        .iter()
        .map(|f| f["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(seen, vec!["online", "offline"]);
    let status: String = client
        .query_one("SELECT status FROM users WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "offline");
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_left_online_by_a_crash_go_offline_when_the_relay_restarts() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    let (mut relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let _alice = open(addr, &token("1")).await;
    wait_for("alice online", Duration::from_secs(20), || async {
        (statuses(&client, "1").await == ["online"]).then_some(())
    })
    .await;
    relay.kill();
    assert_eq!(statuses(&client, "1").await, ["online"], "no offline yet");
    let (mut relay, _) = spawn_listening_relay(&db, "trigger", &[]).await;
    wait_for("alice offline", Duration::from_secs(20), || async {
        (statuses(&client, "1").await == ["online", "offline"]).then_some(())
    })
    .await;
    let left: i64 = client
        .query_one("SELECT count(*) FROM realtime.online", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    relay.kill();
}

/// A connection that drops and comes back within the grace period stores
/// nothing; the user's real departure later stores `offline` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_connection_stores_no_presence_change() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    let mut config = config_for(&db.url, "trigger");
    config.gateway.presence_grace = Duration::from_millis(500);
    let relay = start_relay_with(config).await;
    let alice = open(relay.addr, &token("1")).await;
    wait_for("alice online", Duration::from_secs(20), || async {
        (statuses(&client, "1").await == ["online"]).then_some(())
    })
    .await;
    drop(alice);
    let alice = open(relay.addr, &token("1")).await;
    // Changes are applied in order and bob's `offline` is due after alice's
    // would have been: once it is stored, alice's flap is settled.
    let bob = open(relay.addr, &token("2")).await;
    wait_for("bob online", Duration::from_secs(20), || async {
        (statuses(&client, "2").await == ["online"]).then_some(())
    })
    .await;
    drop(bob);
    wait_for("bob offline", Duration::from_secs(20), || async {
        (statuses(&client, "2").await == ["online", "offline"]).then_some(())
    })
    .await;
    assert_eq!(
        statuses(&client, "1").await,
        ["online"],
        "the flap stored nothing"
    );
    drop(alice);
    wait_for("alice offline", Duration::from_secs(20), || async {
        (statuses(&client, "1").await == ["online", "offline"]).then_some(())
    })
    .await;
    stop_relay(relay).await;
}
