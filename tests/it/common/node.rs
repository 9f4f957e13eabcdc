//! Node.js for the tests that use the JavaScript client's toolchain
//! (`clients/js`): whether node and npm are installed, one lock for every
//! test binary sharing `node_modules` and `dist/`, and `npm ci` when the
//! installed dependencies are older than the lock file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// The oldest Node.js the client's toolchain (vitest 4) runs on.
pub const MIN_NODE_MAJOR: u32 = 20;

/// The JavaScript client's directory.
pub fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js")
}

/// Why the Node.js tests cannot run here (node or npm missing), if so.
/// Panics on a node older than [`MIN_NODE_MAJOR`].
pub fn missing() -> Option<&'static str> {
    let Some(major) = node_major() else {
        return Some("`node` is not installed (apt-get install nodejs npm)");
    };
    if !runs(Command::new("npm").arg("--version")) {
        return Some("`npm` is not installed (apt-get install npm)");
    }
    assert!(
        major >= MIN_NODE_MAJOR,
        "the JS client tests need Node.js {MIN_NODE_MAJOR} or newer, found {major}"
    );
    None
}

/// The third-party clients the tests drive (`tests/node`).
pub fn test_clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// Takes the lock on `clients/js` and installs its dependencies when they
/// are stale; the lock is held until the returned file is dropped.
pub fn prepared() -> File {
    prepared_in(&client_dir(), "js_client.lock")
}

/// Installs `tests/node`'s dependencies when they are stale (under a lock
/// that is released on return: once installed, they are only read).
pub fn test_clients_prepared() {
    drop(prepared_in(&test_clients_dir(), "test_clients.lock"));
}

fn prepared_in(dir: &Path, lock_name: &str) -> File {
    let lock = super::file_lock(&Path::new(env!("CARGO_TARGET_TMPDIR")).join(lock_name));
    if dependencies_stale(dir) {
        npm(dir, &["ci", "--no-audit", "--no-fund"], &[]);
    }
    lock
}

/// The major version of the installed `node`, if there is one.
fn node_major() -> Option<u32> {
    let output = Command::new("node").arg("--version").output().ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn runs(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether `npm ci` must run: no `node_modules`, or installed from an older
/// `package.json` or lock file than the ones checked out.
fn dependencies_stale(dir: &Path) -> bool {
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    let wanted = ["package.json", "package-lock.json"]
        .iter()
        .filter_map(|name| modified(&dir.join(name)))
        .max();
    match (installed, wanted) {
        (Some(installed), Some(wanted)) => installed < wanted,
        _ => true,
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|meta| meta.modified()).ok()
}

/// Starts `node <script> <args>` in `tests/node` (installing its
/// dependencies when needed) with stdin and stdout piped to the caller,
/// stderr inherited, and the process killed when the handle is dropped.
pub fn spawn_test_client(script: &str, args: &[&str]) -> tokio::process::Child {
    test_clients_prepared();
    let dir = test_clients_dir();
    tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start node {script}: {e}"))
}

/// Runs npm in `dir` with its output streamed, and fails the test if it fails.
pub fn npm(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    println!("running npm {} in {}", args.join(" "), dir.display());
    let mut command = Command::new("npm");
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("could not run npm: {e}"));
    assert!(status.success(), "npm {} failed: {status}", args.join(" "));
}
