//! Loopback HTTP peers of the relay's outbound deliveries, each a Node
//! process from `tests/node` that checks what the relay sends with the
//! third-party implementation a real peer would use:
//!
//! - [`PushService`] (`push_service.mjs`): a Web Push service (RFC 8030)
//!   with browser-like subscriptions; it decrypts every push (RFC 8291,
//!   with `http_ece`), verifies its VAPID authorization (RFC 8292) and
//!   answers as scripted.
//! - [`WebhookReceiver`] (`webhook_receiver.mjs`): a Standard Webhooks
//!   endpoint that verifies every hook with `standardwebhooks`.
//! - [`DocEditors`] (`doc_editors.mjs`): Yjs editors, each an unchanged
//!   `y-websocket` provider over its own `yjs` document.
//!
//! These only start the peers and make their control calls; waiting for
//! something to have arrived is the tests' job (with
//! [`super::wait_for`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};

use super::node;

/// How long a peer may take to start and print its port.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// One running peer process; killed when dropped.
struct Peer {
    /// The node process.
    _child: Child,
    /// Its stdin, held open: the peer exits by itself once it closes, so
    /// it does not outlive a test process that was killed.
    _stdin: ChildStdin,
    /// Where it listens (127.0.0.1).
    addr: SocketAddr,
}

impl Peer {
    /// Starts `node <script> <args>` in `tests/node` (installing its
    /// dependencies when needed) and reads the port from its first line
    /// (`{"port":N}`). Panics when node is missing or the peer does not
    /// start within [`START_DEADLINE`].
    async fn start(script: &str, args: &[&str]) -> Self {
        if let Some(why) = node::missing() {
            panic!("the {script} peer needs Node.js: {why}");
        }
        let mut child = node::spawn_test_client(script, args);
        let stdin = child.stdin.take().expect("the peer's stdin");
        let stdout = child.stdout.take().expect("the peer's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_DEADLINE, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} printed no port within {START_DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("read {script}'s stdout: {e}"))
            .unwrap_or_else(|| panic!("{script} exited before printing its port"));
        let port = serde_json::from_str::<Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("{script} printed {first:?}, not {{\"port\":N}}"));
        // Anything else it prints is passed on (and never fills the pipe).
        let name = script.to_string();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{name}: {line}");
            }
        });
        Self {
            _child: child,
            _stdin: stdin,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }

    /// Makes a control call and returns its JSON answer; panics unless it
    /// is answered 200.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = rowcast_devkit::http::json(self.addr, method, path, None, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on the peer at {}: {e}", self.addr));
        assert_eq!(
            status, 200,
            "{method} {path} on the peer at {}: {answer}",
            self.addr
        );
        answer
    }

    /// A control call whose answer is a JSON array.
    async fn list(&self, path: &str) -> Vec<Value> {
        match self.call("GET", path, None).await {
            Value::Array(items) => items,
            other => panic!(
                "GET {path} on the peer at {}: not an array: {other}",
                self.addr
            ),
        }
    }
}

/// A Web Push service stand-in (RFC 8030) on loopback
/// (`tests/node/push_service.mjs`). It hands out browser-like
/// subscriptions whose P-256 key pair and auth secret it keeps; on every
/// push to one it checks, in order, `Content-Encoding: aes128gcm`, a
/// non-negative `TTL`, a valid `Urgency` when there is one, the
/// `Authorization: vapid t=<JWT>, k=<key>` header (an ES256 JWT that
/// verifies with `k`, `aud` this service's [`origin`](Self::origin), `exp`
/// in the future and at most 24 h ahead, `sub` a `mailto:` or `https:`
/// URL), a body of at most 4096 bytes in one record (413 otherwise), and
/// that the body decrypts (RFC 8291, with `http_ece`). A failed check is
/// answered 400 (with the reason) and listed in [`failures`](Self::failures);
/// a push that passes gets the next [`script`](Self::script)ed answer, or
/// 201 when none is left.
pub struct PushService {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// The node process.
    peer: Peer,
}

impl PushService {
    /// Starts a push service (installing `tests/node`'s dependencies when
    /// needed). Panics when node is missing or it does not start in 20 s.
    pub async fn start() -> Self {
        let peer = Peer::start("push_service.mjs", &[]).await;
        Self {
            addr: peer.addr,
            peer,
        }
    }

    /// Its origin, `http://127.0.0.1:N`: every endpoint's, and so the
    /// `aud` a VAPID JWT must name.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new subscription, as a browser's `PushSubscription.toJSON()` gives
    /// it: `{"endpoint": "http://127.0.0.1:N/push/<id>", "keys": {"p256dh":
    /// <base64url 65-byte point>, "auth": <base64url 16 bytes>}}`.
    pub async fn subscription(&self) -> Value {
        self.peer.call("POST", "/new-subscription", None).await
    }

    /// Replaces the answers to the next pushes to `endpoint` (a
    /// subscription's full endpoint URL) that pass the checks: a JSON
    /// array of statuses (`503`) or `{"status": 503, "retryAfter": "1"}`
    /// (answered with that `Retry-After`). A 404 or 410 stays the answer
    /// to every later push (the subscription is gone) until the next
    /// script; once the script is used up, pushes get 201.
    pub async fn script(&self, endpoint: &str, responses: Value) {
        self.peer
            .call(
                "POST",
                &format!("/script/{}", subscription_id(endpoint)),
                Some(responses),
            )
            .await;
    }

    /// Every push to `endpoint` so far, in order, whether it passed the
    /// checks or not: `{"status": answered, "ttl": N or null, "urgency":
    /// header or null, "topic": header or null, "headers": {all, lower
    /// case}, "payload": decrypted UTF-8 text or null, "at": ms since the
    /// epoch}`.
    pub async fn attempts(&self, endpoint: &str) -> Vec<Value> {
        self.peer
            .list(&format!("/attempts/{}", subscription_id(endpoint)))
            .await
    }

    /// Every push that failed a check (or named no subscription of this
    /// service), in order: `{"id", "reason", "status", "headers", "at"}`.
    pub async fn failures(&self) -> Vec<Value> {
        self.peer.list("/failures").await
    }
}

/// The subscription id in an endpoint URL: its last path segment.
fn subscription_id(endpoint: &str) -> &str {
    let id = endpoint
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    assert!(!id.is_empty(), "not a push endpoint: {endpoint:?}");
    id
}

/// A Standard Webhooks receiver on loopback
/// (`tests/node/webhook_receiver.mjs`) with a secret of its own. Every
/// hook to [`url`](Self::url) is answered with the mode's failure status
/// when [`set_mode`](Self::set_mode) said to fail; otherwise it is
/// verified with `standardwebhooks`' `Webhook.verify` (the `webhook-id`,
/// `webhook-timestamp` and `webhook-signature` headers, the timestamp
/// within 5 minutes): 401 and listed in [`failures`](Self::failures) when
/// that fails, else 204 and listed in [`received`](Self::received).
pub struct WebhookReceiver {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// Its signing secret, `whsec_` and 24 random bytes in standard base64.
    pub secret: String,
    /// The node process.
    peer: Peer,
}

impl WebhookReceiver {
    /// Starts a receiver with a new random secret (installing
    /// `tests/node`'s dependencies when needed). Panics when node is
    /// missing or it does not start in 20 s.
    pub async fn start() -> Self {
        use base64::Engine;
        let bytes: [u8; 24] = rand::random();
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let peer = Peer::start("webhook_receiver.mjs", &[&secret]).await;
        Self {
            addr: peer.addr,
            secret,
            peer,
        }
    }

    /// The URL the relay delivers to: `http://127.0.0.1:N/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Sets how hooks are answered from now on: `{"status": 500}` (that
    /// status for every hook; with `"retryAfter": "2"` also that
    /// `Retry-After`), `{"status": null}` (verify and accept again) or
    /// `{"downForMs": 5000}` (503 for that long from now, then accept).
    pub async fn set_mode(&self, mode: Value) {
        self.peer.call("POST", "/mode", Some(mode)).await;
    }

    /// The hooks that verified, in order: `{"id": webhook-id, "timestamp":
    /// webhook-timestamp (a string), "body": the parsed JSON body, "at": ms
    /// since the epoch}`.
    pub async fn received(&self) -> Vec<Value> {
        self.peer.list("/received").await
    }

    /// Every hook, in order, accepted or not: `{"id": webhook-id or null,
    /// "timestamp", "status": answered, "accepted": bool, "at"}`.
    pub async fn attempts(&self) -> Vec<Value> {
        self.peer.list("/attempts").await
    }

    /// The hooks that failed verification, in order: `{"id", "reason",
    /// "headers", "body": the raw body text, "at"}`.
    pub async fn failures(&self) -> Vec<Value> {
        self.peer.list("/failures").await
    }
}

/// Yjs editors of the relay's documents (`tests/node/doc_editors.mjs`):
/// each is an unchanged `y-websocket` `WebsocketProvider` (with `ws`) over
/// its own `yjs` `Y.Doc`, editing the `Y.Text` named `body`.
pub struct DocEditors {
    peer: Peer,
}

impl DocEditors {
    /// Starts the editors' process (installing `tests/node`'s dependencies
    /// when needed).
    pub async fn start() -> Self {
        Self {
            peer: Peer::start("doc_editors.mjs", &[]).await,
        }
    }

    /// Opens editor `id` on document `name` of the relay at `relay` with
    /// `token`; returns `{"synced": bool, "closes": [code..]}` once it synced
    /// (or after 10 s).
    pub async fn open(&self, id: &str, relay: SocketAddr, name: &str, token: &str) -> Value {
        let url = format!("ws://{relay}/v1/docs");
        let body = serde_json::json!({ "id": id, "url": url, "name": name, "token": token });
        self.peer.call("POST", "/open", Some(body)).await
    }

    /// Makes `count` insertions of `<prefix><i> ` at random word
    /// boundaries, one per event-loop turn.
    pub async fn edit(&self, id: &str, count: usize, prefix: &str) {
        let body = serde_json::json!({ "id": id, "count": count, "prefix": prefix });
        self.peer.call("POST", "/edit", Some(body)).await;
    }

    /// Takes editor `id` offline (its edits stay local) or back online
    /// (answers once it synced again).
    pub async fn set_online(&self, id: &str, online: bool) -> Value {
        let path = if online { "/connect" } else { "/disconnect" };
        let body = serde_json::json!({ "id": id });
        self.peer.call("POST", path, Some(body)).await
    }

    /// `{"text", "synced", "connected", "denied": [reason..], "closes":
    /// [code..]}` of editor `id`.
    pub async fn state(&self, id: &str) -> Value {
        self.peer
            .call("GET", &format!("/state?id={id}"), None)
            .await
    }

    /// The text of editor `id`.
    pub async fn text(&self, id: &str) -> String {
        self.state(id).await["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}
