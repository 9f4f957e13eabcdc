//! The relay: the stages wired together. [`Relay::start`] reaches the
//! database, applies the schema, loads and checks the routes, installs
//! capture, and starts the capture loop, retention and the gateway; it
//! returns once everything is running.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bus::{self, BusError};
use crate::capture::{self, CaptureError, CaptureStatus, SourceKind};
use crate::config::{Config, Retention, RoutesSource};
use crate::db::{self, DbError};
use crate::fanout::Hub;
use crate::gateway::{Gateway, GatewayError, ReadinessCheck};
use crate::ingest::{Capture, Ingest, Leadership, PublishRequest, Start};
use crate::outbox::{self, Outbox};
use crate::route::{RouteError, Router};
use crate::schema::{self, MigrateError};
use crate::shutdown::Shutdown;
use crate::sink::journal::Journal;
use crate::sink::{self, PushSink, SigningSecret, Sink, WebhookSink};

/// Why the relay could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database could not be reached or refused a startup query.
    #[error("database {target}: {error}")]
    Database {
        /// Where it pointed, without the password.
        target: String,
        /// What went wrong (already in the message, so not a separate cause).
        error: DbError,
    },
    /// The relay's schema could not be applied.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The routes file is unusable.
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// Capture failed for good.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The gateway could not start.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The bus between nodes could not start.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A sink (webhook, Web Push) cannot be set up as configured.
    #[error("{0}")]
    Sink(String),
    /// A background task panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Explicit events waiting for the single writer, at most.
const PUBLISH_QUEUE: usize = 4096;

/// Sessions of the ingest pool: the outbox transaction, the source's
/// bookkeeping, slot heartbeats and retention. Client requests never take
/// them, so capture never waits behind a burst of joins or replays.
const INGEST_SESSIONS: usize = 4;

/// A running relay.
pub struct Relay {
    /// Where the gateway listens.
    pub addr: std::net::SocketAddr,
    /// The WebSocket and HTTP server.
    gateway: Gateway,
    /// Rooms and members; also a tap of every stored event.
    pub hub: Arc<Hub>,
    /// The pool of client requests (authorization, replay, history).
    pub pool: Pool,
    /// The capture mechanism that runs.
    pub mode: SourceKind,
    /// Explicit events (HTTP publish, presence) for the writer.
    pub publisher: mpsc::Sender<PublishRequest>,
    /// Whether capture is up, for readiness.
    pub capture_status: Arc<CaptureStatus>,
    /// Stops every task.
    shutdown: Shutdown,
    /// Stops capture: after the gateway, so the closing connections'
    /// presence changes are still stored.
    capture_stop: Shutdown,
    /// The capture loop; its end ends the relay.
    capture: JoinHandle<Result<(), CaptureError>>,
    /// Retention, stopped with the relay.
    retention: JoinHandle<()>,
    /// The sinks' driver, stopped with the relay.
    sinks: JoinHandle<()>,
}

impl Relay {
    /// Starts every stage; fails with a clear error when a prerequisite is
    /// missing (database, schema, routes).
    pub async fn start(config: Config, shutdown: Shutdown) -> Result<Self, RelayError> {
        Self::start_with(config, shutdown, |_| axum::Router::new()).await
    }

    /// Like [`start`](Self::start), also serving the routes `routes` makes
    /// on the gateway's port (they must not overlap the relay's own paths);
    /// it gets the journal of this node's sink deliveries.
    pub async fn start_with(
        config: Config,
        shutdown: Shutdown,
        routes: impl FnOnce(Arc<Journal>) -> axum::Router,
    ) -> Result<Self, RelayError> {
        let target = db::describe(&config.database.pg);
        let database_error = |error| RelayError::Database {
            target: target.clone(),
            error,
        };
        let pool = db::pool(&config.database).map_err(database_error)?;
        db::wait_until_reachable(&pool, config.database.startup_timeout)
            .await
            .map_err(database_error)?;
        schema::migrate(&config.database).await?;
        let router = Arc::new(match &config.routes {
            RoutesSource::Builtin => Router::builtin()?,
            RoutesSource::File(path) => Router::from_path(path)?,
        });
        let catalog = capture::catalog(&pool, &router)
            .await
            .map_err(database_error)?;
        router.check(&catalog)?;
        let journal = Arc::new(Journal::default());
        let webhooks = webhook_sinks(&router, &config, &journal)?;
        let push = match &config.push {
            Some(push) => Some(
                PushSink::new(push, router.sinks().push.clone(), journal.clone())
                    .map_err(RelayError::Sink)?,
            ),
            None => None,
        };
        let mut names: Vec<String> = webhooks.iter().map(WebhookSink::cursor_name).collect();
        names.extend(push.iter().map(|(sink, _)| sink.cursor_name()));
        let client = pool.get().await.map_err(|e| database_error(e.into()))?;
        sink::register(&client, &names)
            .await
            .map_err(database_error)?;
        drop(client);
        let (mode, why) = capture::resolve_kind(&pool, config.capture.mode)
            .await
            .map_err(database_error)?;
        tracing::info!(mode = mode.name(), reason = %why, "capture mode selected");
        // The first attempt to lead is made here, so that a node that leads
        // has installed capture before `start` returns.
        let mut leadership = Leadership::new(config.database.clone());
        let leading = leadership.try_acquire().await.map_err(database_error)?;
        let start = if leading {
            Start::Leading(capture::install(mode, &pool, &router, &config.capture).await?)
        } else {
            tracing::info!("another node leads capture: this node follows the outbox");
            Start::Following
        };

        let hub = Arc::new(Hub::new(0));
        let stream = bus::start(&config.bus, &config.database, &pool, &hub, &shutdown).await?;
        let ingest_pool = db::pool_of(&config.database, INGEST_SESSIONS, "rowcast ingest")
            .map_err(database_error)?;
        let outbox = Outbox::open(ingest_pool.clone(), hub.clone())
            .await
            .map_err(database_error)?;
        hub.advance_head(outbox.delivered());
        let (publisher, requests) = mpsc::channel(PUBLISH_QUEUE);
        let capture_status = Arc::new(CaptureStatus::default());
        let readiness_pool =
            db::pool_of(&config.database, 1, "rowcast readiness").map_err(database_error)?;
        let gateway = Gateway::start(
            &config.gateway,
            hub.clone(),
            pool.clone(),
            publisher.clone(),
            ReadinessCheck::new(readiness_pool, capture_status.clone()),
            push.as_ref().map(|(_, registry)| registry.clone()),
            shutdown.clone(),
            routes(journal),
        )
        .await?;
        let capture_stop = Shutdown::new();
        let ingest = Ingest::new(
            outbox,
            router,
            requests,
            capture_status.clone(),
            capture_stop.clone(),
            config.capture.batch_size,
        );
        let capture = tokio::spawn(ingest.run(Capture {
            kind: mode,
            pool: ingest_pool.clone(),
            database: config.database.clone(),
            config: config.capture.clone(),
            leadership,
            start,
            stream,
        }));
        let retention = tokio::spawn(retain(ingest_pool, config.retention, shutdown.clone()));
        let sinks = tokio::spawn(sink::run(
            config.database.clone(),
            hub.clone(),
            move || {
                let webhooks = webhooks.iter().map(|w| Sink::Webhook(Box::new(w.clone())));
                webhooks
                    .chain(push.iter().map(|(sink, _)| Sink::Push(sink.clone())))
                    .collect()
            },
            shutdown.clone(),
        ));
        Ok(Self {
            addr: gateway.addr,
            gateway,
            hub,
            pool,
            mode,
            publisher,
            capture_status,
            shutdown,
            capture_stop,
            capture,
            retention,
            sinks,
        })
    }

    /// Asks every task to stop.
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Waits until the relay stopped: after [`shutdown`](Self::shutdown),
    /// or when capture failed for good (then every task is stopped too).
    ///
    /// The gateway stops first (clients get 1001, their presence changes
    /// are stored), then capture finishes its transaction and stops.
    pub async fn wait(self) -> Result<(), RelayError> {
        let mut capture = self.capture;
        let ended = tokio::select! {
            result = &mut capture => Some(result),
            _ = self.shutdown.wait() => None,
        };
        self.shutdown.trigger();
        self.gateway.wait().await;
        self.capture_stop.trigger();
        let result = match ended {
            Some(result) => result,
            None => capture.await,
        };
        let _ = self.retention.await;
        let _ = self.sinks.await;
        match result {
            Ok(result) => result.map_err(RelayError::from),
            Err(e) => Err(RelayError::Internal(e.to_string())),
        }
    }
}

/// The routes file's webhooks, each with its secret from the environment.
fn webhook_sinks(
    router: &Router,
    config: &Config,
    journal: &Arc<Journal>,
) -> Result<Vec<WebhookSink>, RelayError> {
    let mut sinks = Vec::new();
    for webhook in &router.sinks().webhooks {
        let variable = &webhook.secret_env;
        let given = config
            .sink_secrets
            .get(variable)
            .map(|s| s.expose().to_string());
        let value = given
            .or_else(|| std::env::var(variable).ok())
            .ok_or_else(|| {
                RelayError::Sink(format!(
                    "webhook {}: {variable} is not set (it holds the whsec_ signing secret)",
                    webhook.name
                ))
            })?;
        let secret = SigningSecret::parse(&value).map_err(|why| {
            RelayError::Sink(format!("webhook {}: {variable} {why}", webhook.name))
        })?;
        sinks.push(
            WebhookSink::new(webhook.clone(), secret, journal.clone()).map_err(RelayError::Sink)?,
        );
    }
    Ok(sinks)
}

/// Runs retention every interval until shutdown.
async fn retain(pool: Pool, retention: Retention, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(retention.interval.max(Duration::from_millis(100)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if let Err(e) = outbox::retain(&pool, &retention).await {
                    tracing::warn!(error = %e, "retention failed; will retry");
                }
            }
            _ = shutdown.wait() => return,
        }
    }
}
