//! A write burst for exactly-once tests: concurrent writers that each
//! alternate between incrementing a counter on a shared content row (so the
//! committed values of a row are 1, 2, 3, ... in commit order) and inserting
//! a uniquely named message. Writers survive database restarts: a failed
//! transaction is retried, and retries are idempotent.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::{connect, stored_between};

/// Content rows the writers share.
pub const ROWS: i64 = 4;

/// Creates the shared rows.
pub async fn setup(client: &Client) {
    client
        .batch_execute(
            "INSERT INTO users (id, username) VALUES (1, 'alice'), (2, 'bob') ON CONFLICT DO NOTHING;
             INSERT INTO content (id, author_id, title, body)
             SELECT g, 1, 'counter', '0' FROM generate_series(1, 4) g ON CONFLICT DO NOTHING;",
        )
        .await
        .expect("burst setup");
}

/// Starts `writers` writers of `per_writer` transactions each. Writers of
/// every call get distinct numbers, so their message bodies never collide.
pub fn start(url: &str, writers: usize, per_writer: usize) -> Vec<JoinHandle<()>> {
    static NEXT_WRITER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let first = NEXT_WRITER.fetch_add(writers, std::sync::atomic::Ordering::Relaxed);
    (first..first + writers)
        .map(|w| {
            let url = url.to_string();
            tokio::spawn(async move { write(&url, w, per_writer).await })
        })
        .collect()
}

async fn write(url: &str, writer: usize, count: usize) {
    let mut client = connect(url).await;
    for i in 0..count {
        let mut attempts = 0;
        loop {
            let result = if i % 2 == 0 {
                let row = ((writer + i) as i64 % ROWS) + 1;
                client
                    .execute(
                        "UPDATE content SET body = (body::int + 1)::text WHERE id = $1",
                        &[&row],
                    )
                    .await
                    .map(|_| ())
            } else {
                let body = format!("w{writer}-{i}");
                client
                    .execute(
                        "INSERT INTO messages (sender_id, recipient_id, body)
                         SELECT 1, 2, $1::text WHERE NOT EXISTS (SELECT 1 FROM messages WHERE body = $1::text)",
                        &[&body],
                    )
                    .await
                    .map(|_| ())
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    attempts += 1;
                    assert!(attempts < 600, "writer {writer} gave up: {e}");
                    // A failed increment may still have committed and is
                    // then retried; `verify` reads the final counter from the
                    // table, so an extra increment is checked like any other.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if client.is_closed() {
                        if let Ok((c, conn)) =
                            tokio_postgres::connect(url, tokio_postgres::NoTls).await
                        {
                            tokio::spawn(conn);
                            client = c;
                        }
                    }
                }
            }
        }
    }
}

/// Waits for every writer.
pub async fn join(writers: Vec<JoinHandle<()>>) {
    for writer in writers {
        writer.await.expect("writer panicked");
    }
}

/// Checks the outbox against the tables: every committed change stored
/// exactly once, each row's events in commit order, seqs without holes.
pub async fn verify(client: &Client, until: i64) {
    let events = stored_between(client, 0, until).await;

    let mut counters: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut messages = Vec::new();
    for e in &events {
        match e.event.as_str() {
            "content-updated" => {
                let id = e.data["id"].as_i64().unwrap();
                let body: i64 = e.data["body"].as_str().unwrap().parse().unwrap();
                counters.entry(id).or_default().push(body);
            }
            "message-sent" => messages.push(e.data["body"].as_str().unwrap().to_string()),
            _ => {}
        }
    }
    for row in 1..=ROWS {
        let committed: String = client
            .query_one("SELECT body FROM content WHERE id = $1", &[&row])
            .await
            .unwrap()
            .get(0);
        let committed: i64 = committed.parse().unwrap();
        let seen = counters.remove(&row).unwrap_or_default();
        let expected: Vec<i64> = (1..=committed).collect();
        if seen != expected {
            let first = seen
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(seen.len().min(expected.len()));
            let around = |v: &[i64]| v[first.saturating_sub(3)..(first + 5).min(v.len())].to_vec();
            panic!(
                "content {row}: events must be the committed values 1..={committed}, once each, in seq order; \
                 {} events seen, first difference at index {first}: seen {:?}, expected {:?}",
                seen.len(),
                around(&seen),
                around(&expected)
            );
        }
    }
    let in_table: HashSet<String> = client
        .query("SELECT body FROM messages", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let unique: HashSet<String> = messages.iter().cloned().collect();
    assert_eq!(unique.len(), messages.len(), "a message was stored twice");
    assert_eq!(
        unique, in_table,
        "stored messages differ from committed messages"
    );

    let row = client
        .query_one(
            "SELECT count(*), min(seq), max(seq) FROM realtime.outbox",
            &[],
        )
        .await
        .unwrap();
    let (count, min, max): (i64, Option<i64>, Option<i64>) = (row.get(0), row.get(1), row.get(2));
    if let (Some(min), Some(max)) = (min, max) {
        assert_eq!(count, max - min + 1, "seqs have a hole");
    }
}
