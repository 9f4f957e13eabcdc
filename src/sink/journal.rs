//! The last deliveries of this node's sinks, newest last, in a bounded
//! ring: what `rowcast dev`'s inspector lists. It names a webhook by its
//! name and a push service by its origin, never a URL's path or query (a
//! push endpoint's path is the capability to push to that browser).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

/// Deliveries kept.
const KEEP: usize = 256;

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The receiver accepted it.
    Delivered,
    /// It failed and will be tried again.
    Retry,
    /// It failed for the last time (a webhook's dead letter).
    GaveUp,
    /// The push service said the subscription is gone (404/410).
    Gone,
}

/// One attempt of one event.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// Numbered from 1 in the order attempts ended on this node.
    pub id: u64,
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    /// `webhook:<name>` or `push`.
    pub sink: String,
    /// The webhook's name, or the push service's origin.
    pub target: String,
    pub seq: i64,
    pub event: String,
    /// Its number among the event's attempts to this target, from 1.
    pub attempt: u32,
    pub outcome: Outcome,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Why it failed, without URLs.
    pub error: Option<String>,
    /// How long the request took.
    pub ms: u64,
}

/// The ring.
#[derive(Debug, Default)]
pub struct Journal {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    attempts: VecDeque<Attempt>,
    last_id: u64,
}

impl Journal {
    /// Notes an attempt (its `id` and `at` are set here); the oldest goes
    /// once `KEEP` are held.
    pub fn note(&self, mut attempt: Attempt) {
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.last_id += 1;
        attempt.id = ring.last_id;
        attempt.at = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        if ring.attempts.len() == KEEP {
            ring.attempts.pop_front();
        }
        ring.attempts.push_back(attempt);
    }

    /// The attempts held with an id above `after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<Attempt> {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.attempts
            .iter()
            .filter(|a| a.id > after)
            .cloned()
            .collect()
    }
}

impl Attempt {
    /// An attempt of `seq` to be noted (`id` and `at` are the journal's).
    pub fn of(sink: &str, target: &str, seq: i64, event: &str, attempt: u32) -> Self {
        Self {
            id: 0,
            at: String::new(),
            sink: sink.to_string(),
            target: target.to_string(),
            seq,
            event: event.to_string(),
            attempt,
            outcome: Outcome::Delivered,
            status: None,
            error: None,
            ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_numbers_them() {
        let journal = Journal::default();
        for seq in 0..(KEEP as i64 + 10) {
            journal.note(Attempt::of(
                "push",
                "https://push.example",
                seq,
                "notification",
                1,
            ));
        }
        let all = journal.after(0);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].seq, 10, "the oldest ten went");
        assert_eq!(all.last().unwrap().id, KEEP as u64 + 10);
        let newer = journal.after(KEEP as u64 + 8);
        assert_eq!(
            newer.iter().map(|a| a.seq).collect::<Vec<_>>(),
            [KEEP as i64 + 8, KEEP as i64 + 9]
        );
    }

    #[test]
    fn an_attempt_serializes_as_the_inspector_reads_it() {
        let journal = Journal::default();
        let mut attempt = Attempt::of("webhook:backend", "backend", 7, "message-received", 2);
        attempt.outcome = Outcome::GaveUp;
        attempt.status = Some(500);
        journal.note(attempt);
        let value = serde_json::to_value(&journal.after(0)[0]).unwrap();
        assert_eq!(value["outcome"], "gave-up");
        assert_eq!(value["status"], 500);
        assert_eq!(value["target"], "backend");
        assert!(value["at"].as_str().unwrap().ends_with('Z'));
    }
}
