//! The hidden `clients` subcommand: one process holding many WebSocket
//! connections (tokio-tungstenite). It reads its [`Plan`] from the first
//! line of stdin, binds every socket to the plan's loopback address before
//! connecting, joins each connection's rooms, prints `ready`, then counts
//! the event frames that arrive (and, for latency, records when each
//! `messages` frame arrived) until the parent asks for a report. Stalled
//! connections stop reading after their joins until the parent says `drain`.
//! Controlled connections (revocation) also record the `left` frames they
//! receive and join their rooms again when the parent says `join <index>`.
//! SSE connections (`transport: sse`) open one `GET /v1/sse` stream each,
//! with their rooms in the query, and are counted like WebSocket ones.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

use crate::clients::{Message, Plan, Transport};
use crate::sys;
use rowcast_devkit::sse::SseStream;

/// Handshakes in flight per process (the relay's accept backlog is 1024).
const CONNECTING: usize = 128;
/// Close code recorded when a connection ended without a close frame.
const ENDED: u16 = 1006;
/// What a draining connection reports when the relay had not closed it.
const STILL_OPEN: u16 = 0;
/// A draining connection that receives nothing for this long is still open.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// `join` commands waiting per controlled connection.
const COMMANDS: usize = 4;
/// Most `left` frames kept between two reports.
const MAX_LEFTS: usize = 1_000_000;

#[derive(Default)]
struct ClientCounters {
    frames: AtomicU64,
    samples: Mutex<Vec<(u64, u64)>>,
    closes: Mutex<BTreeMap<u16, u64>>,
    reconnects: AtomicU64,
    open: AtomicU64,
    drain_frames: AtomicU64,
    still_open: AtomicU64,
    /// `(room, receive time)` of `left` frames since the last report.
    lefts: Mutex<Vec<(String, u64)>>,
    /// The command queue of each open controlled connection, by index.
    controls: Mutex<HashMap<usize, mpsc::Sender<()>>>,
}

impl ClientCounters {
    fn closed(&self, code: u16) {
        *self.closes.lock().unwrap().entry(code).or_default() += 1;
    }
}

/// Runs the client process until `exit` or the end of stdin.
pub fn main() -> ExitCode {
    sys::raise_nofile();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("clients: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => {
            // Connection tasks are still parked; exiting drops them all.
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("clients: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let line = stdin.next_line().await?.context("no plan on stdin")?;
    let plan: Arc<Plan> = Arc::new(serde_json::from_str(&line).context("bad plan")?);
    let shared = Arc::new(ClientCounters::default());
    let (drain_tx, drain_rx) = watch::channel(false);
    let (first_tx, mut first_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let permits = Arc::new(Semaphore::new(CONNECTING));
    let started = std::time::Instant::now();
    for index in 0..plan.conns.len() {
        tokio::spawn(connection(
            plan.clone(),
            index,
            shared.clone(),
            permits.clone(),
            first_tx.clone(),
            done_tx.clone(),
            drain_rx.clone(),
        ));
    }
    drop(first_tx);
    drop(done_tx);
    let (mut connected, mut failed, mut first_error) = (0u64, 0u64, None);
    while let Some(result) = first_rx.recv().await {
        match result {
            Ok(()) => connected += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    say(&Message::Ready {
        connected,
        failed,
        elapsed_ms: started.elapsed().as_millis() as u64,
        first_error,
    });
    while let Some(command) = stdin.next_line().await? {
        match command.trim() {
            "report" => say(&Message::Report {
                at_ns: sys::mono_ns(),
                frames: shared.frames.swap(0, Ordering::Relaxed),
                samples: std::mem::take(&mut *shared.samples.lock().unwrap()),
                closes: take_closes(&shared),
                reconnects: shared.reconnects.swap(0, Ordering::Relaxed),
                open: shared.open.load(Ordering::Relaxed),
                lefts: std::mem::take(&mut *shared.lefts.lock().unwrap()),
            }),
            command if command.starts_with("join ") => {
                let index = command[5..].trim().parse::<usize>().unwrap_or(usize::MAX);
                let queue = shared.controls.lock().unwrap().get(&index).cloned();
                let refused = match queue {
                    Some(queue) => queue.try_send(()).err().map(|_| "a join is under way"),
                    None => Some("no such open connection"),
                };
                if let Some(error) = refused {
                    say(&Message::Joined {
                        index,
                        ok: false,
                        error: Some(error.into()),
                    });
                }
            }
            "drain" => {
                let _ = drain_tx.send(true);
                let deadline = tokio::time::sleep(Duration::from_secs(60));
                tokio::pin!(deadline);
                let mut done = 0;
                while done < connected {
                    tokio::select! {
                        d = done_rx.recv() => match d { Some(()) => done += 1, None => break },
                        _ = &mut deadline => break,
                    }
                }
                say(&Message::Drained {
                    closes: take_closes(&shared),
                    frames: shared.drain_frames.swap(0, Ordering::Relaxed),
                    still_open: shared.still_open.swap(0, Ordering::Relaxed) + (connected - done),
                });
            }
            "exit" => break,
            _ => {}
        }
    }
    Ok(())
}

fn take_closes(shared: &ClientCounters) -> Vec<(u16, u64)> {
    std::mem::take(&mut *shared.closes.lock().unwrap())
        .into_iter()
        .collect()
}

fn say(message: &Message) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, message);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

async fn connection(
    plan: Arc<Plan>,
    index: usize,
    shared: Arc<ClientCounters>,
    permits: Arc<Semaphore>,
    first: mpsc::UnboundedSender<Result<(), String>>,
    done: mpsc::UnboundedSender<()>,
    mut drain: watch::Receiver<bool>,
) {
    let rooms = &plan.conns[index];
    let token = plan.tokens.get(index).unwrap_or(&plan.token);
    if plan.transport == Transport::Sse {
        return sse_connection(&plan, token, rooms, &shared, &permits, first).await;
    }
    let mut first = Some(first);
    let mut failures = 0;
    loop {
        let attempt = {
            let _permit = permits.acquire().await;
            open(&plan, token, rooms).await
        };
        let ws = match attempt {
            Ok(ws) => ws,
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(format!("{e:#}")));
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * failures)).await;
                continue;
            }
        };
        failures = 0;
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        shared.open.fetch_add(1, Ordering::Relaxed);
        if plan.stalled {
            let _ = drain.wait_for(|go| *go).await;
            let code = read(ws, &shared, &shared.drain_frames, false, Some(DRAIN_IDLE)).await;
            shared.open.fetch_sub(1, Ordering::Relaxed);
            if code == STILL_OPEN {
                shared.still_open.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.closed(code);
            }
            let _ = done.send(());
            return;
        }
        let code = if plan.control {
            let (queue, commands) = mpsc::channel(COMMANDS);
            shared.controls.lock().unwrap().insert(index, queue);
            let code = controlled(ws, index, rooms, &shared, commands).await;
            shared.controls.lock().unwrap().remove(&index);
            code
        } else {
            read(ws, &shared, &shared.frames, plan.latency, None).await
        };
        shared.open.fetch_sub(1, Ordering::Relaxed);
        shared.closed(code);
        if !plan.reconnect {
            return;
        }
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200 + (index as u64 % 800))).await;
    }
}

/// An SSE connection: opens its stream (5 attempts), then counts and
/// records the stored events until the stream ends.
async fn sse_connection(
    plan: &Plan,
    token: &str,
    rooms: &[String],
    shared: &ClientCounters,
    permits: &Semaphore,
    first: mpsc::UnboundedSender<Result<(), String>>,
) {
    let path = format!("/v1/sse?rooms={}&token={token}", rooms.join(","));
    let mut failures = 0;
    let mut stream = loop {
        let attempt = {
            let _permit = permits.acquire().await;
            open_sse(plan, &path).await
        };
        match attempt {
            Ok(stream) => break stream,
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    let _ = first.send(Err(format!("{e:#}")));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * failures)).await;
            }
        }
    };
    let _ = first.send(Ok(()));
    // The parent's `ready` waits for every sender to be gone.
    drop(first);
    shared.open.fetch_add(1, Ordering::Relaxed);
    let mut events = Vec::new();
    let code = loop {
        match stream.read_batch(&mut events).await {
            Ok(true) => {}
            Ok(false) | Err(_) => break ENDED,
        }
        let now = sys::mono_ns();
        for event in events.drain(..) {
            // Stored events carry their seq as the SSE id (`gap` has none).
            if event.id.is_none() {
                continue;
            }
            shared.frames.fetch_add(1, Ordering::Relaxed);
            if plan.latency {
                if let Some(seq) = body_number(&event.data) {
                    shared.samples.lock().unwrap().push((seq, now));
                }
            }
        }
    };
    shared.open.fetch_sub(1, Ordering::Relaxed);
    shared.closed(code);
}

/// Opens one SSE stream from the plan's local address: an error unless the
/// response is 200 with `text/event-stream`.
async fn open_sse(plan: &Plan, path: &str) -> anyhow::Result<SseStream> {
    let stream = SseStream::open_from(plan.addr, plan.bind.into(), path, &[])
        .await?
        .map_err(|refused| anyhow::anyhow!("HTTP {}: {}", refused.status, refused.body.trim()))?;
    let kind = stream.header("content-type").unwrap_or_default();
    if !kind.starts_with("text/event-stream") {
        bail!("not an event stream: {kind}");
    }
    Ok(stream)
}

/// Reads until the connection closes (or nothing arrives for `idle`);
/// returns the close code, or [`STILL_OPEN`].
async fn read(
    mut ws: WebSocketStream<TcpStream>,
    shared: &ClientCounters,
    frames: &AtomicU64,
    latency: bool,
    idle: Option<Duration>,
) -> u16 {
    loop {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, ws.next()).await {
                Ok(next) => next,
                Err(_) => return STILL_OPEN,
            },
            None => ws.next().await,
        };
        let Some(message) = next else { break };
        match message {
            Ok(Ws::Text(text)) => {
                let now = sys::mono_ns();
                if !is_event(&text) {
                    continue;
                }
                frames.fetch_add(1, Ordering::Relaxed);
                if latency {
                    if let Some(seq) = body_number(&text) {
                        shared.samples.lock().unwrap().push((seq, now));
                    }
                }
            }
            Ok(Ws::Close(frame)) => return frame.map(|f| u16::from(f.code)).unwrap_or(1005),
            Ok(_) => {}
            Err(_) => return ENDED,
        }
    }
    ENDED
}

/// Reads a controlled connection until it closes: counts event frames,
/// records `left` frames, and joins the rooms again on each command,
/// answering with [`Message::Joined`] once every join was answered.
async fn controlled(
    ws: WebSocketStream<TcpStream>,
    index: usize,
    rooms: &[String],
    shared: &ClientCounters,
    mut commands: mpsc::Receiver<()>,
) -> u16 {
    let (mut sink, mut stream) = ws.split();
    // The reference of the joins under way, and how many are unanswered.
    let mut pending: Option<(String, usize)> = None;
    let mut attempt = 0u64;
    loop {
        tokio::select! {
            command = commands.recv() => {
                if command.is_none() {
                    return ENDED;
                }
                attempt += 1;
                let reference = format!("again{attempt}");
                let mut sent = Ok(());
                for room in rooms {
                    let join = serde_json::json!({"type": "join", "room": room, "ref": reference});
                    sent = sent.and(sink.feed(Ws::Text(join.to_string().into())).await);
                }
                if let Err(e) = sent.and(sink.flush().await) {
                    say(&Message::Joined { index, ok: false, error: Some(e.to_string()) });
                    return ENDED;
                }
                if rooms.is_empty() {
                    say(&Message::Joined { index, ok: true, error: None });
                } else {
                    pending = Some((reference, rooms.len()));
                }
            }
            next = stream.next() => {
                let Some(message) = next else { return ENDED };
                match message {
                    Ok(Ws::Text(text)) => {
                        let now = sys::mono_ns();
                        if is_event(&text) {
                            shared.frames.fetch_add(1, Ordering::Relaxed);
                        } else if text.contains("\"left\"") {
                            let frame: serde_json::Value =
                                serde_json::from_str(&text).unwrap_or_default();
                            if frame["type"] == "left" {
                                let room = frame["room"].as_str().unwrap_or_default().to_string();
                                let mut lefts = shared.lefts.lock().unwrap();
                                if lefts.len() < MAX_LEFTS {
                                    lefts.push((room, now));
                                }
                            }
                        } else if text.contains("\"reply\"") {
                            let reply: serde_json::Value =
                                serde_json::from_str(&text).unwrap_or_default();
                            let Some((reference, waiting)) = pending.as_mut() else { continue };
                            if reply["ref"] != reference.as_str() {
                                continue;
                            }
                            if reply["ok"] != true {
                                say(&Message::Joined { index, ok: false, error: Some(text.to_string()) });
                                pending = None;
                            } else {
                                *waiting -= 1;
                                if *waiting == 0 {
                                    say(&Message::Joined { index, ok: true, error: None });
                                    pending = None;
                                }
                            }
                        }
                    }
                    Ok(Ws::Close(frame)) => return frame.map(|f| u16::from(f.code)).unwrap_or(1005),
                    Ok(_) => {}
                    Err(_) => return ENDED,
                }
            }
        }
    }
}

/// Whether a server frame is an event (`{"type":"event",...}`).
fn is_event(text: &str) -> bool {
    let head = &text.as_bytes()[..text.len().min(32)];
    head.windows(14).any(|w| w == b"\"type\":\"event\"")
}

/// The writer's sequence number carried in a `messages` row's `body`.
fn body_number(text: &str) -> Option<u64> {
    let at = text.find("\"body\":\"")? + 8;
    let digits = &text[at..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// Connects from the plan's source address, reads the welcome and joins
/// the rooms.
async fn open(
    plan: &Plan,
    token: &str,
    rooms: &[String],
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = plan.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::new(plan.bind.into(), 0))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(plan.addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    let url = format!("ws://{}/v1/ws?token={token}", plan.addr);
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)),
    )
    .await
    .context("handshake timed out")??;
    let welcome = next_text(&mut ws).await?;
    if !welcome.contains("\"welcome\"") {
        bail!("expected a welcome, got {welcome}");
    }
    for (i, room) in rooms.iter().enumerate() {
        let join = serde_json::json!({"type": "join", "room": room, "ref": format!("j{i}")});
        ws.feed(Ws::Text(join.to_string().into())).await?;
    }
    ws.flush().await?;
    let mut waiting = rooms.len();
    while waiting > 0 {
        let text = next_text(&mut ws).await?;
        if !text.contains("\"reply\"") {
            continue;
        }
        let reply: serde_json::Value = serde_json::from_str(&text)?;
        if reply["ok"] != true {
            bail!("join refused: {text}");
        }
        waiting -= 1;
    }
    Ok(ws)
}

async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> anyhow::Result<String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no frame within 30 s")?;
        match message {
            Some(Ok(Ws::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Ws::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the connection ended"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frames_and_bodies_are_recognized() {
        let frame = r#"{"type":"event","room":"user_1","event":"message-sent","seq":3,"data":{"id":1,"body":"42"}}"#;
        assert!(is_event(frame));
        assert_eq!(body_number(frame), Some(42));
        assert!(!is_event(r#"{"type":"reply","ok":true}"#));
        assert_eq!(body_number(r#"{"type":"event","data":{}}"#), None);
    }
}
