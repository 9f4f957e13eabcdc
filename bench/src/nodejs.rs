//! The Node.js parts of the bench: the Socket.IO load client
//! (`bench/node/`, socket.io-client) and the seed stand-in (`bench/seed/`,
//! a Socket.IO server fed by `pg_notify`). Each directory has its own
//! `package.json` and `package-lock.json`; `npm ci` installs them the first
//! time they are needed (when `node_modules` is missing).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::sync::Mutex;

/// One install at a time (several client processes start together).
static INSTALLING: Mutex<()> = Mutex::const_new(());

/// Where the Socket.IO load client lives.
pub fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Where the seed stand-in lives.
pub fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seed")
}

/// Runs `npm ci` in `dir` unless its `node_modules` is there already.
pub async fn install(dir: &Path) -> anyhow::Result<()> {
    let _one = INSTALLING.lock().await;
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    eprintln!("bench: npm ci in {}", dir.display());
    let status = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .await
        .context("running npm (Node.js 20 and npm are needed for the socketio and seed paths)")?;
    if !status.success() {
        bail!("npm ci failed in {} ({status})", dir.display());
    }
    Ok(())
}
