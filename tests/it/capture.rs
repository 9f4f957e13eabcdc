//! Capture → routes → outbox against a real Postgres, in both capture modes:
//! every stored event of the catalog from a plain SQL write, secrets never
//! stored, rollbacks storing nothing, coalescing, and exactly-once under 8
//! concurrent writers.

use crate::common;

use std::time::Duration;

use common::catalog::CASES;
use common::*;
use serde_json::json;

in_versions! {
    every_catalog_event_reaches_exactly_its_rooms => catalog,
    rolled_back_transactions_store_nothing => rollback,
    publish_stores_only_on_commit => publish,
    bursts_of_views_coalesce_into_one_event => coalesce,
    concurrent_writers_are_stored_exactly_once_in_commit_order => concurrent_writers,
}

mod versions {
    use super::*;
    on_versions! {
        each_version_of_the_matrix_runs_the_server_it_names => server_version,
    }
}

async fn server_version(pg: Pg) {
    let db = pg.demo_db().await;
    let number: i32 = db
        .client()
        .await
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    match pg.major() {
        Some(major) => assert_eq!(number / 10_000, major as i32, "server {number}"),
        None => assert!(number >= 140_000, "server {number}"),
    }
}

/// The cases are the catalog's spec; the event names come from
/// `routes.toml`, so a route added there without a case fails here.
#[test]
fn the_cases_produce_every_event_of_the_routes_file() {
    // Coalesced views are checked by `bursts_of_views_coalesce_into_one_event`;
    // `realtime.publish` names an event no route makes.
    let elsewhere = ["content-viewed"];
    let produced: std::collections::BTreeSet<String> = CASES
        .iter()
        .filter(|case| !case.sql.starts_with("SELECT realtime.publish"))
        .flat_map(|case| case.expect.iter().map(|(event, _)| event.to_string()))
        .chain(elsewhere.iter().map(|event| event.to_string()))
        .collect();
    let routed = common::catalog::routed_events();
    let missing: Vec<&String> = routed.difference(&produced).collect();
    let unknown: Vec<&String> = produced.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routed events no case produces: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "cases expect events no route makes: {unknown:?}"
    );
}

fn normalized(events: &[(String, Vec<String>)]) -> Vec<(String, Vec<String>)> {
    let mut events = events.to_vec();
    events.sort();
    events
}

async fn catalog(pg: Pg, mode: &str) {
    let (_db, client, relay) = basic_relay_on(pg, mode).await;
    let mut last = barrier(&client).await;
    for case in CASES {
        client
            .batch_execute(case.sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.sql));
        let now = barrier(&client).await;
        let got: Vec<(String, Vec<String>)> = stored_between(&client, last, now)
            .await
            .into_iter()
            .map(|e| (e.event, e.rooms))
            .collect();
        let expected: Vec<(String, Vec<String>)> = case
            .expect
            .iter()
            .map(|(e, rooms)| (e.to_string(), rooms.iter().map(|r| r.to_string()).collect()))
            .collect();
        assert_eq!(
            normalized(&got),
            normalized(&expected),
            "after `{}`",
            case.sql
        );
        last = now;
    }

    let all = stored_between(&client, 0, last).await;
    let update = all.iter().find(|e| e.event == "content-updated").unwrap();
    assert_eq!(update.old, Some(json!({"title": "t"})));
    assert_eq!(update.data["title"], "t2");
    let profile = all
        .iter()
        .find(|e| e.event == "user-profile-updated")
        .unwrap();
    assert_eq!(
        profile.old,
        Some(json!({"display_name": null, "bio": null}))
    );
    let deleted = all.iter().find(|e| e.event == "content-deleted").unwrap();
    assert_eq!(deleted.data["id"], 10);
    let custom = all.iter().find(|e| e.event == "custom-thing").unwrap();
    assert_eq!(custom.data, json!({"k": 1}));

    let leaked: i64 = client
        .query_one(
            "SELECT count(*) FROM realtime.outbox
             WHERE data::text ~ '(email|password_hash|card_token|secret|hash-)'
                OR coalesce(old::text, '') ~ '(email|password_hash|card_token|secret|hash-)'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "a secret column reached a stored event");
    stop_relay(relay).await;
}

async fn rollback(pg: Pg, mode: &str) {
    let (_db, client, relay) = basic_relay_on(pg, mode).await;
    let before = barrier(&client).await;
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO content (id, author_id, title) VALUES (1, 1, 'never');
             UPDATE users SET display_name = 'never' WHERE id = 1;
             DELETE FROM friendships;
             ROLLBACK;",
        )
        .await
        .unwrap();
    let after = barrier(&client).await;
    assert!(stored_between(&client, before, after).await.is_empty());
    assert_eq!(
        after,
        before + 1,
        "no seq was used by the rolled-back transaction"
    );
    stop_relay(relay).await;
}

async fn publish(pg: Pg, mode: &str) {
    let db = pg.demo_db().await;
    let client = db.client().await;
    let relay = start_relay(&db, mode).await;
    let before = barrier(&client).await;
    client
        .batch_execute(
            "BEGIN;
             SELECT realtime.publish(ARRAY['broadcast'], 'announcement', '{\"title\": \"rolled back\"}');
             ROLLBACK;
             BEGIN;
             SELECT realtime.publish(ARRAY['broadcast'], 'announcement', '{\"title\": \"kept\"}');
             COMMIT;",
        )
        .await
        .unwrap();
    let after = barrier(&client).await;
    let events = stored_between(&client, before, after).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].data, json!({"title": "kept"}));
    assert_eq!(events[0].rooms, vec!["broadcast"]);

    let bad = client
        .execute("SELECT realtime.publish(ARRAY['a b'], 'x', '{}')", &[])
        .await
        .unwrap_err();
    let message = bad
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("invalid room name"), "{bad:?}");
    stop_relay(relay).await;
}

async fn coalesce(pg: Pg, mode: &str) {
    let db = pg.demo_db().await;
    let client = db.client().await;
    insert_basic_rows(&client).await;
    client
        .batch_execute("INSERT INTO content (id, author_id, title) VALUES (5, 1, 'x'), (6, 1, 'y')")
        .await
        .unwrap();
    let relay = start_relay(&db, mode).await;
    let before = barrier(&client).await;
    for _ in 0..25 {
        client
            .batch_execute("INSERT INTO content_views (content_id, user_id) VALUES (5, 2)")
            .await
            .unwrap();
    }
    client
        .batch_execute("INSERT INTO content_views (content_id, user_id) VALUES (6, 3)")
        .await
        .unwrap();
    let views = wait_for("coalesced view events", Duration::from_secs(15), || async {
        let events: Vec<Stored> = stored_between(&client, before, i64::MAX)
            .await
            .into_iter()
            .filter(|e| e.event == "content-viewed")
            .collect();
        let total: i32 = events.iter().map(|e| e.count.unwrap_or(0)).sum();
        (total == 26).then_some(events)
    })
    .await;
    assert!(
        views.len() <= 4,
        "a burst of 25 views should coalesce: {views:?}"
    );
    let for_5: Vec<&Stored> = views.iter().filter(|e| e.rooms == ["content_5"]).collect();
    let for_6: Vec<&Stored> = views.iter().filter(|e| e.rooms == ["content_6"]).collect();
    assert_eq!(for_6.len(), 1);
    assert_eq!(for_6[0].count, Some(1));
    assert_eq!(for_5.iter().map(|e| e.count.unwrap()).sum::<i32>(), 25);
    let last_view: i64 = client
        .query_one(
            "SELECT max(id) FROM content_views WHERE content_id = 5",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        for_5.last().unwrap().data["id"],
        last_view,
        "the latest row is carried"
    );
    let pending: i64 = client
        .query_one("SELECT count(*) FROM realtime.pending", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0);
    stop_relay(relay).await;
}

async fn concurrent_writers(pg: Pg, mode: &str) {
    let db = pg.demo_db().await;
    let client = db.client().await;
    burst::setup(&client).await;
    let relay = start_relay(&db, mode).await;
    let writers = burst::start(&db.url, 8, 500);
    burst::join(writers).await;
    let until = barrier(&client).await;
    burst::verify(&client, until).await;
    stop_relay(relay).await;
}

/// Trigger capture with a poll interval far longer than the test: only
/// wake-ups can deliver. Bursts of concurrent writers hit the relay while it
/// goes to sleep, sleeps and wakes, and every change still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_wake_a_sleeping_relay_without_losing_a_change() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    insert_basic_rows(&client).await;
    let mut config = config_for(&db.url, "trigger");
    config.capture.poll_interval = Duration::from_secs(600);
    let relay = start_relay_with(config).await;
    let mut expected = 0i64;
    for round in 0..30 {
        if round % 3 == 0 {
            wait_for("the relay to sleep", Duration::from_secs(10), || async {
                let sleeping: bool = client
                    .query_one("SELECT sleeping FROM realtime.wakeup", &[])
                    .await
                    .ok()?
                    .get(0);
                sleeping.then_some(())
            })
            .await;
        }
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url.clone();
                tokio::spawn(async move {
                    connect(&url)
                        .await
                        .batch_execute("INSERT INTO messages (sender_id, recipient_id, body) VALUES (1, 2, 'w')")
                        .await
                        .unwrap();
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        expected += 4;
        wait_for(
            "every change of the round",
            Duration::from_secs(20),
            || async {
                let stored = scalar(
                    &client,
                    "SELECT count(*) FROM realtime.outbox WHERE event = 'message-sent'",
                )
                .await?;
                (stored == expected).then_some(())
            },
        )
        .await;
    }
    stop_relay(relay).await;
}
