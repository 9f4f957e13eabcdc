//! The JavaScript client (`clients/js`) as part of `cargo test`: its unit
//! tests, its integration tests against this crate's `rowcast` binary and
//! the test Postgres, and its browser test, all through `npm test`.
//! Skipped, with a message, where node or npm is not installed.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// The oldest Node.js the client's toolchain (vitest 4) runs on.
const MIN_NODE_MAJOR: u32 = 20;

#[test]
fn js_client_suite() {
    let Some(node_major) = node_major() else {
        println!(
            "skipping the JS client tests: `node` is not installed (apt-get install nodejs npm)"
        );
        return;
    };
    if !runs(Command::new("npm").arg("--version")) {
        println!("skipping the JS client tests: `npm` is not installed (apt-get install npm)");
        return;
    }
    assert!(
        node_major >= MIN_NODE_MAJOR,
        "the JS client tests need Node.js {MIN_NODE_MAJOR} or newer, found {node_major}"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    // Another cargo run in this checkout would share node_modules and dist/.
    let _lock = lock(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("js_client.lock"));
    if dependencies_stale(&dir) {
        npm(&dir, &["ci", "--no-audit", "--no-fund"], &[]);
    }
    npm(&dir, &["run", "build"], &[]);
    let (admin_url, template) = common::server_urls();
    npm(
        &dir,
        &["test"],
        &[
            ("ROWCAST_BIN", env!("CARGO_BIN_EXE_rowcast")),
            ("ROWCAST_TEST_ADMIN_URL", &admin_url),
            ("ROWCAST_TEST_TEMPLATE", &template),
        ],
    );
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

/// Runs npm in `dir` with its output streamed, and fails the test if it fails.
fn npm(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
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

/// An exclusive lock (flock) held until the returned file is dropped or
/// the process ends.
fn lock(path: &Path) -> File {
    use std::os::fd::AsRawFd;
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        locked,
        0,
        "lock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    file
}
