//! The gateway: the WebSocket protocol v1 (`/v1/ws`) and the HTTP API
//! (history, publish, health, readiness, metrics), on one axum server.

mod access;
pub mod auth;
pub mod connection;
mod docs;
mod error;
mod http;
mod lifecycle;
pub mod limits;
mod openapi;
mod presence;
mod push;
mod readiness;
mod reads;
mod server;
mod socketio;
mod sse;
mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use deadpool_postgres::Pool;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{CorsOrigins, GatewayConfig};
use crate::fanout::Hub;
use crate::ingest::PublishRequest;
use crate::shutdown::Shutdown;
use crate::sink::subscriptions::Registry;
use auth::Verifier;
use connection::{close, ReaderConfig};
use limits::{ConnectLimits, ConnectionCaps, HistoryLimits};
use presence::Presence;
pub use readiness::ReadinessCheck;
use reads::RoomReads;

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What every handler shares: what live connections use, and what only
/// the HTTP API uses (its handlers take the parts they need, [`http`]).
pub(crate) struct GatewayState {
    /// What the WebSocket, SSE and Socket.IO connections use.
    live: Live,
    /// HTTP history reads per IP and per user.
    history_limits: Arc<HistoryLimits>,
    /// Explicit events for the single writer.
    publisher: mpsc::Sender<PublishRequest>,
    /// What `/readyz` checks.
    readiness: Arc<ReadinessCheck>,
    /// Metrics exporter.
    metrics: PrometheusHandle,
    /// Web Push registration, when configured.
    push: Option<Arc<Registry>>,
    /// Open collaborative documents.
    docs: Arc<crate::doc::Docs>,
}

/// What a live connection (WebSocket, SSE, Socket.IO) and the rights
/// re-check use of the gateway: cheap to clone, one per connection task.
#[derive(Clone)]
pub(crate) struct Live(Arc<LiveState>);

impl std::ops::Deref for Live {
    type Target = LiveState;

    fn deref(&self) -> &LiveState {
        &self.0
    }
}

impl axum::extract::FromRef<Arc<GatewayState>> for Live {
    fn from_ref(state: &Arc<GatewayState>) -> Self {
        state.live.clone()
    }
}

/// The fields behind [`Live`].
pub(crate) struct LiveState {
    /// Server settings and limits.
    config: GatewayConfig,
    /// Rooms and fanout.
    hub: Arc<Hub>,
    /// Authorization and history.
    reads: Arc<RoomReads>,
    /// Token verification.
    verifier: Arc<Verifier>,
    /// Settings for connection readers.
    reader: Arc<ReaderConfig>,
    /// Per-IP connect limits.
    connects: ConnectLimits,
    /// Open connections per user and per IP.
    caps: Arc<ConnectionCaps>,
    /// Open connections, for re-checking their rights.
    connections: access::Connections,
    /// Online/offline tracking.
    presence: Presence,
    /// Stop signal.
    shutdown: Shutdown,
}

/// A running gateway.
pub struct Gateway {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The server; ends after shutdown, once clients are closed.
    task: JoinHandle<()>,
    /// State shared with the connections.
    shared: Arc<GatewayState>,
}

impl Gateway {
    /// Binds and starts serving the protocol, the HTTP API and `extra`
    /// routes (for example `rowcast dev`'s page) on one port.
    pub async fn start(
        config: &GatewayConfig,
        hub: Arc<Hub>,
        pool: Pool,
        publisher: mpsc::Sender<PublishRequest>,
        readiness: ReadinessCheck,
        push: Option<Arc<Registry>>,
        shutdown: Shutdown,
        extra: Router,
    ) -> Result<Self, GatewayError> {
        let verifier = Arc::new(Verifier::new(&config.jwt)?);
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| GatewayError::Bind {
                addr: config.bind,
                reason: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| GatewayError::Bind {
            addr: config.bind,
            reason: e.to_string(),
        })?;
        let live = Live(Arc::new(LiveState {
            config: config.clone(),
            hub: hub.clone(),
            reads: Arc::new(RoomReads::new(
                pool.clone(),
                config.limits.auth_cache_ttl,
                hub.clone(),
            )),
            verifier,
            reader: Arc::new(ReaderConfig {
                limits: config.limits.clone(),
                heartbeat: config.heartbeat,
                client_events: config.client_events.clone(),
                throttled_events: config.throttled_events.clone(),
            }),
            connects: ConnectLimits::new(&config.limits),
            caps: ConnectionCaps::new(&config.limits),
            connections: access::Connections::default(),
            presence: Presence::start(pool.clone(), config.presence_grace),
            shutdown: shutdown.clone(),
        }));
        let shared = Arc::new(GatewayState {
            live: live.clone(),
            history_limits: Arc::new(HistoryLimits::new(&config.limits)),
            publisher,
            readiness: Arc::new(readiness),
            metrics: metrics_handle(),
            push,
            docs: Arc::new(crate::doc::Docs::new(pool.clone())),
        });
        tokio::spawn(forget_idle_addresses(shared.clone()));
        tokio::spawn(metrics_upkeep(shared.clone()));
        tokio::spawn(access::run(live));
        let app = router(shared.clone()).merge(extra);
        let task = tokio::spawn(server::serve(
            listener,
            app,
            config.header_timeout,
            close_clients(hub, shutdown),
        ));
        tracing::info!(%addr, "gateway listening (WebSocket at /v1/ws)");
        Ok(Self { addr, task, shared })
    }

    /// Waits until the server stopped (after shutdown) and the presence
    /// changes of the closed connections were stored (bounded: capture must
    /// still be running to store them).
    pub async fn wait(self) {
        let _ = self.task.await;
        if tokio::time::timeout(PRESENCE_FLUSH, self.shared.live.presence.flushed())
            .await
            .is_err()
        {
            tracing::warn!("presence changes of closed connections not all stored before stopping");
        }
    }
}

fn router(shared: Arc<GatewayState>) -> Router {
    let cors = match &shared.live.config.cors {
        CorsOrigins::Any => CorsLayer::new().allow_origin(AllowOrigin::any()),
        CorsOrigins::List(list) => CorsLayer::new().allow_origin(AllowOrigin::list(
            list.iter().filter_map(|o| o.parse().ok()),
        )),
    }
    .allow_methods([
        axum::http::Method::GET,
        axum::http::Method::POST,
        axum::http::Method::DELETE,
    ])
    .allow_headers([
        axum::http::header::AUTHORIZATION,
        axum::http::header::CONTENT_TYPE,
    ]);
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/sse", get(sse::stream))
        .route("/v1/docs/{name}", get(docs::upgrade))
        .route("/v1/rooms/{room}/events", get(http::history))
        .route("/v1/publish", post(http::publish))
        .route("/v1/push/vapid", get(push::vapid))
        .route(
            "/v1/push/subscriptions",
            post(push::subscribe).delete(push::unsubscribe),
        )
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .merge(socketio::router(shared.live.clone()))
        .layer(cors)
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(shared)
}

/// How long shutdown waits for the closed connections' presence changes.
const PRESENCE_FLUSH: Duration = Duration::from_secs(5);

/// On shutdown: stop accepting (new upgrades get 503), close every client
/// with 1001, and wait (bounded) until they are gone.
async fn close_clients(hub: Arc<Hub>, shutdown: Shutdown) {
    shutdown.wait().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        hub.close_all(close::GOING_AWAY);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn forget_idle_addresses(shared: Arc<GatewayState>) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = interval.tick() => {
                shared.live.connects.forget_idle();
                shared.history_limits.forget_idle();
                shared.live.reads.prune();
            }
            _ = shared.live.shutdown.wait() => return,
        }
    }
}

/// How often histogram samples are folded into their buckets, so they do
/// not pile up in memory when nobody scrapes `/metrics`.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

async fn metrics_upkeep(shared: Arc<GatewayState>) {
    let mut interval = tokio::time::interval(METRICS_UPKEEP);
    loop {
        tokio::select! {
            _ = interval.tick() => shared.metrics.run_upkeep(),
            _ = shared.live.shutdown.wait() => return,
        }
    }
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("rowcast_delivery_latency_seconds".into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0,
                    ],
                )
                .expect("static buckets are valid");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}
