//! Writing a staged batch and what follows: the one durability point of an event, then
//! its effects (the members' syncs woken, the federation sender woken).

use ruma::OwnedEventId;
use tokio::sync::OwnedMutexGuard;

use crate::{
    Error, Result,
    service::{
        rooms::{Audience, Rooms},
        stream::Permit,
    },
    storage::Batch,
};

/// Staged events, waiting to be written at their stream positions.
pub(in crate::service::rooms) struct Pending {
    pub batch: Batch,
    pub permits: Vec<Permit>,
    /// Whose syncs to wake and which servers' queues to drain once written.
    pub woken: Audience,
    /// The event a redaction rewrites, whose parsed form must be forgotten.
    pub redacted: Option<OwnedEventId>,
}

impl Rooms {
    /// Writes staged events, then wakes the syncs and servers they concern.
    pub(in crate::service::rooms) async fn commit(
        &self,
        pending: Pending,
        room_lock: OwnedMutexGuard<()>,
    ) -> Result<()> {
        self.commit_then(pending, room_lock, |_| {}).await
    }

    /// As [`commit`](Self::commit), then calls `then` with the write's outcome. The
    /// write runs off the async workers, so sends to different rooms reach RocksDB
    /// together and share one synced write-ahead-log append. The room lock, the stream
    /// positions and `then` go with the write: if the caller is dropped meanwhile, the
    /// lock and the positions are not released before the events are on disk (the next
    /// event of the room builds on them; syncs read up to them), and `then` still runs.
    pub(in crate::service::rooms) async fn commit_then(
        &self,
        pending: Pending,
        room_lock: OwnedMutexGuard<()>,
        then: impl FnOnce(&Result<()>) + Send + 'static,
    ) -> Result<()> {
        let (db, stream, queue) = (self.db.clone(), self.stream.clone(), self.queue.clone());
        let (state_events, served) = (self.state_events.clone(), self.served.clone());
        tokio::task::spawn_blocking(move || {
            let Pending {
                batch,
                permits,
                woken,
                redacted,
            } = pending;
            let written = db.write(batch).map_err(Error::from);
            if let Some(redacted) = redacted {
                state_events.forget(&redacted);
                served.forget(&redacted);
            }
            drop(permits);
            drop(room_lock);
            if written.is_ok() {
                stream.notify(woken.users.iter().map(|user| user.as_ref()));
                queue.wake(&woken.servers);
            }
            then(&written);
            written
        })
        .await
        .map_err(Error::internal)?
    }
}
