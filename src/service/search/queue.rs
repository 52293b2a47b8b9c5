//! The search index's queue: the ids of searchable events staged with the events, and
//! one indexer thread that reads each event, hands its document to the backend and
//! empties the queue.
//!
//! The entries one batch stages are one record (a run, `storage::runs`), keyed by the
//! first one's stream position and deleted once the backend has made all of them
//! durable; a crash in between only applies them again, which replaces the same
//! documents. Entries hold ids, not text: a message is not kept twice in memory while
//! it waits.

use std::{
    borrow::Cow,
    sync::{
        Arc, LazyLock, Weak,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::Duration,
};

use parking_lot::Mutex;
use ruma::events::TimelineEventType;
use serde_json::value::RawValue;

use ruma::{EventId, OwnedEventId, OwnedUserId};
use serde::{Deserialize, Serialize};

use super::{Change, Document, Field, SearchBackend};
use crate::{
    Result,
    service::rooms::{
        Rooms,
        pdu::StoredPdu,
        timeline::{Placed, TimelineIndex, redacted_by},
    },
    storage::{
        Batch, Db, Keyspace,
        codec::Key,
        runs::{RunPrefix, entries, key_position},
    },
};

/// Changes handed to the backend at once.
const CHUNK: usize = 5_000;
/// How long the indexer sleeps when nothing wakes it (a change it missed is taken then).
const IDLE: Duration = Duration::from_secs(5);
/// How long it waits before trying again after the backend failed.
const RETRY: Duration = Duration::from_secs(10);
/// The text of an event indexed, at most (a long paste is found by its beginning).
const MOST_TEXT_BYTES: usize = 16 * 1024;
/// How long it lets the queue fill after a chunk: each chunk is one commit, and each
/// commit a new segment the index merges later, so under load it commits about once
/// per this long, whatever the rate of messages.
const BATCHING: Duration = Duration::from_secs(1);

/// Whether events of this type may have searchable text (the indexer reads it).
fn searchable(kind: &TimelineEventType) -> bool {
    matches!(
        kind,
        TimelineEventType::RoomMessage | TimelineEventType::RoomName | TimelineEventType::RoomTopic
    )
}

/// The fields of a stored PDU the index needs, read without parsing the rest of it.
#[derive(Deserialize)]
struct Searchable<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    sender: OwnedUserId,
    #[serde(borrow)]
    content: SearchableContent<'a>,
}

/// The content's text fields, as they are: only the one an event's type names is read
/// as text.
#[derive(Deserialize)]
struct SearchableContent<'a> {
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    topic: Option<&'a RawValue>,
}

/// The searchable text of an event: a message's body, a room's name or topic.
pub fn document_of(event_id: &EventId, stored: &StoredPdu) -> Option<Document> {
    let event: Searchable<'_> = serde_json::from_str(stored.pdu.get()).ok()?;
    let content = event.content;
    let (field, text) = match event.kind.as_ref() {
        "m.room.message" => (Field::Body, content.body),
        "m.room.name" => (Field::Name, content.name),
        "m.room.topic" => (Field::Topic, content.topic),
        _ => return None,
    };
    let text: Cow<'_, str> = serde_json::from_str(text?.get()).ok()?;
    let mut text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.len() > MOST_TEXT_BYTES {
        let mut end = MOST_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    Some(Document {
        event_id: event_id.to_owned(),
        room_id: stored.room_id.clone(),
        sender: event.sender,
        kind: event.kind.into_owned(),
        position: stored.position,
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

    /// Wakes the indexer (to stop, or to take what is queued).
    pub(super) fn wake_indexer(&self) {
        let _ = self.wake.try_send(());
    }

    /// What wakes the indexer (taken once, by it).
    pub(super) fn waker(&self) -> Option<Receiver<()>> {
        self.woken.lock().take()
    }
}

/// What the indexer is to do with an event.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Queued {
    /// Index it (as it is stored when the indexer reads it).
    Index(OwnedEventId),
    /// It was redacted: forget it.
    Forget(OwnedEventId),
}

/// The queue's records have no prefix: one stream of runs.
static QUEUE: LazyLock<RunPrefix> = LazyLock::new(|| RunPrefix::new(Key::new()));

/// Stages an entry in the batch's run: one record per batch, however many messages.
fn stage(batch: &mut Batch, position: u64, queued: &Queued) {
    let entry = crate::storage::codec::encode_json(queued);
    batch.put_in_run(Keyspace::SearchQueue, &QUEUE, position, &entry);
}

impl TimelineIndex for SearchIndex {
    fn stage(&self, _rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()> {
        if let Some(target) = redacted_by(event.pdu) {
            stage(batch, event.position, &Queued::Forget(target));
        } else if searchable(&event.pdu.kind) {
            stage(
                batch,
                event.position,
                &Queued::Index(event.event_id.to_owned()),
            );
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
    pub rooms: Weak<Rooms>,
    pub backend: Weak<dyn SearchBackend>,
    pub wake: Receiver<()>,
    /// Set when the search service goes: the indexer returns at its next step.
    pub stop: Arc<AtomicBool>,
}

impl Indexer {
    /// Runs until the search service is dropped.
    pub fn run(self) {
        lower_priority();
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let (Some(db), Some(rooms), Some(backend)) = (
                self.db.upgrade(),
                self.rooms.upgrade(),
                self.backend.upgrade(),
            ) else {
                return;
            };
            let drained = drain(&db, &rooms, &*backend);
            drop((db, rooms, backend));
            crate::service::memory::release_freed_memory();
            match drained {
                Ok(0) => {}
                // Parked, not slept: stopping unparks it.
                Ok(_) => {
                    std::thread::park_timeout(BATCHING);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "the search index could not take queued messages");
                    std::thread::park_timeout(RETRY);
                    continue;
                }
            }
            match self.wake.recv_timeout(IDLE) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Puts the calling thread (and the threads it starts: the index's own) at the bottom
/// of the CPU scheduler's ordinary class: under load the queue grows, durably, and
/// empties once requests let it; search is a little late rather than sends slower. A
/// small share of a busy CPU remains, so a queue never falls behind for good (the idle
/// class would starve it, and an unprivileged process could not leave it again).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        /// The nicest value: about a seventieth of a handler thread's share when both
        /// want the CPU.
        const NICE: libc::c_int = 19;
        // SAFETY: setpriority on this thread's own id changes only its scheduling.
        let result =
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) };
        if result != 0 {
            tracing::debug!("the search indexer keeps its priority");
        }
    }
}

/// Applies one chunk of the queue (whole records, about [`CHUNK`] entries); returns how
/// many entries it held.
fn drain(db: &Db, rooms: &Rooms, backend: &dyn SearchBackend) -> Result<usize> {
    let mut records = Vec::new();
    let mut count = 0;
    db.for_each_from(Keyspace::SearchQueue, &[], &[], true, |key, value| {
        count += entries(0, value).len();
        records.push((key.to_vec(), value.to_vec()));
        count < CHUNK
    })?;
    if records.is_empty() {
        return Ok(0);
    }
    let mut changes = Vec::with_capacity(count);
    let no_prefix = Key::new();
    for (position, value) in records
        .iter()
        .flat_map(|(key, value)| entries(key_position(&no_prefix, key), value))
    {
        match crate::storage::codec::decode_json::<Queued>(value) {
            Ok(Queued::Index(event_id)) => {
                // Redacted or gone since: nothing to find.
                let Some(stored) = rooms.pdu(&event_id)? else {
                    continue;
                };
                if let Some(document) = document_of(&event_id, &stored) {
                    changes.push(Change::Add(document));
                }
            }
            Ok(Queued::Forget(event_id)) => {
                if let Some(stored) = rooms.pdu(&event_id)?
                    && stored.position > 0
                {
                    changes.push(Change::Remove(stored.position));
                }
            }
            Err(error) => tracing::warn!(position, %error, "unreadable search entry dropped"),
        }
    }
    backend.apply(&changes)?;
    let mut batch = db.batch();
    for (key, _) in records {
        batch.delete(Keyspace::SearchQueue, key);
    }
    db.write_unsynced(batch)?;
    Ok(count)
}

/// Empties the index and queues every searchable event of every room again; returns
/// how many were queued.
pub(super) fn requeue_all(db: &Db, backend: &dyn SearchBackend, rooms: &Rooms) -> Result<usize> {
    backend.clear()?;
    let mut batch = db.batch();
    let mut pending = 0;
    let mut queued = 0;
    rooms.each_timeline_event(|stored, pdu| {
        if document_of(&pdu.event_id, stored).is_some() {
            // One record each: rooms come one after another, so positions do not rise
            // as a run's must.
            batch.put_json(
                Keyspace::SearchQueue,
                Key::new().u64(stored.position),
                &Queued::Index(pdu.event_id.clone()),
            );
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

#[cfg(test)]
mod tests {
    use ruma::event_id;
    use serde_json::json;

    use super::*;

    fn stored(kind: &str, content: serde_json::Value) -> StoredPdu {
        serde_json::from_value(json!({
            "room_id": "!r:x",
            "position": 7,
            "state_before": 1,
            "state_after": 1,
            "redacted_by": null,
            "txn": null,
            "pdu": {
                "type": kind,
                "sender": "@alice:x",
                "room_id": "!r:x",
                "content": content,
                "prev_events": [],
                "auth_events": [],
                "depth": 3,
                "origin_server_ts": 1,
                "hashes": { "sha256": "x" },
                "signatures": {},
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_text_of_messages_names_and_topics_and_nothing_else() {
        let id = event_id!("$e");
        let message = document_of(
            id,
            &stored(
                "m.room.message",
                json!({ "msgtype": "m.text", "body": " say \"hi\"\n" }),
            ),
        )
        .unwrap();
        assert_eq!(
            (message.text.as_str(), message.field, message.position),
            ("say \"hi\"", Field::Body, 7)
        );
        assert_eq!(message.sender, "@alice:x");
        assert_eq!(message.kind, "m.room.message");
        let name = document_of(
            id,
            &stored("m.room.name", json!({ "name": "Lobby", "body": 5 })),
        );
        assert_eq!(
            name.map(|d| (d.text, d.field)),
            Some(("Lobby".to_owned(), Field::Name))
        );
        let topic = document_of(id, &stored("m.room.topic", json!({ "topic": "Plans" })));
        assert_eq!(topic.map(|d| d.field), Some(Field::Topic));
        // A body that is no text, a redacted message, an empty body, another type.
        for (kind, content) in [
            ("m.room.message", json!({ "body": 5 })),
            ("m.room.message", json!({})),
            ("m.room.message", json!({ "body": "   " })),
            ("m.reaction", json!({ "body": "text" })),
        ] {
            assert!(document_of(id, &stored(kind, content)).is_none(), "{kind}");
        }
    }
}
