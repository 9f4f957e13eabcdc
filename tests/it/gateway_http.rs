//! The HTTP API end to end: publishing and room history with service and
//! user tokens, and health, readiness and metrics.

use crate::common;

use std::time::Duration;

use common::ws::*;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publish_and_history() {
    let (_db, client, relay) = seeded_relay("trigger").await;
    let addr = relay.addr;
    let body = json!({"rooms": ["content_10", "broadcast"], "event": "announcement", "data": {"title": "hi"}});
    let (status, reply) = http(
        addr,
        "POST",
        "/v1/publish",
        Some(&token("1")),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    let (status, _) = http(addr, "POST", "/v1/publish", None, Some(body.clone())).await;
    assert_eq!(status, 401);
    let (status, reply) = http(
        addr,
        "POST",
        "/v1/publish",
        Some(&service_token()),
        Some(json!({"rooms": [], "event": "x"})),
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, reply) = http(
        addr,
        "POST",
        "/v1/publish",
        Some(&service_token()),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let seq = reply["seq"].as_i64().unwrap();
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM realtime.events WHERE seq = $1",
            &[&seq],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2);

    for i in 0..5 {
        client
            .execute(
                "UPDATE content SET title = $1 WHERE id = 10",
                &[&format!("h{i}")],
            )
            .await
            .unwrap();
    }
    barrier(&client).await;
    let (status, page) = http(
        addr,
        "GET",
        "/v1/rooms/content_10/events?limit=3",
        Some(&token("3")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["seq"], seq);
    assert_eq!(events[0]["room"], "content_10");
    assert_eq!(page["gap"], false);
    assert!(page["head"].as_i64().unwrap() >= seq + 5);
    let after = events[2]["seq"].as_i64().unwrap();
    let (_, next) = http(
        addr,
        "GET",
        &format!("/v1/rooms/content_10/events?after={after}"),
        Some(&token("3")),
        None,
    )
    .await;
    let titles: Vec<&str> = next["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["h2", "h3", "h4"]);
    let (status, page) = http(
        addr,
        "GET",
        &format!("/v1/rooms/content_10/events?after={}", i64::MAX),
        Some(&token("3")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["events"].clone(), page["gap"].clone()),
        (json!([]), json!(false))
    );
    let (status, body) = http(
        addr,
        "GET",
        "/v1/rooms/content_10/events?limit=many",
        Some(&token("3")),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, body) = http(
        addr,
        "GET",
        "/v1/rooms/content_12/events",
        Some(&token("3")),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = http(
        addr,
        "GET",
        "/v1/rooms/bad%20room/events",
        Some(&token("1")),
        None,
    )
    .await;
    assert_eq!(status, 400);
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let (_db, client, relay) = seeded_relay("trigger").await;
    let addr = relay.addr;
    assert_eq!(http(addr, "GET", "/healthz", None, None).await.0, 200);
    let (status, ready) = wait_for("ready", Duration::from_secs(10), || async {
        let (status, body) = http(addr, "GET", "/readyz", None, None).await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(ready["capture"], true);
    let mut ws = open(addr, &token("3")).await;
    ws.join("content_12").await;
    client
        .batch_execute("UPDATE content SET title = 'm' WHERE id = 10")
        .await
        .unwrap();
    barrier(&client).await;
    let (status, text) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap_or_default().to_string();
    for metric in [
        "rowcast_connections",
        "rowcast_rooms",
        "rowcast_joins_total",
        "rowcast_events_stored_total",
        "rowcast_delivery_latency_seconds_bucket",
    ] {
        assert!(text.contains(metric), "/metrics lacks {metric}");
    }
    assert!(text.contains("result=\"forbidden\""));
    stop_relay(relay).await;
}
