//! Webhooks (Standard Webhooks): every event a `[[webhook]]` wants is
//! POSTed as its v1 event frame, in seq order, signed with the webhook's
//! secret. An event is retried with backoff while the receiver fails, and
//! after its bounded attempts it is written to `realtime.webhook_failures`
//! and the webhook moves on.
//!
//! Headers: `webhook-id` (`evt_<seq>`, the same on every attempt),
//! `webhook-timestamp` (unix seconds of the attempt) and
//! `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::client::{check_target, Reach};
use super::cursor::Cursor;
use super::journal::{Attempt, Journal, Outcome as Noted};
use super::retry::{self, Outcome};
use super::PAGE;
use crate::db::{DbError, Session};
use crate::event::StoredEvent;
use crate::fanout::Hub;
use crate::route::Webhook;
use crate::shutdown::Shutdown;

/// A webhook's signing key, from its `whsec_<base64>` secret. Never
/// printed.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl SigningSecret {
    /// Decodes `whsec_<base64>` (the prefix is optional, as in the
    /// Standard Webhooks libraries). The message never repeats the value.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let encoded = value.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "is not `whsec_` followed by base64")?;
        if key.len() < 16 {
            return Err("is shorter than 16 bytes: use at least 24 random bytes");
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header for one attempt.
    pub fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// One webhook's delivery loop.
#[derive(Clone)]
pub struct WebhookSink {
    webhook: Webhook,
    secret: SigningSecret,
    client: reqwest::Client,
    journal: Arc<Journal>,
}

impl WebhookSink {
    /// A sink for `webhook`, signing with `secret`, noting its attempts in
    /// `journal`.
    pub fn new(
        webhook: Webhook,
        secret: SigningSecret,
        journal: Arc<Journal>,
    ) -> Result<Self, String> {
        let reach = if webhook.allow_insecure {
            Reach::Any
        } else {
            Reach::Public
        };
        check_target(&webhook.url, reach).map_err(|e| {
            format!(
                "webhook {}: {e} (set `allow_insecure = true` to allow it)",
                webhook.name
            )
        })?;
        Ok(Self {
            client: super::client::client(reach)?,
            webhook,
            secret,
            journal,
        })
    }

    /// The cursor's name.
    pub fn cursor_name(&self) -> String {
        format!("webhook:{}", self.webhook.name)
    }

    /// Delivers after the cursor until `stop` (`Ok`) or a database error.
    pub async fn run(
        self,
        session: Arc<Session>,
        hub: Arc<Hub>,
        stop: Shutdown,
    ) -> Result<(), DbError> {
        let client = session.client();
        let mut cursor = Cursor::open(client, &self.cursor_name()).await?;
        tracing::debug!(webhook = %self.webhook.name, after = cursor.seq(), "webhook resumes");
        loop {
            let events = cursor.next(client, &hub, PAGE).await?;
            if events.is_empty() {
                if cursor.wait(&hub, &stop).await {
                    return Ok(());
                }
                continue;
            }
            let mut done = cursor.seq();
            for event in &events {
                if self.webhook.wants(&event.name) {
                    match self.deliver(event, &stop).await {
                        Delivery::Done => {}
                        Delivery::GaveUp(failure) => {
                            self.dead_letter(client, event, &failure).await?;
                        }
                        Delivery::Stopped => {
                            cursor.advance(client, done).await?;
                            return Ok(());
                        }
                    }
                }
                done = event.seq;
            }
            cursor.advance(client, done).await?;
        }
    }

    /// Tries one event until it is delivered, its attempts are used up, or
    /// `stop` fires.
    async fn deliver(&self, event: &StoredEvent, stop: &Shutdown) -> Delivery {
        let id = format!("evt_{}", event.seq);
        let body = body(event);
        let label = self.cursor_name();
        let name = label.as_str();
        for attempt in 0..self.webhook.attempts {
            let started = Instant::now();
            let outcome = tokio::select! {
                outcome = self.attempt(&id, &body) => outcome,
                _ = stop.wait() => return Delivery::Stopped,
            };
            let mut noted = Attempt::of(
                name,
                &self.webhook.name,
                event.seq,
                &event.name,
                attempt + 1,
            );
            noted.ms = started.elapsed().as_millis() as u64;
            let (status, error, retry_after) = match outcome {
                Outcome::Delivered => {
                    metrics::counter!("rowcast_sink_sent_total", "sink" => name.to_string())
                        .increment(1);
                    self.journal.note(noted);
                    return Delivery::Done;
                }
                Outcome::Gone(status) => (Some(status), format!("answered {status}"), None),
                Outcome::Retry {
                    status,
                    error,
                    retry_after,
                } => (status, error, retry_after),
            };
            metrics::counter!("rowcast_sink_failed_total", "sink" => name.to_string()).increment(1);
            let last = attempt + 1 == self.webhook.attempts;
            noted.outcome = if last { Noted::GaveUp } else { Noted::Retry };
            noted.status = status;
            noted.error = Some(error.clone());
            self.journal.note(noted);
            if last {
                return Delivery::GaveUp(Failure {
                    attempts: self.webhook.attempts,
                    status,
                    error,
                    body,
                    id,
                });
            }
            let delay = retry::delay(
                attempt,
                self.webhook.backoff,
                self.webhook.max_backoff,
                retry_after,
            );
            tracing::debug!(webhook = name, seq = event.seq, attempt = attempt + 1, %error,
                delay_ms = delay.as_millis() as u64, "webhook attempt failed; will retry");
            metrics::counter!("rowcast_sink_retried_total", "sink" => name.to_string())
                .increment(1);
            if stop.sleep(delay).await {
                return Delivery::Stopped;
            }
        }
        unreachable!("the last attempt returns")
    }

    /// One signed POST.
    async fn attempt(&self, id: &str, body: &str) -> Outcome {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let response = self
            .client
            .post(self.webhook.url.clone())
            .timeout(self.webhook.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", self.secret.sign(id, timestamp, body))
            .body(body.to_string())
            .send()
            .await;
        retry::outcome(response, &[])
    }

    /// Records an event the webhook gave up on.
    async fn dead_letter(
        &self,
        client: &tokio_postgres::Client,
        event: &StoredEvent,
        failure: &Failure,
    ) -> Result<(), DbError> {
        let status = failure.status.map(i32::from);
        let attempts = i32::try_from(failure.attempts).unwrap_or(i32::MAX);
        client
            .execute(
                "INSERT INTO realtime.webhook_failures
                    (webhook, seq, event, webhook_id, attempts, last_status, last_error, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)",
                &[
                    &self.webhook.name,
                    &event.seq,
                    &&*event.name,
                    &failure.id,
                    &attempts,
                    &status,
                    &failure.error,
                    &failure.body,
                ],
            )
            .await?;
        tracing::warn!(webhook = %self.webhook.name, seq = event.seq, event = %event.name,
            attempts, error = %failure.error,
            "webhook gave up on an event: it is in realtime.webhook_failures");
        metrics::counter!("rowcast_sink_dead_lettered_total", "sink" => self.cursor_name())
            .increment(1);
        Ok(())
    }
}

/// How one event's delivery ended.
enum Delivery {
    Done,
    GaveUp(Failure),
    Stopped,
}

/// The last attempt of an event given up on.
struct Failure {
    attempts: u32,
    status: Option<u16>,
    error: String,
    body: String,
    id: String,
}

/// The body POSTed: the event's v1 frame for its first room, with every
/// room it went to in `rooms`.
pub fn body(event: &StoredEvent) -> String {
    let room = event.rooms.first().map_or("", String::as_str);
    let frame = crate::protocol::frame::stored_frame(room, event);
    let rooms = serde_json::to_string(&event.rooms).unwrap_or_else(|_| "[]".into());
    // `{"type":"event",` + `"rooms":[..],` + the rest of the frame.
    let (head, rest) = frame.as_str().split_at("{\"type\":\"event\",".len());
    format!("{head}\"rooms\":{rooms},{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_that_are_not_base64_or_too_short_are_refused() {
        assert!(SigningSecret::parse("whsec_!!!").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }
}
