//! Who may connect and join, end to end: forged, expired and mis-signed
//! tokens refused before the upgrade, the SQL authorization rule applied to
//! every room kind, and tokens that expire on an open connection.

use crate::common;

use std::collections::BTreeSet;

use common::ws::*;
use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attacks_are_refused_before_the_upgrade() {
    let db = TestDb::demo().await;
    let mut config = config_for(&db.url, "trigger");
    config.gateway.cors = rowcast::config::CorsOrigins::List(vec!["https://app.example".into()]);
    let relay = start_relay_with(config).await;
    let addr = relay.addr;
    let url = |token: &str| format!("ws://{addr}/v1/ws?token={token}");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"sub":"1","exp":{}}}"#, now() + 60))
    );
    let cases = [
        ("missing", format!("ws://{addr}/v1/ws")),
        (
            "bad signature",
            url(&sign(
                &json!({"sub": "1", "exp": now() + 60}),
                jsonwebtoken::Algorithm::HS256,
                "not-the-secret-at-all",
            )),
        ),
        ("alg none", url(&none)),
        (
            "other algorithm",
            url(&sign(
                &json!({"sub": "1", "exp": now() + 60}),
                jsonwebtoken::Algorithm::HS512,
                SECRET,
            )),
        ),
        (
            "no exp",
            url(&sign(
                &json!({"sub": "1"}),
                jsonwebtoken::Algorithm::HS256,
                SECRET,
            )),
        ),
        (
            "expired",
            url(&sign(
                &json!({"sub": "1", "exp": now() - 10}),
                jsonwebtoken::Algorithm::HS256,
                SECRET,
            )),
        ),
        ("garbage", url("not.a.token")),
    ];
    for (what, url) in cases {
        let (status, body) = refused(url).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
        assert!(!body.to_string().contains(SECRET));
    }
    let mut request = url(&token("1")).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let (status, body) = refused(request).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");

    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://app.example".parse().unwrap());
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", token("1")).parse().unwrap(),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("allowed origin and header token");
    let ws = Ws::started(stream).await;
    assert_eq!(ws.welcome["user"], "1");
    assert_eq!(ws.welcome["heartbeat_ms"], 25000);
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_audience_and_issuer_are_required_and_nbf_is_honoured() {
    let db = TestDb::demo().await;
    let mut config = config_for(&db.url, "trigger");
    config.gateway.jwt.audience = Some("app".into());
    config.gateway.jwt.issuer = Some("https://auth.example".into());
    let relay = start_relay_with(config).await;
    let addr = relay.addr;
    let url = |claims: serde_json::Value| {
        let token = sign(&claims, jsonwebtoken::Algorithm::HS256, SECRET);
        format!("ws://{addr}/v1/ws?token={token}")
    };
    let exp = now() + 600;
    let (aud, iss) = ("app", "https://auth.example");
    for (what, claims, message) in [
        (
            "no aud",
            json!({"sub": "1", "exp": exp, "iss": iss}),
            "token has no aud claim",
        ),
        (
            "no iss",
            json!({"sub": "1", "exp": exp, "aud": aud}),
            "token has no iss claim",
        ),
        (
            "future nbf",
            json!({"sub": "1", "exp": exp, "aud": aud, "iss": iss, "nbf": now() + 300}),
            "token not valid yet",
        ),
    ] {
        let (status, body) = refused(url(claims)).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"]["message"], message, "{what}: {body}");
    }
    let good = json!({"sub": "1", "exp": exp, "aud": aud, "iss": iss, "nbf": now() - 5});
    let (stream, _) = tokio_tungstenite::connect_async(url(good))
        .await
        .expect("a token with aud, iss and a past nbf connects");
    assert_eq!(Ws::started(stream).await.welcome["user"], "1");
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_past_the_connection_cap_gets_429_while_others_connect() {
    let db = TestDb::demo().await;
    let mut config = config_for(&db.url, "trigger");
    config.gateway.limits.max_connections_per_user = 5;
    let relay = start_relay_with(config).await;
    let mut open_ones = Vec::new();
    for _ in 0..5 {
        open_ones.push(open(relay.addr, &token("1")).await);
    }
    let (status, body) = refused(format!("ws://{}/v1/ws?token={}", relay.addr, token("1"))).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let other = open(relay.addr, &token("2")).await;
    assert_eq!(other.welcome["user"], "2");
    // A closed connection gives its place back.
    drop(open_ones.pop());
    wait_for(
        "a freed place",
        std::time::Duration::from_secs(20),
        || async {
            let url = format!("ws://{}/v1/ws?token={}", relay.addr, token("1"));
            tokio_tungstenite::connect_async(url).await.ok().map(|_| ())
        },
    )
    .await;
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_matches_the_rule() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    client.batch_execute(MATRIX_ROWS).await.unwrap();
    let relay = start_relay(&db, "trigger").await;
    let all = ["1", "2", "3", "4", "service"];
    let matrix: &[(&str, &[&str])] = &[
        ("broadcast", &all),
        ("user_1", &["1", "service"]),
        ("user_2", &["2", "service"]),
        ("content_10", &all),
        ("content_11", &["1", "2", "service"]),
        ("content_12", &["1", "service"]),
        ("calendar_20", &["1", "4", "service"]),
        ("album_30", &all),
        ("album_31", &["1", "service"]),
        ("media_40", &all),
        ("media_41", &["1", "service"]),
        ("diary_50", &["1", "service"]),
        ("content_999", &["service"]),
        ("foo_1", &["service"]),
    ];
    let mut clients = Vec::new();
    for viewer in all {
        let token = if viewer == "service" {
            service_token()
        } else {
            token(viewer)
        };
        let mut ws = open(relay.addr, &token).await;
        let mut joined = BTreeSet::new();
        for (room, allowed) in matrix {
            let reply = ws.join(room).await;
            let expected = allowed.contains(&viewer);
            assert_eq!(
                reply["ok"],
                json!(expected),
                "{viewer} joining {room}: {reply}"
            );
            if !expected {
                assert_eq!(reply["error"]["code"], "forbidden");
            } else {
                joined.insert(room.to_string());
            }
        }
        let reply = ws.join("content_1; DROP TABLE users").await;
        assert_eq!(reply["error"]["code"], "bad_request");
        clients.push((viewer, ws, joined));
    }
    let users: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 4, "the database is untouched");

    // One change in every room; each client sees exactly the rooms it joined.
    client
        .batch_execute(
            "UPDATE content SET title = title || '!';
             UPDATE calendar_events SET title = 'ev!';
             UPDATE albums SET title = title || '!';
             UPDATE media SET caption = 'c';
             INSERT INTO diary_entries (diary_id, body) VALUES (50, 'x');
             UPDATE users SET bio = 'b' WHERE id IN (1, 2);",
        )
        .await
        .unwrap();
    barrier(&client).await;
    for (viewer, ws, joined) in &mut clients {
        let rooms: BTreeSet<String> = ws
            .drain()
            .await
            .iter()
            .filter(|f| f["type"] == "event")
            .map(|f| f["room"].as_str().unwrap().to_string())
            .collect();
        assert!(
            rooms.is_subset(joined),
            "{viewer} got frames of rooms it may not join: {rooms:?}"
        );
        for room in ["content_10", "album_30", "media_40"] {
            assert!(rooms.contains(room), "{viewer} missed {room}");
        }
    }
    stop_relay(relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_close_with_4001_unless_refreshed() {
    let (_db, _client, relay) = seeded_relay("trigger").await;
    let short = |sub: &str, secs: u64| {
        sign(
            &json!({"sub": sub, "exp": now() + secs}),
            jsonwebtoken::Algorithm::HS256,
            SECRET,
        )
    };
    let mut expiring = open(relay.addr, &short("1", 2)).await;
    let mut refreshed = open(relay.addr, &short("2", 2)).await;
    let reply = refreshed
        .request(json!({"type": "auth", "token": short("2", 3600)}))
        .await;
    assert_eq!(reply["ok"], true);
    let wrong = refreshed
        .request(json!({"type": "auth", "token": short("1", 3600)}))
        .await;
    assert_eq!(wrong["error"]["code"], "unauthorized");
    assert_eq!(expiring.closed().await, 4001);
    assert_eq!(
        refreshed.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    stop_relay(relay).await;
}
