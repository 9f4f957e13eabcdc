//! Collaborative documents over `/v1/docs/{name}`, with the real npm `yjs`
//! and `y-websocket` as editors: concurrent edits converge, a kill -9 of
//! the relay loses no update an editor saw and offline edits merge on
//! reconnect, a reader's edits are refused and never applied, and a name
//! the token may not read is refused with 403 before the upgrade.

use std::time::Duration;

use tokio_postgres::Client;

use crate::common::peers::DocEditors;
use crate::common::ws::*;
use crate::common::*;

/// How long editors may take to converge.
const CONVERGED: Duration = Duration::from_secs(60);

/// Chapters of the seeded content: 70 of public content 10 and 72 of
/// private content 12, both by alice (user 1).
const CHAPTERS: &str = "INSERT INTO chapters (id, content_id, title) VALUES
    (70, 10, 'on public content'), (72, 12, 'on private content')";

async fn seeded() -> (TestDb, Client) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    client.batch_execute(CHAPTERS).await.unwrap();
    (db, client)
}

/// Waits until every editor of `ids` has the same text and it holds
/// every word of `words`; returns that text.
async fn converged(editors: &DocEditors, ids: &[&str], words: &[String]) -> String {
    wait_for("the editors to converge", CONVERGED, || async {
        let mut texts = Vec::new();
        for id in ids {
            texts.push(editors.text(id).await);
        }
        let first = texts[0].clone();
        let same = texts.iter().all(|t| *t == first);
        let complete = words
            .iter()
            .all(|w| first.split_whitespace().any(|x| x == w));
        (same && complete).then_some(first)
    })
    .await
}

fn words(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_editors_converge_and_a_kill_loses_nothing_they_saw() {
    let (db, client) = seeded().await;
    let port = rowcast_devkit::process::free_port();
    let (mut relay, addr) = spawn_relay_on(&db, "trigger", port, &[]).await;
    let editors = DocEditors::start().await;
    let alice = token("1");
    for id in ["a", "b"] {
        let opened = editors.open(id, addr, "chapter_70", &alice).await;
        assert_eq!(opened["synced"], true, "{opened}");
    }

    // 200 insertions each, at random word boundaries, at the same time.
    tokio::join!(editors.edit("a", 200, "a"), editors.edit("b", 200, "b"));
    let mut all = words("a", 200);
    all.extend(words("b", 200));
    let text = converged(&editors, &["a", "b"], &all).await;
    assert_eq!(text.split_whitespace().count(), 400, "each insertion once");
    let stored: Vec<i64> = bigints(
        &client,
        "SELECT count(*) FROM realtime.doc_updates WHERE doc = 'chapter_70'",
    )
    .await;
    assert!(stored[0] >= 1, "the updates are stored");

    // kill -9, and edits while the relay is down stay local to `a`.
    relay.kill();
    wait_for("editor a to notice", CONVERGED, || async {
        (editors.state("a").await["connected"] == false).then_some(())
    })
    .await;
    editors.edit("a", 10, "offline").await;
    let (relay, addr) = spawn_relay_on(&db, "trigger", port, &[]).await;

    // A fresh editor gets everything the others saw before the kill, and
    // `a`'s offline edits merge once it reconnected by itself.
    let opened = editors.open("c", addr, "chapter_70", &alice).await;
    assert_eq!(opened["synced"], true, "{opened}");
    all.extend(words("offline", 10));
    let text = converged(&editors, &["a", "b", "c"], &all).await;
    assert_eq!(text.split_whitespace().count(), 410);
    relay.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_edits_are_refused_and_a_name_it_may_not_read_is_403() {
    let (db, _client) = seeded().await;
    let (relay, addr) = spawn_listening_relay(&db, "trigger", &[]).await;
    let editors = DocEditors::start().await;
    // Bob (2) may read chapter 70 (its content is public) but not edit it:
    // the demo's realtime.authorize_edit lets only the content's author.
    let opened = editors
        .open("writer", addr, "chapter_70", &token("1"))
        .await;
    assert_eq!(opened["synced"], true, "{opened}");
    let opened = editors
        .open("reader", addr, "chapter_70", &token("2"))
        .await;
    assert_eq!(opened["synced"], true, "{opened}");

    editors.edit("reader", 5, "reader").await;
    let denied = wait_for("the permission-denied message", CONVERGED, || async {
        let denied = editors.state("reader").await["denied"].clone();
        (denied.as_array().is_some_and(|d| !d.is_empty())).then_some(denied)
    })
    .await;
    assert!(
        denied[0].as_str().unwrap().contains("read-only"),
        "{denied}"
    );
    // The writer's edits still reach the reader, and the reader's never
    // reach anyone: not the writer, not the store, not a fresh editor.
    editors.edit("writer", 3, "writer").await;
    wait_for("the writer's edits at the reader", CONVERGED, || async {
        let text = editors.text("reader").await;
        text.contains("writer2").then_some(())
    })
    .await;
    let opened = editors.open("fresh", addr, "chapter_70", &token("1")).await;
    assert_eq!(opened["synced"], true, "{opened}");
    let fresh = converged(&editors, &["writer", "fresh"], &words("writer", 3)).await;
    assert!(
        !fresh.contains("reader"),
        "a reader's edit was applied: {fresh}"
    );

    // Bob may not read chapter 72 (private content): 403 before the upgrade.
    let url = format!("ws://{addr}/v1/docs/chapter_72?token={}", token("2"));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    // Without a token: 401.
    let url = format!("ws://{addr}/v1/docs/chapter_70");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected a 401, got {:?}", other.map(|(_, r)| r.status())),
    }
    relay.stop(Duration::from_secs(10)).await;
}
