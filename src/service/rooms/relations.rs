//! Relations between events (`m.relates_to`): edits, references, reactions and threads,
//! indexed as each event enters a timeline (a [`TimelineIndex`]), and undone when the
//! relating event is redacted. Read back by `/relations`, `/threads` and the bundled
//! aggregations clients get with each event (`aggregations.rs`).

use ruma::{EventId, OwnedEventId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::{
    Rooms,
    timeline::{Placed, TimelineIndex},
};
use crate::{
    Result,
    storage::{
        Batch, Keyspace,
        codec::{Key, KeyReader, decode_json},
    },
};

pub const THREAD: &str = "m.thread";
pub const REPLACE: &str = "m.replace";
pub const REFERENCE: &str = "m.reference";

/// One event relating to another, as indexed under the other.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Relation {
    pub event_id: OwnedEventId,
    pub rel_type: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sender: OwnedUserId,
}

/// What an event that others relate to carries in `unsigned.m.relations`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Aggregation {
    /// The latest valid edit: `(origin_server_ts, event id)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<(u64, OwnedEventId)>,
    /// Whether events reference it (`m.reference`).
    #[serde(default)]
    pub referenced: bool,
    /// Whether it is a thread root with replies.
    #[serde(default)]
    pub thread: bool,
}

/// A thread: its replies' count, its latest reply, who took part.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Thread {
    pub count: u64,
    pub latest: Option<OwnedEventId>,
    pub latest_position: u64,
    pub participants: Vec<OwnedUserId>,
}

/// The `m.relates_to` of an event's content, when it names a relation.
#[derive(Deserialize)]
struct Content {
    #[serde(rename = "m.relates_to")]
    relates_to: Option<RelatesTo>,
}

/// An `m.relates_to`: its type, the event it relates to and, for an annotation, its key.
#[derive(Deserialize)]
pub(super) struct RelatesTo {
    pub rel_type: Option<String>,
    pub event_id: Option<OwnedEventId>,
    pub key: Option<String>,
}

/// The `m.relates_to` of an event's content, whatever it names.
pub(super) fn relates_to(content: &serde_json::value::RawValue) -> Option<RelatesTo> {
    serde_json::from_str::<Content>(content.get())
        .ok()?
        .relates_to
}

/// The relation an event's content declares: its type and the event it relates to.
pub fn relation_of(content: &serde_json::value::RawValue) -> Option<(String, OwnedEventId)> {
    let relates_to = relates_to(content)?;
    Some((relates_to.rel_type?, relates_to.event_id?))
}

fn relation_key(room_id: &RoomId, parent: &EventId, position: u64) -> Key {
    Key::new()
        .str(room_id.as_str())
        .str(parent.as_str())
        .u64(position)
}

fn thread_key(room_id: &RoomId, root: &EventId) -> Key {
    Key::new().str(room_id.as_str()).str(root.as_str())
}

/// The index of relations, kept in the batch of each event.
pub struct RelationsIndex;

/// The `meta` key saying the relations of every event written before relations were
/// indexed have been indexed since.
const INDEXED_KEY: &[u8] = b"relations_indexed";
/// Events whose relations are indexed per write while catching up.
const CATCH_UP_CHUNK: usize = 1000;

impl Rooms {
    /// Indexes the relations of every event already in a timeline, once: a database
    /// written before relations were indexed gets its edits, threads and references
    /// (room by room, in timeline order); on a new database this finds nothing to do.
    /// Returns how many events were looked at.
    pub fn catch_up_relations(&self) -> Result<usize> {
        if self.db.contains(Keyspace::Meta, INDEXED_KEY)? {
            return Ok(0);
        }
        let mut rooms = Vec::new();
        for (key, _) in self.db.scan_prefix(Keyspace::Rooms, &[])? {
            if let Ok(room_id) = ruma::OwnedRoomId::try_from(String::from_utf8_lossy(&key).as_ref())
            {
                rooms.push(room_id);
            }
        }
        let mut seen = 0;
        for room_id in rooms {
            let prefix = Key::new().str(room_id.as_str());
            let mut batch = self.db.batch();
            let mut pending = 0;
            for (key, value) in self.db.scan_prefix(Keyspace::Timeline, prefix.bytes())? {
                let position = KeyReader::new(&key[prefix.bytes().len()..]).u64()?;
                let Ok(event_id) = OwnedEventId::try_from(String::from_utf8_lossy(&value).as_ref())
                else {
                    continue;
                };
                let Some(stored) = self.pdu(&event_id)? else {
                    continue;
                };
                let Ok(pdu) = stored.parse(event_id.clone()) else {
                    continue;
                };
                let placed = Placed {
                    room_id: &room_id,
                    event_id: &event_id,
                    pdu: &pdu,
                    json: &stored.pdu,
                    position,
                    state_before: stored.state_before,
                    ahead: &Default::default(),
                };
                if let Err(error) = RelationsIndex.stage(self, &mut batch, &placed) {
                    tracing::debug!(%error, %event_id, "relation not indexed");
                }
                seen += 1;
                pending += 1;
                if pending >= CATCH_UP_CHUNK {
                    self.db
                        .write(std::mem::replace(&mut batch, self.db.batch()))?;
                    pending = 0;
                }
            }
            self.db.write(batch)?;
        }
        let mut batch = self.db.batch();
        batch.put(Keyspace::Meta, INDEXED_KEY.to_vec(), Vec::new());
        self.db.write(batch)?;
        Ok(seen)
    }
}

impl TimelineIndex for RelationsIndex {
    fn stage(&self, rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()> {
        if let Some(target) = super::timeline::redacted_by(event.pdu) {
            return rooms.unrelate(batch, event.room_id, &target);
        }
        let Some((rel_type, parent)) = relation_of(&event.pdu.content) else {
            return Ok(());
        };
        if parent == event.event_id {
            return Ok(());
        }
        let Some(parent_pdu) = rooms.pdu(&parent)? else {
            return Ok(());
        };
        if parent_pdu.room_id != event.room_id || parent_pdu.redacted_by.is_some() {
            return Ok(());
        }
        let Ok(original) = parent_pdu.parse(parent.clone()) else {
            return Ok(());
        };
        let relation = Relation {
            event_id: event.event_id.to_owned(),
            rel_type: rel_type.clone(),
            kind: event.pdu.kind.to_string(),
            sender: event.pdu.sender.clone(),
        };
        batch.put_json(
            Keyspace::Relations,
            relation_key(event.room_id, &parent, event.position),
            &relation,
        );
        match rel_type.as_str() {
            REPLACE => {
                // Only the original sender may edit, and an edit is not edited in turn.
                let is_edit =
                    relation_of(&original.content).is_some_and(|(rel_type, _)| rel_type == REPLACE);
                if original.sender != event.pdu.sender || is_edit || event.pdu.state_key.is_some() {
                    return Ok(());
                }
                let ts = u64::from(event.pdu.origin_server_ts.get());
                rooms.update_aggregation(batch, &parent, |aggregation| {
                    let newer = aggregation
                        .replace
                        .as_ref()
                        .is_none_or(|(at, id)| (ts, event.event_id) > (*at, id.as_ref()));
                    if newer {
                        aggregation.replace = Some((ts, event.event_id.to_owned()));
                    }
                })
            }
            REFERENCE => rooms.update_aggregation(batch, &parent, |aggregation| {
                aggregation.referenced = true;
            }),
            THREAD => rooms.add_to_thread(batch, event, &parent, original.sender),
            _ => Ok(()),
        }
    }
}

impl Rooms {
    /// The events relating to `parent` that `filter` lets through, oldest first, with
    /// their positions.
    pub fn relations(
        &self,
        room_id: &RoomId,
        parent: &EventId,
        filter: &RelationFilter<'_>,
    ) -> Result<Vec<(u64, Relation)>> {
        let prefix = Key::new().str(room_id.as_str()).str(parent.as_str());
        let mut out = Vec::new();
        for (position, value) in self
            .db
            .stream_range(Keyspace::Relations, &prefix, 0, u64::MAX)?
        {
            let relation: Relation = decode_json(&value)?;
            if filter.matches(&relation) {
                out.push((position, relation));
            }
        }
        Ok(out)
    }

    /// What is bundled with each of `event_ids`, read together.
    pub fn aggregations(&self, event_ids: &[&EventId]) -> Result<Vec<Option<Aggregation>>> {
        let keys: Vec<&[u8]> = event_ids.iter().map(|id| id.as_bytes()).collect();
        Ok(self.db.get_many_json(Keyspace::Aggregations, &keys)?)
    }

    pub fn thread(&self, room_id: &RoomId, root: &EventId) -> Result<Option<Thread>> {
        Ok(self
            .db
            .get_json(Keyspace::Threads, thread_key(room_id, root).bytes())?)
    }

    /// A room's threads, the most recently active first, from before position `before`:
    /// `(latest reply's position, root)`, at most `limit`.
    pub fn threads(
        &self,
        room_id: &RoomId,
        before: u64,
        limit: usize,
        participant: Option<&UserId>,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        let prefix = Key::new().str(room_id.as_str());
        let start = prefix.clone().u64(before.saturating_sub(1));
        let mut out = Vec::new();
        let mut failure = None;
        self.db.for_each_from(
            Keyspace::ThreadActivity,
            prefix.bytes(),
            start.bytes(),
            false,
            |key, value| {
                let mut reader = KeyReader::new(key);
                let position = match reader.str().and_then(|_| reader.u64()) {
                    Ok(position) => position,
                    Err(error) => {
                        failure = Some(error);
                        return false;
                    }
                };
                if position >= before {
                    return true;
                }
                let Ok(root) = std::str::from_utf8(value)
                    .map_err(|_| ())
                    .and_then(|id| OwnedEventId::try_from(id).map_err(|_| ()))
                else {
                    return true;
                };
                let participated = participant.is_none_or(|user| {
                    self.thread(room_id, &root)
                        .ok()
                        .flatten()
                        .is_some_and(|thread| thread.participants.iter().any(|p| p == user))
                });
                if participated {
                    out.push((position, root));
                }
                out.len() < limit
            },
        )?;
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(out),
        }
    }

    fn update_aggregation(
        &self,
        batch: &mut Batch,
        event_id: &EventId,
        change: impl FnOnce(&mut Aggregation),
    ) -> Result<()> {
        let key = event_id.as_bytes();
        let mut aggregation: Aggregation = self
            .db
            .get_json_through(batch, Keyspace::Aggregations, key)?
            .unwrap_or_default();
        change(&mut aggregation);
        if aggregation.replace.is_none() && !aggregation.referenced && !aggregation.thread {
            batch.delete(Keyspace::Aggregations, key.to_vec());
        } else {
            batch.put_json(Keyspace::Aggregations, key.to_vec(), &aggregation);
        }
        Ok(())
    }

    fn add_to_thread(
        &self,
        batch: &mut Batch,
        event: &Placed<'_>,
        root: &EventId,
        root_sender: OwnedUserId,
    ) -> Result<()> {
        let key = thread_key(event.room_id, root);
        let mut thread: Thread = self
            .db
            .get_json_through(batch, Keyspace::Threads, key.bytes())?
            .unwrap_or_default();
        if thread.count == 0 {
            thread.participants.push(root_sender);
            self.update_aggregation(batch, root, |aggregation| aggregation.thread = true)?;
        } else {
            batch.delete(
                Keyspace::ThreadActivity,
                Key::new()
                    .str(event.room_id.as_str())
                    .u64(thread.latest_position),
            );
        }
        thread.count += 1;
        thread.latest = Some(event.event_id.to_owned());
        thread.latest_position = event.position;
        if !thread.participants.contains(&event.pdu.sender) {
            thread.participants.push(event.pdu.sender.clone());
        }
        batch.put_json(Keyspace::Threads, key, &thread);
        batch.put(
            Keyspace::ThreadActivity,
            Key::new().str(event.room_id.as_str()).u64(event.position),
            root.as_str().as_bytes().to_vec(),
        );
        Ok(())
    }

    /// Undoes what a redacted event's relation did: it leaves its parent's relations, and
    /// its parent's edit, references or thread are worked out again without it.
    fn unrelate(&self, batch: &mut Batch, room_id: &RoomId, target: &EventId) -> Result<()> {
        let Some(stored) = self.pdu(target)? else {
            return Ok(());
        };
        if stored.room_id != room_id || stored.redacted_by.is_some() || stored.position == 0 {
            return Ok(());
        }
        let Ok(pdu) = stored.parse(target.to_owned()) else {
            return Ok(());
        };
        let Some((rel_type, parent)) = relation_of(&pdu.content) else {
            return Ok(());
        };
        batch.delete(
            Keyspace::Relations,
            relation_key(room_id, &parent, stored.position),
        );
        let remaining = |rel_type: &str| -> Result<Vec<(u64, Relation)>> {
            let filter = RelationFilter {
                rel_type: Some(rel_type),
                kind: None,
            };
            Ok(self
                .relations(room_id, &parent, &filter)?
                .into_iter()
                .filter(|(position, _)| *position != stored.position)
                .collect())
        };
        match rel_type.as_str() {
            REPLACE => {
                let replaced = self
                    .db
                    .get_json::<Aggregation>(Keyspace::Aggregations, parent.as_bytes())?
                    .and_then(|aggregation| aggregation.replace)
                    .is_some_and(|(_, id)| id == target);
                if !replaced {
                    return Ok(());
                }
                // The latest of the other edits by the original sender takes its place.
                let original_sender = self
                    .pdu(&parent)?
                    .and_then(|parent_pdu| parent_pdu.parse(parent.clone()).ok())
                    .map(|parent_pdu| parent_pdu.sender);
                let mut latest: Option<(u64, OwnedEventId)> = None;
                for (_, relation) in remaining(REPLACE)? {
                    if Some(&relation.sender) != original_sender.as_ref() {
                        continue;
                    }
                    let Some(edit) = self.pdu(&relation.event_id)? else {
                        continue;
                    };
                    let ts = edit
                        .parse(relation.event_id.clone())
                        .map(|edit| u64::from(edit.origin_server_ts.get()))
                        .unwrap_or(0);
                    let candidate = (ts, relation.event_id);
                    if latest.as_ref().is_none_or(|l| candidate > *l) {
                        latest = Some(candidate);
                    }
                }
                self.update_aggregation(batch, &parent, |aggregation| {
                    aggregation.replace = latest;
                })
            }
            REFERENCE => {
                let still = !remaining(REFERENCE)?.is_empty();
                self.update_aggregation(batch, &parent, |aggregation| {
                    aggregation.referenced = still;
                })
            }
            THREAD => {
                let key = thread_key(room_id, &parent);
                let Some(mut thread) =
                    self.db
                        .get_json_through::<Thread>(batch, Keyspace::Threads, key.bytes())?
                else {
                    return Ok(());
                };
                let replies = remaining(THREAD)?;
                batch.delete(
                    Keyspace::ThreadActivity,
                    Key::new().str(room_id.as_str()).u64(thread.latest_position),
                );
                match replies.last() {
                    Some((position, relation)) => {
                        thread.count = replies.len() as u64;
                        thread.latest = Some(relation.event_id.clone());
                        thread.latest_position = *position;
                        batch.put_json(Keyspace::Threads, key, &thread);
                        batch.put(
                            Keyspace::ThreadActivity,
                            Key::new().str(room_id.as_str()).u64(*position),
                            parent.as_str().as_bytes().to_vec(),
                        );
                        Ok(())
                    }
                    None => {
                        batch.delete(Keyspace::Threads, key);
                        self.update_aggregation(batch, &parent, |aggregation| {
                            aggregation.thread = false;
                        })
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

/// Which relations of an event to read: of a relation type, of an event type.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelationFilter<'a> {
    pub rel_type: Option<&'a str>,
    pub kind: Option<&'a str>,
}

impl RelationFilter<'_> {
    pub fn matches(&self, relation: &Relation) -> bool {
        self.rel_type.is_none_or(|t| t == relation.rel_type)
            && self.kind.is_none_or(|k| k == relation.kind)
    }
}
