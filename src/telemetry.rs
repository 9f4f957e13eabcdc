//! Logs: `tracing` to stderr, info by default, debug with
//! `REALTIME_DEBUG=true`; `RUST_LOG` overrides both. Secrets never reach a
//! log line: the database is described without its password and secret
//! settings print as `[redacted]`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the log subscriber once; later calls do nothing.
pub fn init_logs(debug: bool) {
    let default = if debug {
        "debug,tokio_postgres=info,sqlx=warn,hyper=info,hyper_util=info,tungstenite=info,tokio_tungstenite=info,pgwire_replication=info"
    } else {
        "info,sqlx=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
