//! Explicit events (HTTP publish, presence) for the single writer: queued
//! requests are stored together in one outbox transaction, and each caller
//! is answered with its event's seq once that transaction committed.

use time::OffsetDateTime;
use tokio::sync::oneshot;

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
        let (batch, refused): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| {
            !r.event.rooms.is_empty() && r.event.rooms.iter().all(|room| is_room_name(room))
        });
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
        let committed = {
            let mut client = self.outbox.pool().get().await?;
            let mut tx = self.outbox.begin(&mut client).await?;
            for request in batch {
                tx.append(self.router.route(&Change {
                    captured: Captured::Published(request.event.clone()),
                    at,
                }));
            }
            tx.commit(None).await?
        };
        let seqs = committed.events.iter().map(|e| e.seq).collect();
        self.outbox.deliver(committed).await?;
        Ok(seqs)
    }
}
