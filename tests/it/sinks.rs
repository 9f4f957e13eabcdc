//! Deliveries beyond the open socket, against real receivers on loopback:
//! Standard Webhooks signed POSTs checked by the `standardwebhooks`
//! library, through receiver outages, a relay kill -9, a receiver that
//! never recovers, and two relay nodes; Web Push to a push service
//! stand-in that checks the VAPID token and decrypts with `http_ece`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use rowcast::config::{PushConfig, RoutesSource, Secret};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::common::peers::{PushService, WebhookReceiver};
use crate::common::ws::*;
use crate::common::*;

/// How long a test waits for deliveries.
const DELIVERED: Duration = Duration::from_secs(60);

/// The built-in routes plus one webhook for `message-received` events.
fn routes_with_webhook(db: &TestDb, receiver: &WebhookReceiver, extra: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("rowcast-{}-routes.toml", db.name));
    let text = format!(
        "{}\n[[webhook]]\nname = \"backend\"\nurl = \"{}\"\nevents = [\"message-received\"]\n\
         secret_env = \"ROWCAST_WEBHOOK_SECRET\"\nallow_insecure = true\nbackoff = \"100ms\"\n\
         max_backoff = \"1s\"\n{extra}",
        include_str!("../../routes.toml"),
        receiver.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An in-process relay (trigger capture) with that routes file and the
/// receiver's secret.
async fn relay_with_webhook(
    db: &TestDb,
    receiver: &WebhookReceiver,
    extra: &str,
) -> rowcast::Relay {
    relay_with_webhook_capturing(db, receiver, extra, "trigger").await
}

/// [`relay_with_webhook`] with a capture mode.
async fn relay_with_webhook_capturing(
    db: &TestDb,
    receiver: &WebhookReceiver,
    extra: &str,
    capture: &str,
) -> rowcast::Relay {
    let mut config = config_for(&db.url, capture);
    config.routes = RoutesSource::File(routes_with_webhook(db, receiver, extra));
    config.sink_secrets.insert(
        "ROWCAST_WEBHOOK_SECRET".into(),
        Secret::new(&receiver.secret),
    );
    start_relay_with(config).await
}

/// A test database with users 1 to 4 and their rows.
async fn seeded() -> (TestDb, Client) {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    (db, client)
}

/// Inserts `n` messages from user 1 to user 2.
async fn send_messages(client: &Client, n: usize, tag: &str) {
    for i in 0..n {
        client
            .execute(
                "INSERT INTO messages (sender_id, recipient_id, body) VALUES (1, 2, $1)",
                &[&format!("{tag} {i}")],
            )
            .await
            .unwrap();
    }
}

/// The seqs of the stored `message-received` events, once there are `n`
/// (capture stores them a moment after their commit).
async fn message_seqs(client: &Client, n: usize) -> Vec<i64> {
    wait_for("the messages' events", DELIVERED, || async {
        let seqs = bigints(
            client,
            "SELECT seq FROM realtime.outbox WHERE event = 'message-received' ORDER BY seq",
        )
        .await;
        (seqs.len() >= n).then_some(seqs)
    })
    .await
}

/// Waits until the receiver has accepted every seq of `expected`; returns
/// what it accepted, in arrival order.
async fn wait_received(receiver: &WebhookReceiver, expected: &[i64]) -> Vec<Value> {
    let want: BTreeSet<i64> = expected.iter().copied().collect();
    wait_for("the webhook deliveries", DELIVERED, || async {
        let received = receiver.received().await;
        let got: BTreeSet<i64> = received
            .iter()
            .filter_map(|r| r["body"]["seq"].as_i64())
            .collect();
        want.is_subset(&got).then_some(received)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_down_for_its_first_seconds_gets_every_event_in_order() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_mode(json!({ "downForMs": 5000 })).await;
    let (db, client) = seeded().await;
    let relay = relay_with_webhook(&db, &receiver, "").await;
    send_messages(&client, 40, "early").await;
    client
        .execute(
            "UPDATE content SET title = 'not for the hook' WHERE id = 10",
            &[],
        )
        .await
        .unwrap();
    send_messages(&client, 10, "late").await;
    let seqs = message_seqs(&client, 50).await;
    assert_eq!(seqs.len(), 50);
    let received = wait_received(&receiver, &seqs).await;

    // In seq order, each once, nothing else, every signature verified.
    let order: Vec<i64> = received
        .iter()
        .map(|r| r["body"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(order, seqs, "every event once, in seq order");
    assert!(
        receiver.failures().await.is_empty(),
        "every signature verifies"
    );
    let first = &received[0];
    assert_eq!(first["id"], format!("evt_{}", seqs[0]));
    assert_eq!(first["body"]["type"], "event");
    assert_eq!(first["body"]["event"], "message-received");
    assert_eq!(first["body"]["room"], "user_2");
    assert_eq!(first["body"]["rooms"], json!(["user_2"]));
    assert_eq!(first["body"]["data"]["body"], "early 0");
    assert!(first["body"]["at"].is_string());
    // The outage was real: attempts were refused before any was accepted.
    let refused = receiver
        .attempts()
        .await
        .iter()
        .filter(|a| a["status"] == 503)
        .count();
    assert!(refused > 0, "the receiver refused attempts while down");
    assert!(rowcast_devkit::http::metric(relay.addr, "rowcast_sink_sent_total").await >= 50.0);
    assert!(rowcast_devkit::http::metric(relay.addr, "rowcast_sink_retried_total").await >= 1.0);
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_logical_capture_a_webhook_gets_a_transactions_events_and_resumes_after_a_restart() {
    let receiver = WebhookReceiver::start().await;
    let (db, client) = seeded().await;
    let relay = relay_with_webhook_capturing(&db, &receiver, "", "logical").await;
    // Ten rows in one transaction, then ten on their own.
    client
        .execute(
            "INSERT INTO messages (sender_id, recipient_id, body)
             SELECT 1, 2, 'together ' || g FROM generate_series(1, 10) g",
            &[],
        )
        .await
        .unwrap();
    send_messages(&client, 10, "alone").await;
    let before = message_seqs(&client, 20).await;
    wait_received(&receiver, &before).await;
    stop_relay(relay).await;

    send_messages(&client, 10, "while down").await;
    let relay = relay_with_webhook_capturing(&db, &receiver, "", "logical").await;
    send_messages(&client, 5, "after").await;
    let seqs = message_seqs(&client, 35).await;
    let received = wait_received(&receiver, &seqs).await;
    // Every event, first arrivals in seq order, repeats (a request the stop
    // cut short) only under their own id.
    let mut first: Vec<i64> = Vec::new();
    for delivery in &received {
        let seq = delivery["body"]["seq"].as_i64().unwrap();
        assert_eq!(delivery["id"], format!("evt_{seq}"));
        if !first.contains(&seq) {
            first.push(seq);
        }
    }
    assert_eq!(first, seqs, "every event, in seq order");
    let bodies: BTreeSet<String> = received
        .iter()
        .map(|d| d["body"]["data"]["body"].as_str().unwrap().to_string())
        .collect();
    assert!(bodies.contains("together 1") && bodies.contains("while down 9"));
    assert!(receiver.failures().await.is_empty());
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_always_fails_gets_its_event_dead_lettered_and_the_next_one_goes_out() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_mode(json!({ "status": 500 })).await;
    let (db, client) = seeded().await;
    let relay = relay_with_webhook(&db, &receiver, "attempts = 3\n").await;
    send_messages(&client, 1, "doomed").await;
    let doomed = message_seqs(&client, 1).await[0];
    let failure = wait_for("the dead letter", DELIVERED, || async {
        let rows = client
            .query(
                "SELECT seq, webhook, webhook_id, attempts, last_status, last_error, body::text
                 FROM realtime.webhook_failures",
                &[],
            )
            .await
            .ok()?;
        rows.into_iter().next()
    })
    .await;
    assert_eq!(failure.get::<_, i64>(0), doomed);
    assert_eq!(failure.get::<_, &str>(1), "backend");
    assert_eq!(failure.get::<_, &str>(2), format!("evt_{doomed}"));
    assert_eq!(failure.get::<_, i32>(3), 3);
    assert_eq!(failure.get::<_, Option<i32>>(4), Some(500));
    let body: Value = serde_json::from_str(failure.get(6)).unwrap();
    assert_eq!(body["seq"], doomed);
    let tries = receiver
        .attempts()
        .await
        .iter()
        .filter(|a| a["id"] == format!("evt_{doomed}"))
        .count();
    assert_eq!(tries, 3, "exactly the bounded attempts");

    receiver.set_mode(json!({ "status": null })).await;
    send_messages(&client, 1, "fine").await;
    let seqs = message_seqs(&client, 2).await;
    let received = wait_received(&receiver, &seqs[1..]).await;
    assert!(received.iter().all(|r| r["body"]["seq"] != doomed));
    assert!(
        rowcast_devkit::http::metric(relay.addr, "rowcast_sink_dead_lettered_total").await >= 1.0
    );
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_redelivers_under_the_same_webhook_id_and_misses_nothing() {
    let receiver = WebhookReceiver::start().await;
    let (db, client) = seeded().await;
    let routes = routes_with_webhook(&db, &receiver, "")
        .display()
        .to_string();
    let env = [
        ("ROWCAST_ROUTES", routes.as_str()),
        ("ROWCAST_WEBHOOK_SECRET", receiver.secret.as_str()),
    ];
    let (mut relay, _) = spawn_listening_relay(&db, "trigger", &env).await;
    let writer = tokio::spawn({
        let url = db.url.clone();
        async move {
            let client = connect(&url).await;
            send_messages(&client, 300, "stream").await;
        }
    });
    wait_for("the first deliveries", DELIVERED, || async {
        (receiver.received().await.len() >= 30).then_some(())
    })
    .await;
    relay.kill();
    let (_relay, _) = spawn_listening_relay(&db, "trigger", &env).await;
    writer.await.unwrap();
    let seqs = message_seqs(&client, 300).await;
    assert_eq!(seqs.len(), 300);
    let received = wait_received(&receiver, &seqs).await;

    // At least once; a repeat carries the id and the body of the first.
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in &received {
        by_id
            .entry(r["id"].as_str().unwrap().to_string())
            .or_default()
            .push(&r["body"]);
    }
    let ids: BTreeSet<String> = seqs.iter().map(|s| format!("evt_{s}")).collect();
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), ids);
    for (id, bodies) in &by_id {
        assert!(
            bodies.iter().all(|b| *b == bodies[0]),
            "{id}: repeats are the same event"
        );
        assert_eq!(format!("evt_{}", bodies[0]["seq"]), *id);
    }
    assert!(
        receiver.failures().await.is_empty(),
        "every signature verifies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_relay_nodes_one_drives_the_webhook_and_each_event_arrives_once() {
    let receiver = WebhookReceiver::start().await;
    let (db, client) = seeded().await;
    // The first node takes the sinks' lock before the second starts.
    let first = relay_with_webhook(&db, &receiver, "").await;
    wait_for("the first node to drive the sinks", DELIVERED, || async {
        let held = scalar(
            &client,
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND a.application_name = 'rowcast sinks' AND a.datname = current_database()",
        )
        .await?;
        (held == 1).then_some(())
    })
    .await;
    let second = relay_with_webhook(&db, &receiver, "").await;
    send_messages(&client, 60, "two nodes").await;
    let seqs = message_seqs(&client, 60).await;
    let received = wait_received(&receiver, &seqs).await;
    let order: Vec<i64> = received
        .iter()
        .map(|r| r["body"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(order, seqs, "one driver: each event once, in order");

    // The driving node stops; the other resumes from the cursor.
    stop_relay(first).await;
    send_messages(&client, 20, "after").await;
    let seqs = message_seqs(&client, 80).await;
    let received = wait_received(&receiver, &seqs).await;
    let order: Vec<i64> = received
        .iter()
        .map(|r| r["body"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(order, seqs, "the other node resumes after the cursor");
    stop_relay(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_without_its_secret_stops_startup_without_printing_secrets() {
    let receiver = WebhookReceiver::start().await;
    let db = TestDb::demo().await;
    let mut config = config_for(&db.url, "trigger");
    config.routes = RoutesSource::File(routes_with_webhook(&db, &receiver, ""));
    let missing =
        match rowcast::Relay::start(config.clone(), rowcast::shutdown::Shutdown::new()).await {
            Ok(_) => panic!("a webhook without its secret must not start"),
            Err(e) => e.to_string(),
        };
    assert!(missing.contains("ROWCAST_WEBHOOK_SECRET"), "{missing}");
    config.sink_secrets.insert(
        "ROWCAST_WEBHOOK_SECRET".into(),
        Secret::new("whsec_not base64 ~~ hunter2"),
    );
    let bad = match rowcast::Relay::start(config, rowcast::shutdown::Shutdown::new()).await {
        Ok(_) => panic!("a malformed secret must not start"),
        Err(e) => e.to_string(),
    };
    assert!(
        bad.contains("ROWCAST_WEBHOOK_SECRET") && !bad.contains("hunter2"),
        "{bad}"
    );
}

/// A VAPID private key (RFC 8291's example application server key).
const VAPID_KEY: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
/// Its public key.
const VAPID_PUBLIC: &str =
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";

/// An in-process relay with Web Push to `service` (its origin listed).
async fn relay_with_push(db: &TestDb, service: &PushService) -> rowcast::Relay {
    let mut config = config_for(&db.url, "trigger");
    config.push = Some(PushConfig {
        vapid_private_key: Secret::new(VAPID_KEY),
        subject: "mailto:ops@example.com".into(),
        origins: vec![service.origin()],
        ttl: Duration::from_secs(60),
        per_user: 3,
    });
    start_relay_with(config).await
}

/// Registers `subscription` for `user`; the status.
async fn subscribe(relay: &rowcast::Relay, user: &str, subscription: &Value) -> (u16, Value) {
    http(
        relay.addr,
        "POST",
        "/v1/push/subscriptions",
        Some(&token(user)),
        Some(subscription.clone()),
    )
    .await
}

/// Inserts a message to `recipient`; its seq.
async fn message_to(client: &Client, recipient: i64, body: &str) -> i64 {
    client
        .execute(
            "INSERT INTO messages (sender_id, recipient_id, body) VALUES (1, $1, $2)",
            &[&recipient, &body],
        )
        .await
        .unwrap();
    wait_for("the message's event", DELIVERED, || async {
        let row = client
            .query_opt(
                "SELECT seq FROM realtime.outbox
                 WHERE event = 'message-received' AND data->>'body' = $1",
                &[&body],
            )
            .await
            .ok()??;
        Some(row.get(0))
    })
    .await
}

/// Waits until the push cursor passed `seq`: every delivery of it ended.
async fn push_done_with(client: &Client, seq: i64) {
    wait_for("the push cursor", DELIVERED, || async {
        let at = scalar(
            client,
            "SELECT seq FROM realtime.sink_cursors WHERE sink = 'push'",
        )
        .await?;
        (at >= seq).then_some(())
    })
    .await;
}

/// The attempts on `endpoint`, once at least `n` were made.
async fn attempts(service: &PushService, endpoint: &str, n: usize) -> Vec<Value> {
    wait_for("push attempts", DELIVERED, || async {
        let attempts = service.attempts(endpoint).await;
        (attempts.len() >= n).then_some(attempts)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_users_message_is_pushed_encrypted_and_a_connected_user_gets_none() {
    let service = PushService::start().await;
    let (db, client) = seeded().await;
    let relay = relay_with_push(&db, &service).await;
    let (status, key) = http(relay.addr, "GET", "/v1/push/vapid", None, None).await;
    assert_eq!(
        (status, key["publicKey"].as_str()),
        (200, Some(VAPID_PUBLIC))
    );
    let subscription = service.subscription().await;
    let endpoint = subscription["endpoint"].as_str().unwrap().to_string();
    assert_eq!(subscribe(&relay, "2", &subscription).await.0, 201);
    assert_eq!(
        subscribe(&relay, "2", &subscription).await.0,
        201,
        "again: no change"
    );
    let stored = scalar(&client, "SELECT count(*) FROM realtime.push_subscriptions").await;
    assert_eq!(stored, Some(1));

    // Offline: pushed, decrypted by the stand-in, the frame with its seq.
    let seq = message_to(&client, 2, "are you there?").await;
    let pushed = attempts(&service, &endpoint, 1).await;
    assert_eq!(pushed[0]["status"], 201);
    let frame: Value = serde_json::from_str(pushed[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(frame["type"], "event");
    assert_eq!(frame["event"], "message-received");
    assert_eq!(frame["room"], "user_2");
    assert_eq!(frame["seq"], seq);
    assert_eq!(frame["data"]["body"], "are you there?");
    assert_eq!(pushed[0]["ttl"], 60);
    assert!(
        service.failures().await.is_empty(),
        "VAPID verified, body decrypted"
    );

    // Connected: nothing is pushed.
    let mut ws = open(relay.addr, &token("2")).await;
    assert_eq!(ws.join("user_2").await["ok"], true);
    wait_for("user 2 online", DELIVERED, || async {
        let n = scalar(
            &client,
            "SELECT count(*) FROM realtime.online WHERE sub = '2'",
        )
        .await?;
        (n == 1).then_some(())
    })
    .await;
    let live = message_to(&client, 2, "here now").await;
    push_done_with(&client, live).await;
    assert_eq!(
        service.attempts(&endpoint).await.len(),
        1,
        "no push while connected"
    );
    let frame = loop {
        let frame = ws.frame().await;
        if frame["event"] == "message-received" {
            break frame;
        }
    };
    assert_eq!(frame["seq"], live, "the socket got it instead");
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_that_fails_twice_then_accepts_delivers_once_and_a_gone_one_is_removed() {
    let service = PushService::start().await;
    let (db, client) = seeded().await;
    let relay = relay_with_push(&db, &service).await;
    let flaky = service.subscription().await;
    let flaky_endpoint = flaky["endpoint"].as_str().unwrap().to_string();
    let gone = service.subscription().await;
    let gone_endpoint = gone["endpoint"].as_str().unwrap().to_string();
    assert_eq!(subscribe(&relay, "3", &flaky).await.0, 201);
    assert_eq!(subscribe(&relay, "4", &gone).await.0, 201);
    service
        .script(
            &flaky_endpoint,
            json!([{ "status": 503, "retryAfter": "1" }, 503]),
        )
        .await;
    service.script(&gone_endpoint, json!([410])).await;

    let to_flaky = message_to(&client, 3, "third time").await;
    let to_gone = message_to(&client, 4, "nobody home").await;
    push_done_with(&client, to_gone.max(to_flaky)).await;
    let tries = service.attempts(&flaky_endpoint).await;
    let statuses: Vec<&Value> = tries.iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, [&json!(503), &json!(503), &json!(201)]);
    for attempt in &tries {
        let frame: Value = serde_json::from_str(attempt["payload"].as_str().unwrap()).unwrap();
        assert_eq!(
            frame["seq"], to_flaky,
            "every attempt carries the same event"
        );
    }
    assert_eq!(service.attempts(&gone_endpoint).await.len(), 1);
    let left = bigints(
        &client,
        "SELECT count(*) FROM realtime.push_subscriptions WHERE sub = '4'",
    )
    .await;
    assert_eq!(left, [0], "a 410 removes the subscription");
    // The gauge is counted at once after a removal: user 3's subscription
    // is left. (Tests beside this one share the process's metrics, so it is
    // at least that.)
    wait_for("the subscriptions gauge", DELIVERED, || async {
        let stored = rowcast_devkit::http::metric(relay.addr, "rowcast_push_subscriptions").await;
        (stored >= 1.0).then_some(())
    })
    .await;

    // The removed subscription is not tried again.
    let again = message_to(&client, 4, "still nobody").await;
    push_done_with(&client, again).await;
    assert_eq!(service.attempts(&gone_endpoint).await.len(), 1);
    assert!(service.failures().await.is_empty());
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_foreign_endpoints_bad_keys_and_strangers() {
    let service = PushService::start().await;
    let (db, client) = seeded().await;
    let relay = relay_with_push(&db, &service).await;
    let good = service.subscription().await;
    let with_endpoint = |endpoint: &str| {
        let mut s = good.clone();
        s["endpoint"] = json!(endpoint);
        s
    };
    for (subscription, why) in [
        (
            with_endpoint("https://push.evil.example/x"),
            "ROWCAST_PUSH_ORIGINS",
        ),
        (
            with_endpoint("http://127.0.0.1:9/push/x"),
            "ROWCAST_PUSH_ORIGINS",
        ),
        (with_endpoint("not a url"), "URL"),
    ] {
        let (status, body) = subscribe(&relay, "2", &subscription).await;
        assert_eq!(status, 400, "{subscription}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
    }
    let mut bad_keys = good.clone();
    bad_keys["keys"]["p256dh"] = json!("AAAA");
    let (status, body) = subscribe(&relay, "2", &bad_keys).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("p256dh"));
    let (status, _) = subscribe(&relay, "2", &json!({ "endpoint": 1 })).await;
    assert_eq!(status, 400);
    let path = "/v1/push/subscriptions";
    let (status, _) = http(relay.addr, "POST", path, None, Some(good.clone())).await;
    assert_eq!(status, 401);
    let backend = service_token();
    let (status, _) = http(relay.addr, "POST", path, Some(&backend), Some(good.clone())).await;
    assert_eq!(status, 403);

    // A user may register three; a fourth is refused until one goes.
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let subscription = service.subscription().await;
        assert_eq!(subscribe(&relay, "5", &subscription).await.0, 201);
        endpoints.push(subscription["endpoint"].clone());
    }
    let (status, body) = subscribe(&relay, "5", &good).await;
    assert_eq!(status, 429, "{body}");
    let (status, _) = http(
        relay.addr,
        "DELETE",
        path,
        Some(&token("5")),
        Some(json!({ "endpoint": endpoints[0] })),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(subscribe(&relay, "5", &good).await.0, 201);
    let count = scalar(
        &client,
        "SELECT count(*) FROM realtime.push_subscriptions WHERE sub = '5'",
    );
    assert_eq!(count.await, Some(3));
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_a_vapid_key_has_no_push_endpoints() {
    let db = TestDb::demo().await;
    let relay = start_relay(&db, "trigger").await;
    let (status, body) = http(relay.addr, "GET", "/v1/push/vapid", None, None).await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ROWCAST_VAPID_PRIVATE_KEY"));
    stop_relay(relay).await;
}
