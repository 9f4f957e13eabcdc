//! Processes that tests and the bench start: a relay (whichever binary
//! serves rowcast's gateway; the caller names it) that is killed when its
//! handle is dropped or its parent dies, and the resident memory of a
//! process read from `/proc`.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::http;
use crate::wait::poll_until;

/// Marks a command so that its process gets SIGKILL when the thread that
/// spawned it exits, even when this process is killed with SIGKILL.
pub fn dies_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; it only marks the child.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Resident memory of a process, in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A relay process; SIGKILLed when dropped (also when a test panics), and
/// by the kernel when the thread that started it dies.
pub struct RelayProcess(Child);

impl RelayProcess {
    /// Spawns `command` (a relay binary with its arguments and environment).
    pub fn spawn(mut command: Command) -> std::io::Result<Self> {
        dies_with_parent(&mut command);
        command.spawn().map(Self)
    }

    /// Waits until the relay answers `GET /readyz` with 200 at `addr`;
    /// false when it exited first or `deadline` passed.
    pub async fn ready(&mut self, addr: SocketAddr, deadline: Duration) -> bool {
        poll_until(deadline, || {
            let exited = self.try_wait().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                match http::request(addr, "GET", "/readyz", None, None).await {
                    Ok((200, _)) => Some(true),
                    _ => None,
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// The child process, for its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Its exit status, once it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Sends SIGTERM (the relay's graceful shutdown).
    pub fn terminate(&self) {
        // SAFETY: kill only sends a signal to our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; returns
    /// its exit status when it exited by itself.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        self.terminate();
        let status = poll_until(grace, || {
            let status = self.try_wait();
            async move { status }
        })
        .await;
        self.kill();
        status
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
