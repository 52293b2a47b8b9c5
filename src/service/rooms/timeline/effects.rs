//! Writing a staged batch and what follows: the one durability point of an event, then
//! its effects (the members' syncs woken, the federation sender woken).
//!
//! What an event changes beyond its room (the push actions of each member, the relations
//! and threads it joins) is kept by [`TimelineIndex`]es: each stages its
//! records in the batch that writes the event, so they are as durable as the event, and
//! hears of the write once it is on disk.

use ruma::{EventId, OwnedEventId, RoomId};
use serde_json::value::RawValue;
use tokio::sync::OwnedMutexGuard;

use crate::{
    Error, Result,
    service::{
        rooms::{Audience, Rooms, pdu::Pdu},
        stream::Permit,
    },
    storage::Batch,
};

/// An event entering a room's timeline, as the indexes see it while it is staged.
pub struct Placed<'a> {
    pub room_id: &'a RoomId,
    pub event_id: &'a EventId,
    pub pdu: &'a Pdu,
    /// The PDU as stored.
    pub json: &'a RawValue,
    pub position: u64,
    /// The room's state group before the event.
    pub state_before: u64,
}

/// A record kept beside the timeline, updated by every event that enters one.
pub trait TimelineIndex: Send + Sync {
    /// Stages what `event` changes in the batch that writes it. The room's lock is held:
    /// the room's members and state are as the event found them.
    fn stage(&self, rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()>;

    /// The events at `positions` are written (`true`) or their write failed (`false`).
    fn written(&self, _positions: &[u64], _ok: bool) {}
}

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
    /// together and share one sync of the write-ahead log. The room lock is released
    /// once the batch is readable, before that sync: the room's next batch is staged on
    /// this one meanwhile, and is written after it, so it is never durable without it.
    /// The stream positions and `then` wait for the sync: syncs serve the events, and
    /// senders hear of them, only once they are on disk. All of it goes with the write:
    /// if the caller is dropped meanwhile, it still runs to the end.
    pub(in crate::service::rooms) async fn commit_then(
        &self,
        pending: Pending,
        room_lock: OwnedMutexGuard<()>,
        then: impl FnOnce(&Result<()>) + Send + 'static,
    ) -> Result<()> {
        let (db, stream, queue) = (self.db.clone(), self.stream.clone(), self.queue.clone());
        let (state_events, served) = (self.state_events.clone(), self.served.clone());
        let indexes = self.indexes.clone();
        tokio::task::spawn_blocking(move || {
            let Pending {
                batch,
                permits,
                woken,
                redacted,
            } = pending;
            let visible = db.write_visible(batch);
            if let Some(redacted) = redacted {
                state_events.forget(&redacted);
                served.forget(&redacted);
            }
            drop(room_lock);
            let written = visible
                .and_then(|visible| db.make_durable(visible))
                .map_err(Error::from);
            let positions: Vec<u64> = permits.iter().map(Permit::position).collect();
            drop(permits);
            for index in indexes.iter() {
                index.written(&positions, written.is_ok());
            }
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
