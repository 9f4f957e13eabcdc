//! SQL writers: plain tokio-postgres connections inserting `messages` rows
//! into the demo schema, the way an application backend would. A row with
//! `sender_id = s` and `recipient_id = r` becomes `message-sent` in
//! `user_{s}` and `message-received` in `user_{r}`; its `body` is the
//! writer's sequence number, so a client's frame maps back to its commit.
//!
//! A load either runs at a fixed rate (each connection has its own
//! staggered schedule; a connection slightly late writes again at once, one
//! more than a slot behind skips the slots it missed, and the rate actually
//! achieved is reported) or as fast as the connections go (closed loop). Each statement is its own transaction: the time taken
//! when `execute` returns is the time the COMMIT returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;

use crate::env;
use crate::sys;

/// Events stored per `messages` row (`message-sent`, `message-received`).
pub const EVENTS_PER_ROW: u64 = 2;

/// Which users a row goes between.
#[derive(Clone, Copy, Debug)]
pub enum Pairs {
    /// Sequence number `n` goes from `first + n % count` to the next user
    /// of the ring, so every room of the ring gets two frames per turn.
    Ring { first: i64, count: i64 },
    /// Always the same sender and recipient.
    Fixed { sender: i64, recipient: i64 },
}

impl Pairs {
    fn of(&self, n: u64) -> (i64, i64) {
        match *self {
            Pairs::Ring { first, count } => {
                let count = count.max(1) as u64;
                let at = n % count;
                (first + at as i64, first + ((at + 1) % count) as i64)
            }
            Pairs::Fixed { sender, recipient } => (sender, recipient),
        }
    }
}

/// One load to apply.
#[derive(Clone, Debug)]
pub struct Load {
    /// Rows per second, or `None` for as fast as possible.
    pub rows_per_sec: Option<f64>,
    /// Rows per statement (one transaction).
    pub batch: usize,
    /// How long to write.
    pub duration: Duration,
    /// Senders and recipients.
    pub pairs: Pairs,
    /// Keep `(sequence number, commit time)` of every row.
    pub record: bool,
}

/// What a load did.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// Rows committed.
    pub rows: u64,
    /// Statements that failed (their rows are not counted).
    pub errors: u64,
    /// When the load started (`CLOCK_MONOTONIC` ns).
    pub start_ns: u64,
    /// Seconds from the start to the last commit.
    pub elapsed_s: f64,
    /// `(sequence number, commit time in ns)` of every row, when recorded.
    pub commits: Vec<(u64, u64)>,
    /// `(sequence number, time its INSERT was sent)` of every committed
    /// row, when the load records.
    pub sends: Vec<(u64, u64)>,
    /// How long each statement took, from sending it to its COMMIT returning, in ns.
    pub statement_ns: Vec<i64>,
}

/// Writer connections with their prepared statements.
pub struct Writers {
    conns: Vec<(Arc<Client>, Statement, Statement)>,
    /// The next sequence number, shared by every load of these writers.
    seq: Arc<AtomicU64>,
}

const INSERT_ONE: &str = "INSERT INTO messages (sender_id, recipient_id, body) VALUES ($1, $2, $3)";
const INSERT_MANY: &str = "INSERT INTO messages (sender_id, recipient_id, body)
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])";

impl Writers {
    /// Opens `count` connections to a database.
    pub async fn connect(url: &str, count: usize) -> anyhow::Result<Self> {
        let mut conns = Vec::new();
        for _ in 0..count.max(1) {
            let client = env::connect(url).await?;
            let one = client.prepare(INSERT_ONE).await?;
            let many = client.prepare(INSERT_MANY).await?;
            conns.push((Arc::new(client), one, many));
        }
        Ok(Self {
            conns,
            seq: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Applies a load with every connection; returns when it is over.
    pub async fn run(&self, load: &Load) -> Written {
        self.run_until(load, &CancellationToken::new()).await
    }

    /// Applies a load until it is over or `stop` is cancelled, whichever
    /// comes first (a statement under way is finished).
    pub async fn run_until(&self, load: &Load, stop: &CancellationToken) -> Written {
        let start = tokio::time::Instant::now();
        let start_ns = sys::mono_ns();
        let deadline = start + load.duration;
        let total = self.conns.len();
        let mut tasks = Vec::new();
        for (index, (client, one, many)) in self.conns.iter().cloned().enumerate() {
            let load = load.clone();
            let seq = self.seq.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = Written::default();
                let batch = load.batch.max(1);
                // Statement k of this connection is due at (index + k * total) / rate.
                let period = load
                    .rows_per_sec
                    .map(|rate| Duration::from_secs_f64(batch as f64 / rate.max(1e-6)));
                let mut k = 0u32;
                let mut first_error = true;
                loop {
                    if let Some(period) = period {
                        let mut due = start + period * (index as u32 + k * total as u32);
                        // A connection more than one slot late skips the slots it
                        // missed instead of bursting: the offered rate never exceeds
                        // the target, and the achieved rate shows the shortfall.
                        let now = tokio::time::Instant::now();
                        let slot = period * total as u32;
                        while now > due + slot {
                            k += 1;
                            due += slot;
                        }
                        if due >= deadline {
                            break;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep_until(due) => {}
                            _ = stop.cancelled() => break,
                        }
                    } else if tokio::time::Instant::now() >= deadline || stop.is_cancelled() {
                        break;
                    }
                    k += 1;
                    let first = seq.fetch_add(batch as u64, Ordering::Relaxed);
                    let sent = sys::mono_ns();
                    let result = if batch == 1 {
                        let (s, r) = load.pairs.of(first);
                        client.execute(&one, &[&s, &r, &first.to_string()]).await
                    } else {
                        let (mut senders, mut recipients, mut bodies) =
                            (Vec::new(), Vec::new(), Vec::new());
                        for n in first..first + batch as u64 {
                            let (s, r) = load.pairs.of(n);
                            senders.push(s);
                            recipients.push(r);
                            bodies.push(n.to_string());
                        }
                        client
                            .execute(&many, &[&senders, &recipients, &bodies])
                            .await
                    };
                    let committed = sys::mono_ns();
                    done.statement_ns.push((committed - sent) as i64);
                    match result {
                        Ok(_) => {
                            done.rows += batch as u64;
                            if load.record {
                                done.commits
                                    .extend((first..first + batch as u64).map(|n| (n, committed)));
                                done.sends
                                    .extend((first..first + batch as u64).map(|n| (n, sent)));
                            }
                        }
                        Err(e) => {
                            done.errors += 1;
                            if first_error {
                                eprintln!("bench: a write failed: {e}");
                                first_error = false;
                            }
                        }
                    }
                }
                done
            }));
        }
        let mut outcome = Written {
            start_ns,
            ..Written::default()
        };
        for task in tasks {
            if let Ok(done) = task.await {
                outcome.rows += done.rows;
                outcome.errors += done.errors;
                outcome.commits.extend(done.commits);
                outcome.sends.extend(done.sends);
                outcome.statement_ns.extend(done.statement_ns);
            }
        }
        outcome.elapsed_s = start.elapsed().as_secs_f64();
        outcome
    }
}
