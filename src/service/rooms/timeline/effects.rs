//! Writing a staged batch and what follows: the one durability point of an event, then
//! its effects (the members' syncs woken, the federation sender woken).
//!
//! What an event changes beyond its room (the push actions of each member, the relations
//! and threads it joins) is kept by [`TimelineIndex`]es: each stages its
//! records in the batch that writes the event, so they are as durable as the event, and
//! hears of the write once it is on disk. For a message, an index may work out ahead,
//! in the sender's request before the message queues, what needs no room lock: the
//! room's batch is staged by one request at a time, so work done there is everyone's
//! wait.

use std::any::Any;

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, UserId, events::TimelineEventType,
};
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
    /// What the indexes worked out for it before it was built.
    pub ahead: &'a Ahead,
}

/// A message about to queue for its room's next batch, before it is built: what an
/// index may work out ahead of its batch.
pub struct Upcoming<'a> {
    pub room_id: &'a RoomId,
    pub sender: &'a UserId,
    pub kind: &'a TimelineEventType,
    pub content: &'a RawValue,
    /// The timestamp the event is built with.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
}

/// What the indexes worked out for a message ahead of its batch
/// ([`TimelineIndex::prepare`]), each found by its type.
#[derive(Default)]
pub struct Ahead(Vec<Box<dyn Any + Send>>);

impl Ahead {
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.iter().find_map(|worked| worked.downcast_ref())
    }
}

/// A record kept beside the timeline, updated by every event that enters one.
pub trait TimelineIndex: Send + Sync {
    /// Works out ahead what [`stage`](Self::stage) would for a message, without the
    /// room's lock; `stage` finds it in [`Placed::ahead`] and checks it still holds
    /// (the room's state may have moved on meanwhile).
    fn prepare(&self, _rooms: &Rooms, _message: &Upcoming<'_>) -> Option<Box<dyn Any + Send>> {
        None
    }

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
    /// What the indexes work out ahead for a message.
    pub(in crate::service::rooms) fn prepare(&self, message: &Upcoming<'_>) -> Ahead {
        Ahead(
            self.indexes
                .iter()
                .filter_map(|index| index.prepare(self, message))
                .collect(),
        )
    }

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
    /// together and share one sync of the write-ahead log (its group commit). The room
    /// lock is held until the batch is on disk: meanwhile the room's next messages
    /// queue, and go in its next batch together. (Releasing it before the sync, to
    /// stage the next batch during it, made smaller batches and more syncs, and measured
    /// slower.) The stream positions and `then` wait for the write: syncs serve the
    /// events, and senders hear of them, only once they are on disk. All of it goes with
    /// the write: if the caller is dropped meanwhile, it still runs to the end.
    pub(in crate::service::rooms) async fn commit_then(
        &self,
        pending: Pending,
        room_lock: OwnedMutexGuard<()>,
        then: impl FnOnce(&Result<()>) + Send + 'static,
    ) -> Result<()> {
        let (db, stream, queue) = (self.db.clone(), self.stream.clone(), self.queue.clone());
        let (state_events, served) = (self.state_events.clone(), self.served.clone());
        let (indexes, authorised) = (self.indexes.clone(), self.authorised.clone());
        tokio::task::spawn_blocking(move || {
            let Pending {
                batch,
                permits,
                woken,
                redacted,
            } = pending;
            let written = db.write(batch).map_err(Error::from);
            if let Some(redacted) = redacted {
                authorised.forget_all();
                state_events.forget(&redacted);
                served.forget(&redacted);
            }
            drop(room_lock);
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
