//! Shutdown: one signal handed to every task and placed in every loop's
//! `select!`, so SIGTERM stops accepting, closes clients with 1001, lets the
//! writer finish its transaction and exits cleanly.

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled once, when the relay is asked to stop.
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal; every task waiting in [`wait`](Self::wait) wakes.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the signal has fired.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// Waits `delay`, or less if the signal fires; whether it fired.
    pub async fn sleep(&self, delay: std::time::Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => self.is_triggered(),
            _ = self.wait() => true,
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
