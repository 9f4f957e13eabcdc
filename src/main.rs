//! The `rowcast` binary: parses the command line and runs a subcommand.
//! Every failure ends with one line on stderr and a non-zero exit.

mod cli;
mod dev;
mod types;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, MigrateArgs};
use rowcast::config::{Config, ConfigError};
use rowcast::settings::Settings;
use rowcast::shutdown::{self, Shutdown};
use rowcast::Relay;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{}", line.trim());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause only when it adds
/// something (rowcast's errors already quote their cause).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(settings) => serve(*settings).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Dev(args) => dev::run(*args).await,
        Command::Types(args) => types::run(args).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    if settings
        .routes
        .as_ref()
        .is_none_or(|p| p.as_os_str().is_empty())
    {
        return Err(ConfigError::new(
            rowcast::settings::env::ROWCAST_ROUTES,
            "not set: `rowcast serve` needs the routes file of your schema (--routes or ROWCAST_ROUTES; start from routes.toml and docs/routes.md); `rowcast dev` runs the demo with its routes built in",
        )
        .into());
    }
    let config = Config::load(&settings)?;
    rowcast::init_logs(config.debug);
    let shutdown = Shutdown::new();
    let relay = Relay::start(config, shutdown.clone()).await?;
    tokio::spawn(async move {
        shutdown::signal().await;
        tracing::info!("shutting down");
        shutdown.trigger();
    });
    relay.wait().await?;
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    rowcast::init_logs(args.debug);
    let url = args.database_url.unwrap_or_default();
    let database = rowcast::config::DatabaseConfig::from_url(&url).map_err(ConfigError::from)?;
    rowcast::migrate(&database).await?;
    tracing::info!(database = %rowcast::describe(&database.pg), "schema is up to date");
    Ok(())
}
