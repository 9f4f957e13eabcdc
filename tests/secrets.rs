//! No secret reaches a log line: the relay runs with debug logs, a password
//! in `DATABASE_URL` and a JWT secret, serves connections, refuses bad
//! tokens and stops; neither secret appears in anything it printed.

mod common;

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
    seed_basic(&client).await;
    let url = with_password(&db.url, PASSWORD);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut relay = relay_binary(&["serve"], &[])
        .env("DATABASE_URL", &url)
        .env("JWT_SECRET", JWT)
        .env("REALTIME_DEBUG", "true")
        .env_remove("RUST_LOG")
        .env("ROWCAST_CAPTURE", "trigger")
        .env("SOCKET_PORT", port.to_string())
        .env("ROWCAST_BIND", "127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = relay
        .stderr
        .take()
        .map(|pipe| std::thread::spawn(move || read_all(pipe)));
    let stdout = relay
        .stdout
        .take()
        .map(|pipe| std::thread::spawn(move || read_all(pipe)));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("the relay to listen", Duration::from_secs(60), || async {
        let (status, _) = try_http(addr, "GET", "/readyz").await?;
        (status == 200).then_some(())
    })
    .await;
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
    unsafe {
        libc::kill(relay.id() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || relay.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit after SIGTERM");
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
