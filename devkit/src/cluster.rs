//! A throwaway local Postgres cluster, started from the system's Postgres
//! server binaries, for `rowcast dev`, the test suite and the benchmarks.
//!
//! The cluster lives in its own temporary directory, listens on a free
//! loopback port, has `wal_level=logical`, and trusts local connections.
//! Postgres refuses to run as root, so when rowcast runs as root the server
//! runs as the `postgres` system user. A small watchdog process removes the
//! cluster when the process that started it exits, even after a SIGKILL.
//! When no server binaries are installed they are installed from the
//! system's package manager (Debian/Ubuntu `apt-get install postgresql`).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

#[cfg(feature = "testing")]
mod standby;
#[cfg(feature = "testing")]
pub use standby::STANDBY_SLOT;

/// Why a local cluster could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No server binaries, and installing them failed or was not possible.
    #[error("PostgreSQL server binaries not found: {0}")]
    NoBinaries(String),
    /// A setup step failed.
    #[error("local Postgres: {0}")]
    Setup(String),
}

fn setup(what: impl std::fmt::Display) -> ClusterError {
    ClusterError::Setup(what.to_string())
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `fsync` and `full_page_writes`; off makes tests faster and only
    /// risks data on an OS crash, which a throwaway cluster does not care about.
    pub durable: bool,
    /// `max_connections`.
    pub max_connections: u32,
    /// Keep the directory after exit, for inspection.
    pub keep: bool,
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<(String, String)>,
    /// Serve TLS with this certificate and key, and refuse TCP connections
    /// without it (`hostnossl ... reject`); the Unix socket stays open.
    pub tls_only: Option<TlsFiles>,
    /// The server binaries folder (see [`releases::binaries`] for another
    /// major version); the system's newest Postgres when `None`.
    ///
    /// [`releases::binaries`]: crate::releases::binaries
    pub bin: Option<PathBuf>,
}

/// A server certificate and its key (PEM files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            durable: false,
            max_connections: 400,
            keep: false,
            settings: Vec::new(),
            tls_only: None,
            bin: None,
        }
    }
}

/// A running throwaway cluster; stopped and removed on drop.
pub struct Cluster {
    /// Server binaries directory.
    bin: PathBuf,
    /// The cluster's root directory (data, socket, log).
    root: PathBuf,
    /// Loopback port.
    port: u16,
    /// The user the server runs as when rowcast runs as root.
    run_as: Option<(u32, u32)>,
    /// The watchdog; closing its stdin stops and removes the cluster.
    watchdog: Option<Child>,
}

impl Cluster {
    /// Initializes and starts a new cluster.
    pub fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let bin = match &options.bin {
            Some(bin) => bin.clone(),
            None => binaries()?,
        };
        let cluster = Self::prepare(bin, options.keep)?;
        cluster.init(options)?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// A root folder, a port and a watchdog for a cluster not yet made.
    fn prepare(bin: PathBuf, keep: bool) -> Result<Self, ClusterError> {
        let run_as = server_user()?;
        let root = make_root(run_as)?;
        let port = free_port()?;
        let mut cluster = Self {
            bin,
            root,
            port,
            run_as,
            watchdog: None,
        };
        cluster.watchdog = Some(cluster.spawn_watchdog(keep)?);
        Ok(cluster)
    }

    /// The server's major version (`PG_VERSION` of its data folder).
    pub fn version(&self) -> u32 {
        std::fs::read_to_string(self.data().join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A connection string over the cluster's Unix socket (trusted, and
    /// open even when TCP requires TLS).
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.root.display(),
            self.port
        )
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// Stops the server (`fast`: disconnect clients, checkpoint; `immediate`:
    /// like a crash).
    pub fn stop(&self, mode: StopMode) -> Result<(), ClusterError> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        self.pg_ctl(&["stop", "-w", "-t", "60", "-m", mode])
    }

    /// Starts the server again after [`stop`](Self::stop).
    pub fn start_server(&self) -> Result<(), ClusterError> {
        let log = self.log_path();
        let log = log.to_string_lossy();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log])
    }

    /// Stops and starts the server.
    pub fn restart(&self, mode: StopMode) -> Result<(), ClusterError> {
        self.stop(mode)?;
        self.start_server()
    }

    fn init(&self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let data = self.root.join("data");
        let status = self
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| setup(format!("initdb: {e}")))?;
        if !status.status.success() {
            return Err(setup(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            )));
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(setup)?;
        writeln!(conf, "\n# rowcast throwaway cluster").map_err(setup)?;
        for (key, value) in self.settings(options) {
            writeln!(conf, "{key} = {value}").map_err(setup)?;
        }
        if let Some(files) = &options.tls_only {
            self.serve_tls_only(&data, files, &mut conf)?;
        }
        Ok(())
    }

    /// Copies the certificate and key into the data directory (the key
    /// readable by the server only), turns `ssl` on, and lets TCP clients
    /// in only over TLS.
    fn serve_tls_only(
        &self,
        data: &Path,
        files: &TlsFiles,
        conf: &mut std::fs::File,
    ) -> Result<(), ClusterError> {
        for (from, name) in [(&files.cert, "server.crt"), (&files.key, "server.key")] {
            let to = data.join(name);
            std::fs::copy(from, &to).map_err(setup)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).map_err(setup)?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid)).map_err(setup)?;
            }
        }
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )
        .map_err(setup)?;
        let hba = "local all all trust\n\
                   local replication all trust\n\
                   hostssl all all 127.0.0.1/32 trust\n\
                   hostssl replication all 127.0.0.1/32 trust\n\
                   hostnossl all all all reject\n\
                   hostnossl replication all all reject\n";
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(setup)
    }

    fn settings(&self, options: &ClusterOptions) -> Vec<(String, String)> {
        let durable = if options.durable { "on" } else { "off" };
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", "'127.0.0.1'".to_string()),
            ("port", self.port.to_string()),
            (
                "unix_socket_directories",
                format!("'{}'", self.root.display()),
            ),
            ("wal_level", "logical".into()),
            ("max_wal_senders", "64".into()),
            ("max_replication_slots", "64".into()),
            ("max_connections", options.max_connections.to_string()),
            ("fsync", durable.into()),
            ("full_page_writes", durable.into()),
            ("shared_buffers", "128MB".into()),
            ("timezone", "'UTC'".into()),
            ("log_timezone", "'UTC'".into()),
            ("log_min_messages", "warning".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        settings.extend(options.settings.iter().cloned());
        settings
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), ClusterError> {
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.root.join("data"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| setup(format!("pg_ctl: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Err(setup(format!(
            "pg_ctl {} failed: {} {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&output.stderr).trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )))
    }

    /// A command for a server binary, run as the server user when needed.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .current_dir(&self.root)
            .env("LC_ALL", "C")
            .env("TZ", "UTC");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// A shell that waits for its stdin to close (this process exiting, or
    /// the cluster being dropped), then stops the server like a crash would
    /// and removes the directory. It runs in its own process group so a
    /// terminal's Ctrl-C does not reach it before rowcast has shut down.
    fn spawn_watchdog(&self, keep: bool) -> Result<Child, ClusterError> {
        let script = r#"
            read _ignored
            pidfile="$ROOT/data/postmaster.pid"
            if [ -f "$pidfile" ]; then
                pid=$(head -n 1 "$pidfile")
                kill -QUIT "$pid" 2>/dev/null
                i=0
                while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
                kill -KILL "$pid" 2>/dev/null
            fi
            [ "$KEEP" = 1 ] || rm -rf "$ROOT"
        "#;
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("ROOT", &self.root)
            .env("KEEP", if keep { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| setup(format!("watchdog: {e}")))
    }
}

/// How [`Cluster::stop`] stops the server.
#[derive(Clone, Copy, Debug)]
pub enum StopMode {
    /// Disconnect clients and shut down cleanly.
    Fast,
    /// Stop at once; the next start runs crash recovery.
    Immediate,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Finds the server binaries, installing them when missing.
pub fn binaries() -> Result<PathBuf, ClusterError> {
    if let Some(found) = find_binaries() {
        return Ok(found);
    }
    install()?;
    find_binaries().ok_or_else(|| {
        ClusterError::NoBinaries("installed the postgresql package but found no initdb".into())
    })
}

fn find_binaries() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("ROWCAST_PG_BIN").map(PathBuf::from) {
        return has_initdb(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let dir = entry.path().join("bin");
            has_initdb(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_pg_config
        .into_iter()
        .chain(on_path)
        .find(|dir| has_initdb(dir))
}

/// Installs the Debian/Ubuntu `postgresql` package, as root or with
/// password-less sudo.
fn install() -> Result<(), ClusterError> {
    let is_root = unsafe { libc::geteuid() } == 0;
    let sudo_ok = !is_root
        && Command::new("sudo")
            .args(["-n", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !is_root && !sudo_ok {
        return Err(ClusterError::NoBinaries(
            "install them (apt-get install postgresql) or set DATABASE_URL to an existing server"
                .into(),
        ));
    }
    if Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Err(ClusterError::NoBinaries(
            "no apt-get here: install the PostgreSQL server (14 or newer) or set DATABASE_URL"
                .into(),
        ));
    }
    eprintln!("rowcast: installing the PostgreSQL server binaries (apt-get install postgresql)...");
    for args in [
        &["update", "-qq"][..],
        &[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "postgresql",
        ][..],
    ] {
        let mut command = if is_root {
            Command::new("apt-get")
        } else {
            Command::new("sudo")
        };
        if !is_root {
            command.args(["-n", "apt-get"]);
        }
        let status = command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| ClusterError::NoBinaries(format!("apt-get: {e}")))?;
        if !status.success() {
            return Err(ClusterError::NoBinaries(format!(
                "apt-get {} failed",
                args[0]
            )));
        }
    }
    Ok(())
}

/// The uid/gid to run the server as: `postgres` when running as root
/// (created when missing), nobody else otherwise.
fn server_user() -> Result<Option<(u32, u32)>, ClusterError> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    if let Some(ids) = lookup_user("postgres") {
        return Ok(Some(ids));
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/bin/sh",
            "postgres",
        ])
        .status()
        .map_err(|e| setup(format!("useradd postgres: {e}")))?;
    if !status.success() {
        return Err(setup("could not create the postgres system user"));
    }
    lookup_user("postgres")
        .map(Some)
        .ok_or_else(|| setup("the postgres system user is missing"))
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; the
    // fields are read at once, before any other call could overwrite it.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

fn make_root(run_as: Option<(u32, u32)>) -> Result<PathBuf, ClusterError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let root = std::env::temp_dir().join(format!(
        "rowcast-pg-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| setup(format!("{}: {e}", root.display())))?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).map_err(setup)?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&root, Some(uid), Some(gid)).map_err(setup)?;
    }
    Ok(root)
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(setup)?;
    Ok(listener.local_addr().map_err(setup)?.port())
}
