//! `rowcast dev`: the relay against a throwaway local Postgres with the demo
//! schema, demo rows and a writer that changes demo rows every second, so
//! events can be watched as they are stored, on stdout and in the live
//! inspector page served at `/` ([`inspector`]). Ctrl-C stops everything and
//! removes the cluster. With `DATABASE_URL` set, that database is used
//! instead (the demo schema is applied to it; it is re-runnable).

mod inspector;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::Pool;
use rowcast::config::{Config, ConfigError};
use rowcast::parse_duration;
use rowcast::shutdown::{self, Shutdown};
use rowcast::Hub;
use rowcast::Relay;
use rowcast_devkit::cluster::{Cluster, ClusterOptions};
use rowcast_devkit::{demo, token};

use crate::cli::DevArgs;

/// Runs the dev environment until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut settings = args.settings.clone();
    rowcast::init_logs(settings.debug);
    let interval = parse_duration(&args.demo_interval).ok_or_else(|| {
        ConfigError::new(
            rowcast::settings::env::ROWCAST_DEMO_INTERVAL,
            "not a duration (for example 1s)",
        )
    })?;
    let cluster = match settings
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        Some(_) => None,
        None => Some(start_cluster(args.keep).await?),
    };
    if let Some(cluster) = &cluster {
        settings.database_url = Some(cluster.url("rowcast"));
    }
    if settings
        .jwt_secret
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        settings.jwt_secret = Some(random_secret());
    }
    let config = Config::load(&settings)?;
    prepare(&config).await?;

    let shutdown = Shutdown::new();
    let secret = config
        .gateway
        .jwt
        .secret
        .as_ref()
        .map(|s| s.expose().to_string())
        .unwrap_or_default();
    let relay = Relay::start_with(config.clone(), shutdown.clone(), |journal| {
        inspector::routes(secret, journal)
    })
    .await?;
    banner(&config, &relay);
    let printer = tokio::spawn(print_events(relay.hub.clone(), shutdown.clone()));
    let demo = (!interval.is_zero())
        .then(|| tokio::spawn(writer::run(relay.pool.clone(), interval, shutdown.clone())));
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        eprintln!("\nrowcast dev: stopping...");
        stopper.trigger();
    });
    let result = relay.wait().await;
    shutdown.trigger();
    let _ = printer.await;
    if let Some(demo) = demo {
        let _ = demo.await;
    }
    drop(cluster);
    result.map_err(Into::into)
}

async fn start_cluster(keep: bool) -> anyhow::Result<Cluster> {
    eprintln!("rowcast dev: starting a throwaway Postgres (wal_level=logical)...");
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::start(&ClusterOptions {
            keep,
            durable: true,
            ..ClusterOptions::default()
        })
    })
    .await??;
    let (client, connection) =
        tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
            .await
            .context("connecting to the throwaway cluster")?;
    tokio::spawn(connection);
    client.batch_execute("CREATE DATABASE rowcast").await?;
    Ok(cluster)
}

/// Applies the demo schema, rules and rows.
async fn prepare(config: &Config) -> anyhow::Result<()> {
    let (client, connection) = config
        .database
        .pg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "database {}: {}",
                rowcast::describe(&config.database.pg),
                rowcast::describe_pg_error(&e)
            )
        })?;
    tokio::spawn(connection);
    demo::apply_schema(&client)
        .await
        .context("applying sql/demo.sql")?;
    demo::insert_rows(&client)
        .await
        .context("applying sql/demo_rows.sql")?;
    Ok(())
}

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn banner(config: &Config, relay: &Relay) {
    let secret = config
        .gateway
        .jwt
        .secret
        .as_ref()
        .map(|s| s.expose())
        .unwrap_or_default();
    let token = token::hs256(
        secret,
        serde_json::json!("2"),
        Duration::from_secs(86_400),
        serde_json::json!({}),
    );
    let port = relay.addr.port();
    eprintln!();
    eprintln!("rowcast dev is running ({} capture)", relay.mode.name());
    eprintln!("  database   {}", rowcast::describe(&config.database.pg));
    eprintln!("  inspector  http://localhost:{port}/");
    eprintln!("  websocket  ws://localhost:{port}/v1/ws?token={token}");
    eprintln!("             (a token for demo user 2, \"bob\", valid for 24 hours)");
    eprintln!("  try        {{\"type\":\"join\",\"room\":\"user_2\"}}  {{\"type\":\"join\",\"room\":\"content_1\",\"since\":0}}");
    eprintln!("  history    curl -H 'Authorization: Bearer {token}' http://localhost:{port}/v1/rooms/content_1/events");
    eprintln!("  sse        curl -N 'http://localhost:{port}/v1/sse?rooms=content_1,user_2&since=0&token={token}'");
    eprintln!("  socket.io  io(\"http://localhost:{port}\", {{ auth: {{ token }} }}) with socket.io-client 4.x");
    eprintln!("  writer     changes a demo row every second; stored events print below");
    eprintln!("  stop       Ctrl-C (the throwaway cluster is removed)");
    eprintln!();
}

async fn print_events(hub: Arc<Hub>, shutdown: Shutdown) {
    let mut tap = hub.tap();
    loop {
        tokio::select! {
            event = tap.recv() => match event {
                Ok(event) => println!(
                    "seq={:<6} {:<26} rooms={} data={}{}",
                    event.seq,
                    event.name,
                    event.rooms.join(","),
                    event.data,
                    event.old.as_ref().map(|o| format!(" old={o}")).unwrap_or_default()
                ),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("({n} events not shown)");
                }
                Err(_) => return,
            },
            _ = shutdown.wait() => return,
        }
    }
}

/// Waits a little between demo actions, or stops.
async fn pause(interval: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(interval) => true,
        _ = shutdown.wait() => false,
    }
}

/// The pool's first client, retried a few times while the relay settles.
async fn client(pool: &Pool) -> Option<deadpool_postgres::Client> {
    pool.get().await.ok()
}
