//! Explicit events (HTTP publish) for the single writer: on the leader,
//! queued requests are stored together in one outbox transaction, and each
//! caller is answered with its event's seq once that transaction committed.
//! A follower never takes a seq itself (the leader may have delivered seqs
//! whose outbox rows are still being written): it hands its events to the
//! leader through `realtime.capture`, as `realtime.publish` does, and
//! answers each caller when the leader announces the seq.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::heads::Replies;
use super::Ingest;
use crate::capture::CaptureError;
use crate::event::{Captured, Change, Published};
use crate::room::is_room_name;

/// An explicit event for the single writer, answered with its seq.
pub struct PublishRequest {
    /// The event.
    pub event: Published,
    /// Receives the stored seq, or the failure.
    pub reply: oneshot::Sender<Result<i64, PublishError>>,
}

/// Why an explicit event was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No room, or a room name that is not one.
    #[error("invalid rooms")]
    InvalidRooms,
    /// The outbox transaction failed (the cause is in the relay's log).
    #[error("the event could not be stored")]
    NotStored,
    /// Handed to the leader, which did not store it in time (there may be
    /// no leader at the moment): it is queued, and stored and delivered
    /// once a leader runs.
    #[error("the event is queued, but no relay node stored it in time")]
    Unconfirmed,
}

impl Ingest {
    /// Stores `first` and the requests already queued behind it.
    pub(super) async fn publish(&mut self, first: PublishRequest) -> Result<(), CaptureError> {
        let mut batch = vec![first];
        self.take_queued(&mut batch);
        self.store_requests(batch).await
    }

    /// Stores the requests already queued, if any (between source batches,
    /// so a busy source does not starve them).
    pub(super) async fn publish_queued(&mut self) -> Result<(), CaptureError> {
        if !self.outbox.settled() {
            return Ok(());
        }
        let mut batch = Vec::new();
        self.take_queued(&mut batch);
        if batch.is_empty() {
            return Ok(());
        }
        self.store_requests(batch).await
    }

    /// On a follower: hands `first` and the requests queued behind it to
    /// the leader, and answers each once the leader stored it (or after
    /// [`HAND_OFF_DEADLINE`], saying it is queued).
    pub(super) fn hand_to_leader(&mut self, first: PublishRequest, replies: &Replies) {
        let mut batch = vec![first];
        self.take_queued(&mut batch);
        let (batch, refused): (Vec<_>, Vec<_>) = batch.into_iter().partition(valid_rooms);
        for request in refused {
            let _ = request.reply.send(Err(PublishError::InvalidRooms));
        }
        let handed: Vec<(String, PublishRequest)> = batch
            .into_iter()
            .map(|request| {
                self.handed += 1;
                (format!("{}-{}", self.node, self.handed), request)
            })
            .collect();
        if handed.is_empty() {
            return;
        }
        let (pool, replies) = (self.outbox.pool().clone(), replies.clone());
        tokio::spawn(async move {
            let waits: Vec<_> = handed
                .iter()
                .map(|(token, _)| replies.expect(token.clone()))
                .collect();
            let rows: Vec<serde_json::Value> = handed
                .iter()
                .map(|(token, r)| {
                    json!({"rooms": r.event.rooms, "event": r.event.event, "data": r.event.data, "reply": token})
                })
                .collect();
            let inserted = async {
                let client = pool.get().await.map_err(crate::db::DbError::from)?;
                client
                    .execute(
                        "WITH handed AS (
                            INSERT INTO realtime.capture (tbl, op, new)
                            SELECT '', 'P', r FROM unnest($1::jsonb[]) AS x(r)
                         )
                         SELECT realtime.wake()",
                        &[&rows],
                    )
                    .await
                    .map_err(crate::db::DbError::from)
            }
            .await;
            for ((token, request), wait) in handed.into_iter().zip(waits) {
                let answer = match &inserted {
                    Err(_) => Err(PublishError::NotStored),
                    Ok(_) => match tokio::time::timeout(HAND_OFF_DEADLINE, wait).await {
                        Ok(Ok(seq)) => Ok(seq),
                        _ => Err(PublishError::Unconfirmed),
                    },
                };
                if answer.is_err() {
                    replies.forget(&token);
                }
                let _ = request.reply.send(answer);
            }
            if let Err(e) = inserted {
                tracing::warn!(error = %e, "explicit events could not be handed to the leader");
            }
        });
    }

    fn take_queued(&mut self, batch: &mut Vec<PublishRequest>) {
        while batch.len() < self.batch_size {
            match self.requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
    }

    /// Stores a batch of requests in one outbox transaction and answers
    /// each with its seq; refuses those with unusable rooms.
    async fn store_requests(&mut self, batch: Vec<PublishRequest>) -> Result<(), CaptureError> {
        let (batch, refused): (Vec<_>, Vec<_>) = batch.into_iter().partition(valid_rooms);
        for request in refused {
            let _ = request.reply.send(Err(PublishError::InvalidRooms));
        }
        if batch.is_empty() {
            return Ok(());
        }
        match self.store_published(&batch).await {
            Ok(seqs) => {
                for (request, seq) in batch.into_iter().zip(seqs) {
                    let _ = request.reply.send(Ok(seq));
                }
                Ok(())
            }
            Err(e) => {
                for request in batch {
                    let _ = request.reply.send(Err(PublishError::NotStored));
                }
                Err(e)
            }
        }
    }

    /// One transaction for the batch; returns the stored seqs in order.
    async fn store_published(
        &mut self,
        batch: &[PublishRequest],
    ) -> Result<Vec<i64>, CaptureError> {
        let at = OffsetDateTime::now_utc();
        let mut tx = self.outbox.begin().await?;
        for request in batch {
            tx.append(self.router.route(&Change {
                captured: Captured::Published(request.event.clone()),
                at,
            }));
        }
        let committed = tx.commit(None).await?;
        let seqs = committed.events.iter().map(|e| e.seq).collect();
        self.outbox.deliver(committed).await?;
        Ok(seqs)
    }
}

/// How long a follower waits for the leader to store an event it handed
/// over before answering that it is queued.
const HAND_OFF_DEADLINE: Duration = Duration::from_secs(10);

/// Whether a request names at least one room, and only valid ones.
fn valid_rooms(request: &PublishRequest) -> bool {
    !request.event.rooms.is_empty() && request.event.rooms.iter().all(|room| is_room_name(room))
}
