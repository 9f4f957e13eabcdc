//! What `/readyz` checks. The database check has a session of its own, so
//! that no amount of history reads, rights checks or publishes in front of
//! it in the runtime pool can make a healthy relay look unready; and
//! concurrent probes share one query, so a flood of them costs the
//! database one round trip per [`FRESH`].

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::capture::CaptureStatus;

/// How long one answer of the database stands for the probes after it.
const FRESH: Duration = Duration::from_millis(500);

/// Longest the database gets to answer before it counts as unreachable.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The relay's readiness: the database answers as a primary and capture
/// runs.
pub struct ReadinessCheck {
    /// One session, for this check only.
    probe: Pool,
    capture: Arc<CaptureStatus>,
    /// The last answer of the database and when it was given; probes that
    /// arrive while one is asked wait for its answer.
    last: Mutex<Option<(Instant, bool)>>,
}

impl ReadinessCheck {
    /// A check that asks the database through `probe` (a pool of one
    /// session that nothing else uses) and reads capture's state.
    pub fn new(probe: Pool, capture: Arc<CaptureStatus>) -> Self {
        Self {
            probe,
            capture,
            last: Mutex::new(None),
        }
    }

    /// Whether the database answers, as a primary: a standby takes no
    /// writes.
    pub(super) async fn database(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, up)) = *last {
            if at.elapsed() < FRESH {
                return up;
            }
        }
        let up = tokio::time::timeout(ANSWER_WITHIN, async {
            let client = self.probe.get().await.ok()?;
            let row = client
                .query_one("SELECT NOT pg_is_in_recovery()", &[])
                .await
                .ok()?;
            row.get::<_, bool>(0).then_some(())
        })
        .await
        .ok()
        .flatten()
        .is_some();
        *last = Some((Instant::now(), up));
        up
    }

    /// Whether capture runs.
    pub(super) fn capture(&self) -> bool {
        self.capture.is_running()
    }
}
