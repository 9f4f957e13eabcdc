//! Clients, spread over several child processes: WebSocket and SSE clients
//! in this binary (the hidden `clients` subcommand, see `client_proc`),
//! Socket.IO clients in Node (`bench/node/client.js`, socket.io-client).
//! Each process gets its own loopback source address, so the number of
//! connections is not bounded by one address's ephemeral ports, and its own
//! open-files limit. The parent sends each process a [`Plan`] on stdin, then
//! one-line commands (`report`, `drain`, `exit`); the process answers with
//! [`Message`]s, one JSON object per line on stdout.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use rowcast_devkit::process;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::env::Env;
use crate::{nodejs, sys};

/// What one client process does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The relay's gateway.
    pub addr: SocketAddr,
    /// The token every connection presents.
    pub token: String,
    /// The loopback address its sockets bind to before connecting.
    pub bind: Ipv4Addr,
    /// One entry per connection: the rooms it joins (without `since`).
    pub conns: Vec<Vec<String>>,
    /// Connections stop reading once joined, until `drain`.
    pub stalled: bool,
    /// `SO_RCVBUF` of each socket, when set (small for stalled clients).
    pub recv_buffer: Option<u32>,
    /// Record `(body, receive time)` of every `messages` event frame.
    pub latency: bool,
    /// Reconnect and rejoin after the relay closes a connection.
    pub reconnect: bool,
    /// One token per connection (user tokens), used instead of `token`
    /// when not empty.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Connections record the `left` frames they receive and join their
    /// rooms again on `join <index>` (answered with [`Message::Joined`]).
    #[serde(default)]
    pub control: bool,
    /// How the connections reach the server.
    #[serde(default)]
    pub transport: Transport,
}

/// How a client connects and receives events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// The relay's WebSocket protocol (`/v1/ws`), in this binary.
    #[default]
    Ws,
    /// The relay's Server-Sent Events stream (`/v1/sse?rooms=...`), in this
    /// binary: one stream per connection, its rooms in the query.
    Sse,
    /// The relay's Socket.IO endpoint (`/socket.io/`), socket.io-client in Node.
    Socketio,
    /// The seed stand-in's Socket.IO server (`bench/seed/`), socket.io-client
    /// in Node (`join-user` with the id).
    Seed,
}

impl Transport {
    /// Parses `ws`, `sse`, `socketio` or `seed`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "ws" => Self::Ws,
            "sse" => Self::Sse,
            "socketio" => Self::Socketio,
            "seed" => Self::Seed,
            other => bail!("unknown path {other:?} (ws, sse, socketio or seed)"),
        })
    }

    /// Its name, as [`parse`](Self::parse) takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Socketio => "socketio",
            Self::Seed => "seed",
        }
    }

    /// Whether its clients run in Node (`bench/node/`).
    pub fn in_node(self) -> bool {
        matches!(self, Self::Socketio | Self::Seed)
    }
}

impl Plan {
    /// WebSocket clients of `addr` with the environment's service token:
    /// they read everything, record nothing and do not reconnect.
    pub fn of(env: &Env, addr: SocketAddr) -> Self {
        Self {
            addr,
            token: env.token(),
            bind: Ipv4Addr::LOCALHOST,
            conns: Vec::new(),
            stalled: false,
            recv_buffer: None,
            latency: false,
            reconnect: false,
            tokens: Vec::new(),
            control: false,
            transport: Transport::Ws,
        }
    }

    /// Clients of `addr` that record the latency of every `messages`
    /// event they receive.
    pub fn latency(env: &Env, addr: SocketAddr) -> Self {
        Self {
            latency: true,
            ..Self::of(env, addr)
        }
    }
}

/// What a client process tells the parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Every connection made its first attempt (and joined its rooms).
    Ready {
        connected: u64,
        failed: u64,
        elapsed_ms: u64,
        first_error: Option<String>,
    },
    /// Counters since the previous report (they are reset).
    Report {
        /// `CLOCK_MONOTONIC` of the report, in ns.
        at_ns: u64,
        /// Event frames received.
        frames: u64,
        /// `(writer sequence number, receive time in ns)` per event frame
        /// of a `messages` row, when the plan records latency.
        samples: Vec<(u64, u64)>,
        /// `(close code, connections)` (1006: ended without a close frame).
        closes: Vec<(u16, u64)>,
        /// Reconnections made.
        reconnects: u64,
        /// Connections open now.
        open: u64,
        /// `(room, receive time in ns)` of every `left` frame, when the
        /// plan has `control`.
        #[serde(default)]
        lefts: Vec<(String, u64)>,
    },
    /// The answer to `join <index>`: the connection's joins were answered.
    Joined {
        /// The connection, in the process's plan.
        index: usize,
        /// Every join was accepted.
        ok: bool,
        /// The first refusal or failure.
        error: Option<String>,
    },
    /// Stalled connections read what was waiting until the relay's close.
    Drained {
        /// `(close code, connections)` (1006: ended without a close frame).
        closes: Vec<(u16, u64)>,
        /// Event frames read while draining.
        frames: u64,
        /// Connections still open at the drain deadline.
        still_open: u64,
    },
}

/// Readiness of a group of client processes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ready {
    pub connected: u64,
    pub failed: u64,
    pub elapsed_ms: u64,
    pub first_error: Option<String>,
}

/// One report per process, taken together.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub frames: u64,
    /// Mean of the processes' windows since their previous report, in s.
    pub window_s: f64,
    pub samples: Vec<(u64, u64)>,
    pub closes: BTreeMap<u16, u64>,
    pub reconnects: u64,
    pub open: u64,
    /// `(room, receive time in ns)` of the `left` frames received.
    pub lefts: Vec<(String, u64)>,
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    last_report_ns: u64,
}

/// A group of client processes; killed when dropped.
pub struct Clients {
    procs: Vec<Proc>,
    /// Connections per process (the last one may have fewer).
    chunk: usize,
}

impl Clients {
    /// Like [`start`](Self::start), for clients that must all connect: an
    /// error says how many could not, and why the first one failed.
    pub async fn start_all(
        env: &Env,
        template: Plan,
        conns: Vec<Vec<String>>,
        per_proc: usize,
        min_procs: usize,
    ) -> anyhow::Result<Self> {
        let (group, ready) = Self::start(env, template, conns, per_proc, min_procs).await?;
        anyhow::ensure!(
            ready.failed == 0,
            "{} clients could not connect: {:?}",
            ready.failed,
            ready.first_error
        );
        Ok(group)
    }

    /// Spreads `conns` over processes of at most `per_proc` connections
    /// (at least `min_procs` when there are enough connections), starts
    /// them and waits until every connection made its first attempt.
    pub async fn start(
        env: &Env,
        template: Plan,
        conns: Vec<Vec<String>>,
        per_proc: usize,
        min_procs: usize,
    ) -> anyhow::Result<(Self, Ready)> {
        let procs = conns
            .len()
            .div_ceil(per_proc.max(1))
            .max(min_procs)
            .min(conns.len())
            .max(1);
        let chunk = conns.len().div_ceil(procs).max(1);
        let mut group = Self {
            procs: Vec::new(),
            chunk,
        };
        let mut plans = Vec::new();
        for (at, part) in conns.chunks(chunk).enumerate() {
            let tokens = if template.tokens.is_empty() {
                Vec::new()
            } else {
                let from = (at * chunk).min(template.tokens.len());
                let to = (from + part.len()).min(template.tokens.len());
                template.tokens[from..to].to_vec()
            };
            let plan = Plan {
                conns: part.to_vec(),
                bind: env.next_ip(),
                tokens,
                ..template.clone()
            };
            group.procs.push(spawn(env, &plan).await?);
            plans.push(plan);
        }
        let mut ready = Ready::default();
        for proc in &mut group.procs {
            match proc.next(Duration::from_secs(600)).await? {
                Message::Ready {
                    connected,
                    failed,
                    elapsed_ms,
                    first_error,
                } => {
                    ready.connected += connected;
                    ready.failed += failed;
                    ready.elapsed_ms = ready.elapsed_ms.max(elapsed_ms);
                    ready.first_error = ready.first_error.take().or(first_error);
                }
                other => bail!("unexpected message from a client process: {other:?}"),
            }
        }
        let now = sys::mono_ns();
        for proc in &mut group.procs {
            proc.last_report_ns = now;
        }
        Ok((group, ready))
    }

    /// The client processes' pids (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().filter_map(|p| p.child.id()).collect()
    }

    /// Asks every process for its counters since the previous report.
    pub async fn report(&mut self) -> anyhow::Result<Totals> {
        for proc in &mut self.procs {
            proc.send("report").await?;
        }
        let mut totals = Totals::default();
        let mut windows = Vec::new();
        for proc in &mut self.procs {
            match proc.next(Duration::from_secs(60)).await? {
                Message::Report {
                    at_ns,
                    frames,
                    samples,
                    closes,
                    reconnects,
                    open,
                    lefts,
                } => {
                    totals.lefts.extend(lefts);
                    windows.push(at_ns.saturating_sub(proc.last_report_ns) as f64 / 1e9);
                    proc.last_report_ns = at_ns;
                    totals.frames += frames;
                    totals.samples.extend(samples);
                    for (code, n) in closes {
                        *totals.closes.entry(code).or_default() += n;
                    }
                    totals.reconnects += reconnects;
                    totals.open += open;
                }
                other => bail!("unexpected message from a client process: {other:?}"),
            }
        }
        totals.window_s = windows.iter().sum::<f64>() / windows.len().max(1) as f64;
        Ok(totals)
    }

    /// Asks connection `conn` (an index into the `conns` given to
    /// [`Clients::start`], of a plan with `control`) to join its rooms
    /// again, and waits for the replies (at most 30 s). Returns the first
    /// refusal, if any.
    pub async fn rejoin(&mut self, conn: usize) -> anyhow::Result<Result<(), String>> {
        let proc = self
            .procs
            .get_mut(conn / self.chunk.max(1))
            .context("no such connection")?;
        let local = conn % self.chunk.max(1);
        proc.send(&format!("join {local}")).await?;
        match proc.next(Duration::from_secs(30)).await? {
            Message::Joined { index, ok, error } if index == local => Ok(if ok {
                Ok(())
            } else {
                Err(error.unwrap_or_default())
            }),
            other => bail!("unexpected message from a client process: {other:?}"),
        }
    }

    /// Lets stalled connections read again until the relay's close frame
    /// (or `deadline`); returns the close codes found.
    pub async fn drain(&mut self, deadline: Duration) -> anyhow::Result<Message> {
        for proc in &mut self.procs {
            proc.send("drain").await?;
        }
        let mut closes: BTreeMap<u16, u64> = BTreeMap::new();
        let (mut frames, mut still_open) = (0, 0);
        for proc in &mut self.procs {
            match proc.next(deadline + Duration::from_secs(30)).await? {
                Message::Drained {
                    closes: c,
                    frames: f,
                    still_open: s,
                } => {
                    for (code, n) in c {
                        *closes.entry(code).or_default() += n;
                    }
                    frames += f;
                    still_open += s;
                }
                other => bail!("unexpected message from a client process: {other:?}"),
            }
        }
        Ok(Message::Drained {
            closes: closes.into_iter().collect(),
            frames,
            still_open,
        })
    }

    /// Asks every process to exit, then makes sure it did.
    pub async fn stop(mut self) {
        for proc in &mut self.procs {
            let _ = proc.send("exit").await;
        }
        for proc in &mut self.procs {
            if tokio::time::timeout(Duration::from_secs(10), proc.child.wait())
                .await
                .is_err()
            {
                let _ = proc.child.kill().await;
            }
        }
    }
}

async fn spawn(env: &Env, plan: &Plan) -> anyhow::Result<Proc> {
    let mut command = if plan.transport.in_node() {
        let dir = nodejs::client_dir();
        nodejs::install(&dir).await?;
        let mut command = std::process::Command::new("node");
        command.arg(dir.join("client.js"));
        command
    } else {
        let mut command = std::process::Command::new(&env.exe);
        command.arg("clients");
        command
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    process::dies_with_parent(&mut command);
    let mut command = Command::from(command);
    command.kill_on_drop(true);
    let mut child = command.spawn().context("starting a client process")?;
    let mut stdin = child.stdin.take().context("client stdin")?;
    let stdout = child.stdout.take().context("client stdout")?;
    let mut line = serde_json::to_string(plan)?;
    line.push('\n');
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await?;
    Ok(Proc {
        child,
        stdin,
        lines: BufReader::new(stdout).lines(),
        last_report_ns: 0,
    })
}

impl Proc {
    async fn send(&mut self, command: &str) -> anyhow::Result<()> {
        self.stdin.write_all(command.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn next(&mut self, deadline: Duration) -> anyhow::Result<Message> {
        let line = tokio::time::timeout(deadline, self.lines.next_line())
            .await
            .context("a client process did not answer in time")??
            .context("a client process exited")?;
        serde_json::from_str(&line).with_context(|| format!("bad line from a client: {line}"))
    }
}

/// Splits `total` connections' room lists: connection `i` gets `rooms(i)`.
pub fn conns(total: usize, rooms: impl Fn(usize) -> Vec<String>) -> Vec<Vec<String>> {
    (0..total).map(rooms).collect()
}
