//! Web Push (RFC 8030): events whose route has a `push` rule are sent,
//! encrypted (RFC 8291) and signed (VAPID, RFC 8292), to every browser
//! subscription of the user the rule names.
//!
//! Deliveries run concurrently, each with its own retries, so one slow
//! push service holds up no other. The cursor moves to the last seq whose
//! deliveries have all ended (the watermark), so a crash resends what was
//! in flight: at least once, deduplicated by the frame's seq in the
//! service worker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::Reach;
use super::cursor::Cursor;
use super::journal::{Attempt, Journal, Outcome as Noted};
use super::push_crypto::{self, SubscriptionKeys, Vapid};
use super::retry::{self, Outcome};
use super::subscriptions::{Origins, Registry};
use super::PAGE;
use crate::config::PushConfig;
use crate::db::{DbError, Session};
use crate::event::StoredEvent;
use crate::fanout::Hub;
use crate::route::{PushRule, PushWhen};
use crate::shutdown::Shutdown;

/// The cursor's name.
const CURSOR: &str = "push";

/// Deliveries in flight (with their retries), at most; reading the outbox
/// pauses beyond it.
const MAX_IN_FLIGHT: usize = 4096;

/// Concurrent requests to one push service, at most.
const PER_ORIGIN: usize = 32;

/// Attempts per delivery.
const ATTEMPTS: u32 = 6;

/// The first retry's delay; each retry doubles it.
const BACKOFF: Duration = Duration::from_millis(500);

/// The longest delay between attempts, a `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// How often the sink counts the stored subscriptions for the
/// `rowcast_push_subscriptions` gauge (registrations land on any node);
/// it counts again at once after removing one.
const COUNT_EVERY: Duration = Duration::from_secs(10);

/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The Web Push sink.
#[derive(Clone)]
pub struct PushSink(Arc<Inner>);

struct Inner {
    vapid: Vapid,
    subject: String,
    ttl: Duration,
    origins: Origins,
    rules: BTreeMap<String, PushRule>,
    public: reqwest::Client,
    any: reqwest::Client,
    /// Requests in flight per push service origin.
    per_origin: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The VAPID `Authorization` per origin and when its token expires
    /// (unix seconds): one signature serves many requests.
    tokens: std::sync::Mutex<HashMap<String, (Arc<str>, u64)>>,
    journal: Arc<Journal>,
}

/// One subscription to deliver to, for one event.
struct Target {
    endpoint: String,
    keys: SubscriptionKeys,
    /// The event's name, for the journal.
    event: Arc<str>,
}

/// How one delivery ended.
struct Ended {
    seq: i64,
    /// The endpoint, when the push service said it is gone.
    gone: Option<String>,
}

impl PushSink {
    /// The sink and the gateway's registration rules, from the settings
    /// and the routes' push rules, noting its attempts in `journal`. Fails
    /// on an unusable VAPID key.
    pub fn new(
        config: &PushConfig,
        rules: BTreeMap<String, PushRule>,
        journal: Arc<Journal>,
    ) -> Result<(Self, Arc<Registry>), String> {
        let vapid = Vapid::from_private_base64url(config.vapid_private_key.expose())
            .map_err(|e| format!("ROWCAST_VAPID_PRIVATE_KEY: {e}"))?;
        let origins = Origins::new(config);
        let registry = Arc::new(Registry {
            public_key: vapid.public_key().to_string(),
            origins: origins.clone(),
            per_user: config.per_user,
        });
        let inner = Inner {
            vapid,
            subject: config.subject.clone(),
            ttl: config.ttl,
            origins,
            rules,
            public: super::client::client(Reach::Public)?,
            any: super::client::client(Reach::Any)?,
            per_origin: Default::default(),
            tokens: Default::default(),
            journal,
        };
        Ok((Self(Arc::new(inner)), registry))
    }

    /// The cursor's name.
    pub fn cursor_name(&self) -> String {
        CURSOR.to_string()
    }

    /// Delivers after the cursor until `stop` (`Ok`) or a database error.
    pub async fn run(
        self,
        session: Arc<Session>,
        hub: Arc<Hub>,
        stop: Shutdown,
    ) -> Result<(), DbError> {
        let client = session.client();
        let mut cursor = Cursor::open(client, CURSOR).await?;
        // Per page of events: which of its users are connected, and their
        // subscriptions (two queries, whatever the page holds).
        let online = client
            .prepare("SELECT DISTINCT sub FROM realtime.online WHERE sub = ANY($1)")
            .await?;
        let targets = client
            .prepare(
                "SELECT sub, endpoint, p256dh, auth FROM realtime.push_subscriptions
                 WHERE sub = ANY($1)",
            )
            .await?;
        let forget = client
            .prepare("DELETE FROM realtime.push_subscriptions WHERE endpoint = $1")
            .await?;
        let census = client
            .prepare("SELECT count(*) FROM realtime.push_subscriptions")
            .await?;
        let mut counted: Option<Instant> = None;
        // Seqs with deliveries in flight, and how many each.
        let mut pending: BTreeMap<i64, usize> = BTreeMap::new();
        let mut tasks: JoinSet<Ended> = JoinSet::new();
        let mut read_to = cursor.seq();
        loop {
            while let Some(ended) = tasks.try_join_next() {
                if self.ended(ended, &mut pending, client, &forget).await? {
                    counted = None;
                }
            }
            if counted.is_none_or(|at| at.elapsed() >= COUNT_EVERY) {
                let stored: i64 = client.query_one(&census, &[]).await?.get(0);
                metrics::gauge!("rowcast_push_subscriptions").set(stored as f64);
                counted = Some(Instant::now());
            }
            let watermark = pending.keys().next().map_or(read_to, |first| first - 1);
            cursor.advance(client, watermark).await?;
            if stop.is_triggered() {
                return Ok(());
            }
            if tasks.len() >= MAX_IN_FLIGHT {
                tokio::select! {
                    Some(ended) = tasks.join_next() => {
                        if self.ended(ended, &mut pending, client, &forget).await? {
                            counted = None;
                        }
                    }
                    _ = stop.wait() => return Ok(()),
                }
                continue;
            }
            let events = cursor.read_after(client, &hub, read_to, PAGE).await?;
            if events.is_empty() {
                let mut head = hub.durable_head();
                let after = read_to;
                tokio::select! {
                    _ = async { head.wait_for(|h| *h > after).await.is_ok() } => {}
                    _ = tokio::time::sleep(super::POLL_EVERY) => {}
                    Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                        if self.ended(ended, &mut pending, client, &forget).await? {
                            counted = None;
                        }
                    }
                    _ = stop.wait() => return Ok(()),
                }
                continue;
            }
            // The page's pushes: (event, its user, whether only offline).
            let pushes: Vec<(&Arc<StoredEvent>, String, bool)> = events
                .iter()
                .filter_map(|event| {
                    let rule = self.0.rules.get(&*event.name)?;
                    let user = user_of(rule, event)?;
                    Some((event, user, rule.when == PushWhen::Offline))
                })
                .collect();
            let users: Vec<&str> = pushes.iter().map(|(_, user, _)| user.as_str()).collect();
            let mut subscriptions: HashMap<String, Vec<(String, SubscriptionKeys)>> =
                HashMap::new();
            if !users.is_empty() {
                for row in client.query(&targets, &[&users]).await? {
                    if let Ok(keys) = SubscriptionKeys::parse(row.get(2), row.get(3)) {
                        subscriptions
                            .entry(row.get(0))
                            .or_default()
                            .push((row.get(1), keys));
                    }
                }
            }
            let asked: Vec<&str> = pushes
                .iter()
                .filter(|(_, user, offline)| *offline && subscriptions.contains_key(user))
                .map(|(_, user, _)| user.as_str())
                .collect();
            let connected: HashSet<String> = if asked.is_empty() {
                HashSet::new()
            } else {
                let rows = client.query(&online, &[&asked]).await?;
                rows.iter().map(|row| row.get(0)).collect()
            };
            for (event, user, offline) in &pushes {
                let Some(targets) = subscriptions.get(user) else {
                    continue;
                };
                if *offline && connected.contains(user) {
                    continue;
                }
                let payload = Arc::new(payload(event));
                for (endpoint, keys) in targets {
                    *pending.entry(event.seq).or_default() += 1;
                    let target = Target {
                        endpoint: endpoint.clone(),
                        keys: keys.clone(),
                        event: event.name.clone(),
                    };
                    let (sink, payload, stop, seq) =
                        (self.clone(), payload.clone(), stop.clone(), event.seq);
                    tasks.spawn(async move { sink.deliver(seq, &target, &payload, &stop).await });
                }
            }
            read_to = events.last().map_or(read_to, |e| e.seq);
            metrics::gauge!("rowcast_push_in_flight").set(tasks.len() as f64);
        }
    }

    /// Books a delivery that ended; removes a subscription that is gone
    /// (and says so with `true`).
    async fn ended(
        &self,
        ended: Result<Ended, tokio::task::JoinError>,
        pending: &mut BTreeMap<i64, usize>,
        client: &tokio_postgres::Client,
        forget: &tokio_postgres::Statement,
    ) -> Result<bool, DbError> {
        let ended = match ended {
            Ok(ended) => ended,
            Err(e) => {
                // A delivery that panicked cannot be booked against its seq;
                // stop so the driver restarts from the cursor.
                return Err(DbError::Retry(format!(
                    "a push delivery ended abnormally: {e}"
                )));
            }
        };
        if let Some(left) = pending.get_mut(&ended.seq) {
            *left -= 1;
            if *left == 0 {
                pending.remove(&ended.seq);
            }
        }
        let Some(endpoint) = ended.gone else {
            return Ok(false);
        };
        client.execute(forget, &[&endpoint]).await?;
        metrics::counter!("rowcast_push_subscriptions_removed_total").increment(1);
        Ok(true)
    }

    /// Delivers one payload to one subscription, retrying as the push
    /// service allows.
    async fn deliver(&self, seq: i64, target: &Target, payload: &[u8], stop: &Shutdown) -> Ended {
        let ended = |gone| Ended { seq, gone };
        let body = match push_crypto::encrypt(&target.keys, payload) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(seq, error = %e, "push payload could not be encrypted");
                return ended(None);
            }
        };
        let Ok((url, reach)) = self.0.origins.check(&target.endpoint) else {
            // Stored before ROWCAST_PUSH_ORIGINS changed: no longer allowed.
            return ended(None);
        };
        let origin = url.origin().ascii_serialization();
        let permits = self.permits(&origin);
        for attempt in 0..ATTEMPTS {
            let (outcome, ms) = {
                let Ok(_permit) = permits.acquire().await else {
                    return ended(None);
                };
                let started = Instant::now();
                tokio::select! {
                    outcome = self.attempt(&url, reach, &origin, &body) => {
                        (outcome, started.elapsed().as_millis() as u64)
                    }
                    _ = stop.wait() => return ended(None),
                }
            };
            let mut noted = Attempt::of(CURSOR, &origin, seq, &target.event, attempt + 1);
            noted.ms = ms;
            match outcome {
                Outcome::Delivered => {
                    metrics::counter!("rowcast_sink_sent_total", "sink" => CURSOR).increment(1);
                    self.0.journal.note(noted);
                    return ended(None);
                }
                Outcome::Gone(status) => {
                    tracing::debug!(seq, status, "push subscription gone; removing it");
                    noted.outcome = Noted::Gone;
                    noted.status = Some(status);
                    self.0.journal.note(noted);
                    return ended(Some(target.endpoint.clone()));
                }
                Outcome::Retry {
                    status,
                    error,
                    retry_after,
                } => {
                    metrics::counter!("rowcast_sink_failed_total", "sink" => CURSOR).increment(1);
                    let permanent = status.is_some_and(|s| s != 429 && s < 500);
                    let last = permanent || attempt + 1 == ATTEMPTS;
                    noted.outcome = if last { Noted::GaveUp } else { Noted::Retry };
                    noted.status = status;
                    noted.error = Some(error.clone());
                    self.0.journal.note(noted);
                    if last {
                        tracing::warn!(seq, origin, %error, attempts = attempt + 1,
                            "push not delivered");
                        metrics::counter!("rowcast_sink_dead_lettered_total", "sink" => CURSOR)
                            .increment(1);
                        return ended(None);
                    }
                    metrics::counter!("rowcast_sink_retried_total", "sink" => CURSOR).increment(1);
                    let delay = retry::delay(attempt, BACKOFF, MAX_BACKOFF, retry_after);
                    if stop.sleep(delay).await {
                        return ended(None);
                    }
                }
            }
        }
        ended(None)
    }

    /// One POST to the push service.
    async fn attempt(
        &self,
        url: &reqwest::Url,
        reach: Reach,
        origin: &str,
        body: &[u8],
    ) -> Outcome {
        let client = match reach {
            Reach::Public => &self.0.public,
            Reach::Any => &self.0.any,
        };
        let response = client
            .post(url.clone())
            .timeout(TIMEOUT)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("ttl", self.0.ttl.as_secs())
            .header("urgency", "normal")
            .header("authorization", &*self.authorization(origin))
            .body(body.to_vec())
            .send()
            .await;
        retry::outcome(response, &[404, 410])
    }

    /// The VAPID `Authorization` for `origin`: the cached one while more
    /// than half of its token's lifetime is left, else a new signature.
    fn authorization(&self, origin: &str) -> Arc<str> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut tokens = self.0.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((header, expires)) = tokens.get(origin) {
            if *expires > now + TOKEN_LIFETIME.as_secs() / 2 {
                return header.clone();
            }
        }
        let expires = now + TOKEN_LIFETIME.as_secs();
        let header: Arc<str> = self
            .0
            .vapid
            .authorization(origin, &self.0.subject, expires)
            .into();
        tokens.insert(origin.to_string(), (header.clone(), expires));
        header
    }

    /// The request slots of one push service.
    fn permits(&self, origin: &str) -> Arc<Semaphore> {
        let mut all = self.0.per_origin.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(origin.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_ORIGIN)))
            .clone()
    }
}

/// The user a rule names, from the event's data.
fn user_of(rule: &PushRule, event: &StoredEvent) -> Option<String> {
    let data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&event.data).ok()?;
    rule.user.render(&data)
}

/// The pushed message: the event's v1 frame for its first room; without
/// `data` (and `old`) and with `"truncated": true` when it would not fit
/// in one push message.
fn payload(event: &StoredEvent) -> Vec<u8> {
    let room = event.rooms.first().map_or("", String::as_str);
    let frame = crate::protocol::frame::stored_frame(room, event);
    if frame.len() <= push_crypto::MAX_PLAINTEXT {
        return frame.as_bytes().to_vec();
    }
    let at = event
        .at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "type": "event",
        "room": room,
        "event": &*event.name,
        "seq": event.seq,
        "at": at,
        "truncated": true,
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn event(data: &str) -> StoredEvent {
        StoredEvent {
            seq: 7,
            event: Event {
                name: Arc::from("message-received"),
                rooms: vec!["user_2".into()],
                data: data.into(),
                old: None,
                at: time::OffsetDateTime::UNIX_EPOCH,
                count: None,
                coalesce: None,
            },
        }
    }

    #[test]
    fn a_frame_that_fits_is_pushed_whole() {
        let pushed: serde_json::Value =
            serde_json::from_slice(&payload(&event(r#"{"body":"hi"}"#))).unwrap();
        assert_eq!(pushed["seq"], 7);
        assert_eq!(pushed["room"], "user_2");
        assert_eq!(pushed["data"]["body"], "hi");
        assert!(pushed.get("truncated").is_none());
    }

    #[test]
    fn a_frame_too_large_for_one_message_goes_without_its_data() {
        let big = format!(r#"{{"body":"{}"}}"#, "x".repeat(5000));
        let bytes = payload(&event(&big));
        assert!(bytes.len() <= push_crypto::MAX_PLAINTEXT);
        let pushed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(pushed["truncated"], true);
        assert_eq!(pushed["seq"], 7);
        assert_eq!(pushed["event"], "message-received");
        assert!(pushed.get("data").is_none());
    }
}
