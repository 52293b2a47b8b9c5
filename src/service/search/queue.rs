//! The search index's queue: documents staged with their events, handed to the backend
//! by one indexer thread.
//!
//! A change is keyed by its event's stream position and deleted once the backend has
//! made it durable; a crash in between only applies it again, which replaces the same
//! document.

use std::{
    sync::{
        Weak,
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::Duration,
};

use parking_lot::Mutex;
use ruma::events::TimelineEventType;
use serde_json::Value;

use super::{Change, Document, Field, SearchBackend};
use crate::{
    Result,
    service::rooms::{
        Rooms,
        pdu::Pdu,
        timeline::{Placed, TimelineIndex, redacted_by},
    },
    storage::{Batch, Db, Keyspace, codec::Key},
};

/// Changes handed to the backend at once.
const CHUNK: usize = 512;
/// How long the indexer sleeps when nothing wakes it (a change it missed is taken then).
const IDLE: Duration = Duration::from_secs(5);
/// How long it waits before trying again after the backend failed.
const RETRY: Duration = Duration::from_secs(10);

/// The searchable text of an event: a message's body, a room's name or topic.
pub fn document_of(pdu: &Pdu, room_id: &ruma::RoomId, position: u64) -> Option<Document> {
    let (field, key) = match pdu.kind {
        TimelineEventType::RoomMessage => (Field::Body, "body"),
        TimelineEventType::RoomName => (Field::Name, "name"),
        TimelineEventType::RoomTopic => (Field::Topic, "topic"),
        _ => return None,
    };
    let content: Value = serde_json::from_str(pdu.content.get()).ok()?;
    let text = content.get(key)?.as_str()?.trim();
    if text.is_empty() {
        return None;
    }
    Some(Document {
        event_id: pdu.event_id.clone(),
        room_id: room_id.to_owned(),
        sender: pdu.sender.clone(),
        kind: pdu.kind.to_string(),
        position,
        field,
        text: text.to_owned(),
    })
}

/// The timeline index that queues each searchable event, and each redaction's removal.
pub struct SearchIndex {
    wake: SyncSender<()>,
    woken: Mutex<Option<Receiver<()>>>,
}

impl SearchIndex {
    pub(super) fn new() -> Self {
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        Self {
            wake,
            woken: Mutex::new(Some(woken)),
        }
    }

    /// What wakes the indexer (taken once, by it).
    pub(super) fn waker(&self) -> Option<Receiver<()>> {
        self.woken.lock().take()
    }
}

fn stage_change(batch: &mut Batch, position: u64, change: &Change) {
    batch.put_json(Keyspace::SearchQueue, Key::new().u64(position), change);
}

impl TimelineIndex for SearchIndex {
    fn stage(&self, _rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()> {
        if let Some(target) = redacted_by(event.pdu) {
            stage_change(batch, event.position, &Change::Remove(target));
        } else if let Some(document) = document_of(event.pdu, event.room_id, event.position) {
            stage_change(batch, event.position, &Change::Add(document));
        }
        Ok(())
    }

    fn written(&self, _positions: &[u64], ok: bool) {
        if ok {
            // A wake already pending covers this one too.
            let _ = self.wake.try_send(());
        }
    }
}

/// Hands queued changes to the backend, oldest first. It holds the database and the
/// backend weakly, and stops once the service that owns them is gone (so a database
/// can be opened again in the same process).
pub(super) struct Indexer {
    pub db: Weak<Db>,
    pub backend: Weak<dyn SearchBackend>,
    pub wake: Receiver<()>,
}

impl Indexer {
    /// Runs until the search service is dropped.
    pub fn run(self) {
        loop {
            let (Some(db), Some(backend)) = (self.db.upgrade(), self.backend.upgrade()) else {
                return;
            };
            let drained = drain(&db, &*backend);
            drop((db, backend));
            let pause = match drained {
                Ok(0) => IDLE,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "the search index could not take queued messages");
                    RETRY
                }
            };
            match self.wake.recv_timeout(pause) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Applies one chunk of the queue; returns how many changes it held.
fn drain(db: &Db, backend: &dyn SearchBackend) -> Result<usize> {
    let entries = db.stream_page(Keyspace::SearchQueue, &Key::new(), 0, u64::MAX, CHUNK)?;
    if entries.is_empty() {
        return Ok(0);
    }
    let mut changes = Vec::with_capacity(entries.len());
    for (position, value) in &entries {
        match crate::storage::codec::decode_json::<Change>(value) {
            Ok(change) => changes.push(change),
            Err(error) => tracing::warn!(position, %error, "unreadable search change dropped"),
        }
    }
    backend.apply(&changes)?;
    let mut batch = db.batch();
    for (position, _) in &entries {
        batch.delete(Keyspace::SearchQueue, Key::new().u64(*position));
    }
    db.write_unsynced(batch)?;
    Ok(entries.len())
}

/// Empties the index and queues every searchable event of every room again; returns
/// how many were queued.
pub(super) fn requeue_all(db: &Db, backend: &dyn SearchBackend, rooms: &Rooms) -> Result<usize> {
    backend.clear()?;
    let mut batch = db.batch();
    let mut pending = 0;
    let mut queued = 0;
    rooms.each_timeline_event(|stored, pdu| {
        if let Some(document) = document_of(pdu, &stored.room_id, stored.position) {
            stage_change(&mut batch, stored.position, &Change::Add(document));
            pending += 1;
            queued += 1;
        }
        if pending >= CHUNK {
            db.write_unsynced(std::mem::replace(&mut batch, db.batch()))?;
            pending = 0;
        }
        Ok(())
    })?;
    db.write_unsynced(batch)?;
    Ok(queued)
}
