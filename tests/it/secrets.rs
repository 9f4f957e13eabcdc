//! No secret reaches a log line: the relay runs with debug logs, a password
//! in `DATABASE_URL` and a JWT secret, serves connections, refuses bad
//! tokens and stops; neither secret appears in anything it printed.

use crate::common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::ws::*;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_never_print_a_secret() {
    const PASSWORD: &str = "pw-d0-not-print-me";
    const JWT: &str = "jwt-d0-not-print-me-0123456789";
    let db = TestDb::demo().await;
    let client = db.client().await;
    insert_basic_rows(&client).await;
    let url = with_password(&db.url, PASSWORD);
    let port = rowcast_devkit::process::free_port();
    let mut command = relay_binary(&["serve"], &[]);
    command
        .env("DATABASE_URL", &url)
        .env("JWT_SECRET", JWT)
        .env("REALTIME_DEBUG", "true")
        .env_remove("RUST_LOG")
        .env("ROWCAST_CAPTURE", "trigger")
        .env("SOCKET_PORT", port.to_string())
        .env("ROWCAST_BIND", "127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut relay = RelayProcess::spawn(command).unwrap();
    let stderr = relay
        .child()
        .stderr
        .take()
        .map(|pipe| std::thread::spawn(move || read_all(pipe)));
    let stdout = relay
        .child()
        .stdout
        .take()
        .map(|pipe| std::thread::spawn(move || read_all(pipe)));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        relay.ready(addr, Duration::from_secs(60)).await,
        "the relay did not become ready"
    );
    let token = sign(
        &json!({"sub": "1", "exp": now() + 60}),
        jsonwebtoken::Algorithm::HS256,
        JWT,
    );
    let mut ws = open(addr, &token).await;
    ws.join("user_1").await;
    client
        .batch_execute("UPDATE users SET bio = 'x' WHERE id = 1")
        .await
        .unwrap();
    let forged = sign(
        &json!({"sub": "1", "exp": now() + 60}),
        jsonwebtoken::Algorithm::HS256,
        "wrong-secret-0123456789",
    );
    let _ = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws?token={forged}")).await;
    let _ = ws.request(json!({"type": "auth", "token": forged})).await;
    let status = relay.stop(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit after SIGTERM: {status:?}"
    );
    drop(ws);
    let logs: String = [stderr, stdout]
        .into_iter()
        .flatten()
        .map(|reader| reader.join().unwrap())
        .collect();
    assert!(logs.contains("DEBUG"), "debug logs were on: {logs}");
    assert!(logs.contains("127.0.0.1"), "the database is described");
    for secret in [PASSWORD, JWT] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

fn with_password(url: &str, password: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{password}@"),
        1,
    )
}

fn read_all(mut pipe: impl Read) -> String {
    let mut text = String::new();
    let _ = pipe.read_to_string(&mut text);
    text
}
