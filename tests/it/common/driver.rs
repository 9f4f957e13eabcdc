//! Unchanged third-party clients, driven by `tests/node/driver.mjs` over
//! its stdin and stdout (one JSON object per line): `socket.io-client` as
//! an app uses it, and a browser's own `EventSource` in Chromium. The test
//! sends commands and waits, with a deadline, for what the client reported.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::node;

/// How long a client gets for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One client process and everything it reported so far.
pub struct Driver {
    /// The node process (killed when dropped).
    _child: Child,
    /// Its commands.
    stdin: ChildStdin,
    /// Its reports, as they arrive.
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every report so far, in order.
    pub reports: Vec<Value>,
    /// The next emit's id.
    next_id: u64,
}

impl Driver {
    /// Starts a client process (installing `tests/node` when needed).
    pub async fn start() -> Self {
        let mut child = node::spawn_test_client("driver.mjs", &[]);
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(report) => {
                        if tx.send(report).is_err() {
                            return;
                        }
                    }
                    Err(_) => println!("client: {line}"),
                }
            }
        });
        Self {
            _child: child,
            stdin,
            lines,
            reports: Vec::new(),
            next_id: 1,
        }
    }

    /// A Socket.IO client connecting to `addr` with `token` over
    /// `transports` (`websocket`, `polling`).
    pub async fn socket_io(addr: std::net::SocketAddr, token: &str, transports: &[&str]) -> Self {
        let mut driver = Self::start().await;
        driver
            .send(json!({"op": "sio", "url": format!("http://{addr}"), "token": token, "transports": transports}))
            .await;
        driver
    }

    /// Sends a command.
    pub async fn send(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the client");
    }

    /// Waits until `check` finds what it looks for in the reports so far.
    pub async fn wait<T>(&mut self, what: &str, mut check: impl FnMut(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(found) = check(&self.reports) {
                return found;
            }
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(report)) => {
                    if report["type"] == "failed" {
                        panic!("the client failed: {}", report["message"]);
                    }
                    self.reports.push(report);
                }
                Ok(None) => panic!(
                    "the client exited while waiting for {what}; it reported {:#?}",
                    self.reports
                ),
                Err(_) => panic!(
                    "timed out waiting for {what}; the client reported {:#?}",
                    self.reports
                ),
            }
        }
    }

    /// How many reports of `type` arrived.
    pub fn count(&self, kind: &str) -> usize {
        self.reports.iter().filter(|r| r["type"] == kind).count()
    }

    /// Waits for the `n`th report of `type` (from 1).
    pub async fn nth(&mut self, kind: &str, n: usize) -> Value {
        self.wait(&format!("report {n} of type {kind}"), |reports| {
            reports
                .iter()
                .filter(|r| r["type"] == kind)
                .nth(n - 1)
                .cloned()
        })
        .await
    }

    /// Emits `event` with `data` and an acknowledgement callback; returns
    /// the acknowledgement.
    pub async fn request(&mut self, event: &str, data: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"op": "emit", "id": id, "event": event, "data": data, "ack": true}))
            .await;
        self.wait(&format!("the acknowledgement of {event}"), |reports| {
            reports
                .iter()
                .find(|r| r["type"] == "ack" && r["id"] == id)
                .map(|r| r["reply"].clone())
        })
        .await
    }

    /// Emits `event` with `data` and no acknowledgement callback.
    pub async fn emit(&mut self, event: &str, data: Value) {
        self.send(json!({"op": "emit", "event": event, "data": data, "ack": false}))
            .await;
    }

    /// The first argument of every Socket.IO event `name` received so far.
    pub fn events(&self, name: &str) -> Vec<Value> {
        self.reports
            .iter()
            .filter(|r| r["type"] == "event" && r["name"] == name)
            .map(|r| r["args"][0].clone())
            .collect()
    }

    /// Waits until `n` Socket.IO events `name` arrived; returns their first
    /// arguments.
    pub async fn wait_events(&mut self, name: &str, n: usize) -> Vec<Value> {
        self.wait(&format!("{n} {name} events"), |reports| {
            let found: Vec<Value> = reports
                .iter()
                .filter(|r| r["type"] == "event" && r["name"] == name)
                .map(|r| r["args"][0].clone())
                .collect();
            (found.len() >= n).then_some(found)
        })
        .await
    }
}
