//! schemathesis, the OpenAPI validator the HTTP API's tests run against a
//! live relay: installed with pip into a virtual environment under the
//! target directory (pinned versions, reused while they match), and run
//! with a token against the relay's own `/v1/openapi.json`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The schemathesis release the tests run (its checks change between
/// releases; a new one is a deliberate update).
pub const VERSION: &str = "4.32.5";

/// The Hypothesis release that generates schemathesis's test cases (with
/// it pinned too, the same seed gives the same cases).
const HYPOTHESIS: &str = "6.170.17";

/// What pip installs.
fn requirements() -> [String; 2] {
    [
        format!("schemathesis=={VERSION}"),
        format!("hypothesis=={HYPOTHESIS}"),
    ]
}

/// A schemathesis installation.
pub struct Schemathesis {
    /// Its `schemathesis` executable.
    bin: PathBuf,
}

/// The virtual environment's directory.
fn venv() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv")
}

/// schemathesis [`VERSION`], installed when missing; `Err` says why it is
/// not available here (no python3, no venv module, pip failed).
pub fn installed() -> Result<Schemathesis, String> {
    let _lock = super::file_lock(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis.lock"));
    let dir = venv();
    let found = Schemathesis {
        bin: dir.join("bin/schemathesis"),
    };
    // Written last: a venv whose install did not finish is made again.
    let marker = dir.join("rowcast-requirements.txt");
    let wanted = requirements().join("\n");
    let current = std::fs::read_to_string(&marker).is_ok_and(|text| text == wanted);
    if current && found.version().as_deref() == Some(VERSION) {
        return Ok(found);
    }
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir))
    .map_err(|e| format!("`python3 -m venv` failed: {e}"))?;
    run(Command::new(dir.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            // Offline, fail (and skip) within a minute rather than retry for long.
            "--retries",
            "1",
            "--timeout",
            "20",
        ])
        .args(requirements()))
    .map_err(|e| format!("`pip install {}` failed: {e}", requirements().join(" ")))?;
    match found.version() {
        Some(version) if version == VERSION => {
            std::fs::write(&marker, wanted).map_err(|e| e.to_string())?;
            Ok(found)
        }
        other => Err(format!("installed schemathesis reports version {other:?}")),
    }
}

impl Schemathesis {
    /// The installed version, if it runs.
    fn version(&self) -> Option<String> {
        let output = Command::new(&self.bin).arg("--version").output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        if !output.status.success() {
            return None;
        }
        text.trim().rsplit(' ').next().map(str::to_string)
    }

    /// Runs `schemathesis run` against the relay at `addr` with `token` as
    /// `Authorization: Bearer`, the settings file `config` and the extra
    /// `args`; returns the command line (token elided) and its output.
    pub fn run(
        &self,
        config: &Path,
        addr: SocketAddr,
        token: &str,
        args: &[&str],
    ) -> (String, Output) {
        let schema = format!("http://{addr}/v1/openapi.json");
        let header = format!("Authorization: Bearer {token}");
        let mut command = Command::new(&self.bin);
        command
            .arg("--config-file")
            .arg(config)
            .arg("run")
            .arg(&schema)
            .args(["--header", &header])
            .args(args)
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let shown = format!(
            "schemathesis --config-file {} run {schema} --header 'Authorization: Bearer <token>' {}",
            config.display(),
            args.join(" ")
        );
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.bin.display()));
        (shown, output)
    }
}

/// Runs a command to completion; `Err` with its output when it could not
/// start or failed.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}
