//! Graceful shutdown end to end: SIGTERM closes every client with 1001 and
//! stores the presence changes of the users it disconnects before the relay
//! exits cleanly.

use crate::common;

use std::time::Duration;

use common::ws::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_client_with_1001() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    let (mut relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let mut clients = Vec::new();
    for user in ["1", "2", "3"] {
        let mut ws = open(addr, &token(user)).await;
        ws.join(&format!("user_{user}")).await;
        clients.push(ws);
    }
    relay.terminate();
    for ws in &mut clients {
        assert_eq!(ws.closed().await, 1001);
    }
    let exited = wait_for("the relay to exit", Duration::from_secs(30), || {
        let exited = relay.try_wait();
        async move { exited }
    })
    .await;
    assert!(exited.success(), "clean exit: {exited}");
    // The closed connections' users went offline, and that was stored
    // before capture stopped.
    for user in ["1", "2", "3"] {
        assert_eq!(
            statuses(&client, user).await,
            ["online", "offline"],
            "user {user}"
        );
    }
}
