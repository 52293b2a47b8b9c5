//! Message retention (MSC1763): a room's `m.room.retention` `max_lifetime` says how
//! long its messages live. Past it a message is expired: its stored PDU is rewritten to
//! its redacted form (its signatures stay valid, so the room's DAG is whole for other
//! servers) and it is never served to clients again. State events never expire.

use std::collections::HashSet;

use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::{Rooms, pdu::StoredPdu};
use crate::{
    Error, Result,
    storage::{Batch, Db, Keyspace},
};

/// The room type of a story (`type` in the create event's content): a room of its own
/// per story, whose messages expire (see `docs/stories.md`).
pub const STORY_ROOM_TYPE: &str = "org.palisade.story";

/// The rooms noted as setting a retention policy.
pub(super) fn load_rooms(db: &Db) -> Result<HashSet<OwnedRoomId>> {
    Ok(db
        .scan_prefix(Keyspace::RetentionRooms, &[])?
        .into_iter()
        .filter_map(|(key, _)| OwnedRoomId::try_from(String::from_utf8_lossy(&key).as_ref()).ok())
        .collect())
}

impl Rooms {
    /// Notes, in `batch`, a room that sets a retention policy (an `m.room.retention`
    /// event is being written).
    pub fn stage_retention_room(&self, batch: &mut Batch, room_id: &RoomId) {
        batch.put(
            Keyspace::RetentionRooms,
            room_id.as_bytes().to_vec(),
            Vec::new(),
        );
        self.retention_rooms.write().insert(room_id.to_owned());
    }

    /// The rooms that set a retention policy.
    pub fn retention_rooms(&self) -> Vec<OwnedRoomId> {
        self.retention_rooms.read().iter().cloned().collect()
    }

    /// Stops expiring a room's messages (a closed story, whose are all expired).
    pub fn stop_retention(&self, room_id: &RoomId) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete(Keyspace::RetentionRooms, room_id.as_bytes().to_vec());
        self.db.write(batch)?;
        self.retention_rooms.write().remove(room_id);
        Ok(())
    }

    /// The room's `m.room.retention` `max_lifetime` in milliseconds, if it sets one.
    pub fn max_lifetime(&self, room_id: &RoomId) -> Result<Option<u64>> {
        if !self.retention_rooms.read().contains(room_id) {
            return Ok(None);
        }
        Ok(self
            .state_content(room_id, "m.room.retention", "")?
            .and_then(|content| content.get("max_lifetime").and_then(Value::as_u64))
            .filter(|lifetime| *lifetime > 0))
    }

    /// When the room was made: its create event's timestamp, in milliseconds.
    pub fn created_at(&self, room_id: &RoomId) -> Result<Option<u64>> {
        let state = self.current_state(room_id)?;
        Ok(
            match state.get(&("m.room.create".to_owned(), String::new())) {
                Some(event_id) => self
                    .state_event(event_id)?
                    .map(|pdu| u64::from(pdu.origin_server_ts.get())),
                None => None,
            },
        )
    }

    /// The room's type (`type` in its create event), if it has one.
    pub fn room_type(&self, room_id: &RoomId) -> Result<Option<String>> {
        Ok(self
            .state_content(room_id, "m.room.create", "")?
            .and_then(|content| {
                content
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }))
    }

    /// Whether the room is a story.
    pub fn is_story(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.room_type(room_id)?.as_deref() == Some(STORY_ROOM_TYPE))
    }

    /// Whether `viewer` sees only their own receipts in the room: in a story, views
    /// (read receipts) are for its author alone.
    pub fn receipts_only_own(&self, room_id: &RoomId, viewer: &UserId) -> Result<bool> {
        if !self.is_story(room_id)? {
            return Ok(false);
        }
        let state = self.current_state(room_id)?;
        let author = match state.get(&("m.room.create".to_owned(), String::new())) {
            Some(event_id) => self.state_event(event_id)?.map(|pdu| pdu.sender.clone()),
            None => None,
        };
        Ok(author.as_deref() != Some(viewer))
    }

    /// Whether a stored event is past `max_lifetime` (a message; state never is).
    pub fn is_past_lifetime(stored: &StoredPdu, max_lifetime: Option<u64>) -> bool {
        if stored.expired {
            return true;
        }
        let Some(lifetime) = max_lifetime else {
            return false;
        };
        let Ok(fields) = serde_json::from_str::<Fields>(stored.pdu.get()) else {
            return false;
        };
        fields.state_key.is_none()
            && u64::from(fields.origin_server_ts.get()).saturating_add(lifetime)
                <= u64::from(MilliSecondsSinceUnixEpoch::now().get())
    }

    /// The PDU as other servers are sent it: a message past its room's lifetime goes in
    /// its redacted form even before the expiry task has rewritten it.
    pub fn pdu_for_servers(&self, stored: StoredPdu) -> Result<Box<serde_json::value::RawValue>> {
        if stored.expired {
            return Ok(stored.pdu);
        }
        let lifetime = self.max_lifetime(&stored.room_id)?;
        if !Self::is_past_lifetime(&stored, lifetime) {
            return Ok(stored.pdu);
        }
        let object: ruma::CanonicalJsonObject =
            serde_json::from_str(stored.pdu.get()).map_err(Error::internal)?;
        let redacted = self.redacted(&stored.room_id, object)?;
        serde_json::value::to_raw_value(&redacted).map_err(Error::internal)
    }

    /// An event's redacted form, by its room version's rules.
    fn redacted(
        &self,
        room_id: &RoomId,
        object: ruma::CanonicalJsonObject,
    ) -> Result<ruma::CanonicalJsonObject> {
        let version = self
            .room(room_id)?
            .map(|room| room.version)
            .ok_or_else(|| Error::internal("an event of an unknown room"))?;
        let rules = Self::rules(&version)?;
        ruma::canonical_json::redact(object, &rules.redaction, None).map_err(Error::internal)
    }

    /// Expires a message: keeps only its redacted form. Returns its content as it was
    /// (for the media it referred to), or `None` if it was already expired, redacted or
    /// is a state event.
    pub async fn expire(&self, event_id: &EventId) -> Result<Option<Value>> {
        let Some(stored) = self.pdu(event_id)? else {
            return Ok(None);
        };
        let lock = self.lock(&stored.room_id);
        let _room = lock.lock().await;
        let Some(mut stored) = self.pdu(event_id)? else {
            return Ok(None);
        };
        if stored.expired {
            return Ok(None);
        }
        let object: ruma::CanonicalJsonObject =
            serde_json::from_str(stored.pdu.get()).map_err(Error::internal)?;
        if object.contains_key("state_key") {
            return Ok(None);
        }
        let content = object
            .get("content")
            .map(|content| Value::from(content.clone()));
        let redacted = self.redacted(&stored.room_id, object)?;
        stored.pdu = serde_json::value::to_raw_value(&redacted).map_err(Error::internal)?;
        stored.expired = true;
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Pdus, event_id.as_bytes().to_vec(), &stored);
        self.db.write(batch)?;
        self.served.forget(event_id);
        self.state_events.forget(event_id);
        Ok(if stored.redacted_by.is_some() {
            None
        } else {
            content
        })
    }
}

#[derive(serde::Deserialize)]
struct Fields {
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    state_key: Option<String>,
}
