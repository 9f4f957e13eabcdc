//! The command line of the `rowcast` binary: its subcommands and their
//! arguments. The relay's own settings are the library's [`Settings`].

use clap::{Args, Parser, Subcommand};
use rowcast::settings::{env, Settings};

/// rowcast: committed Postgres row changes as realtime WebSocket events.
#[derive(Debug, Parser)]
#[command(name = "rowcast", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay: capture, outbox, WebSocket gateway.
    Serve(Box<Settings>),
    /// Apply the relay's own schema (`realtime`) and exit.
    Migrate(MigrateArgs),
    /// Run a throwaway local Postgres with the demo schema, a live demo
    /// writer and the relay; everything is removed on Ctrl-C.
    Dev(Box<DevArgs>),
    /// Print TypeScript declarations of every event's `data` and `old`,
    /// from the routes file and the database's column types.
    Types(TypesArgs),
}

/// Arguments of `rowcast types`.
#[derive(Debug, Args)]
pub struct TypesArgs {
    /// Postgres connection URL (the database whose tables the routes name).
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Path of the routes file (default: the built-in demo routes).
    #[arg(long, env = env::ROWCAST_ROUTES)]
    pub routes: Option<std::path::PathBuf>,
}

/// Arguments of `rowcast migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Postgres connection URL.
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,
    /// `REALTIME_DEBUG=true` turns on debug logs.
    #[arg(long = "debug", env = env::REALTIME_DEBUG, default_value_t = false, value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub debug: bool,
}

/// Arguments of `rowcast dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Seconds between two demo writes (0 turns the demo writer off).
    #[arg(long, env = env::ROWCAST_DEMO_INTERVAL, default_value = "1s")]
    pub demo_interval: String,
    /// Keep the throwaway cluster's files after exit (for inspection).
    #[arg(long)]
    pub keep: bool,
    /// The relay's settings; `DATABASE_URL` set means "use this database
    /// instead of starting one".
    #[command(flatten)]
    pub settings: Settings,
}
