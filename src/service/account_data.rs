//! Global and per-room account data, and its change stream for `/sync`.

use std::sync::Arc;

use ruma::{RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::{
    Result,
    service::stream::Stream,
    storage::{
        Db, Keyspace,
        codec::{Key, decode_json},
    },
};

#[derive(Serialize, Deserialize)]
struct Stored {
    position: u64,
    content: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct Change {
    room_id: String,
    event_type: String,
}

pub struct AccountData {
    db: Arc<Db>,
    stream: Arc<Stream>,
}

fn room_part(room_id: Option<&RoomId>) -> &str {
    room_id.map_or("", RoomId::as_str)
}

impl AccountData {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>) -> Self {
        Self { db, stream }
    }

    pub fn get(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
    ) -> Result<Option<serde_json::Value>> {
        let key = Key::new()
            .str(user_id.as_str())
            .str(room_part(room_id))
            .str(event_type);
        let stored: Option<Stored> = self.db.get_json(Keyspace::AccountData, key.bytes())?;
        Ok(stored.map(|stored| stored.content))
    }

    /// The users this user ignores (`m.ignored_user_list`): their messages and invites
    /// are not served to this user.
    pub fn ignored_users(&self, user_id: &UserId) -> Result<std::collections::HashSet<String>> {
        let content = self.get(user_id, None, "m.ignored_user_list")?;
        Ok(content
            .as_ref()
            .and_then(|content| content.get("ignored_users"))
            .and_then(serde_json::Value::as_object)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Stores account data and wakes the user's syncs. An empty object is kept as is:
    /// the spec has no deletion, clients clear data by writing `{}`.
    pub fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        content: serde_json::Value,
    ) -> Result<()> {
        let permit = self.stream.next();
        let position = permit.position();
        let key = Key::new()
            .str(user_id.as_str())
            .str(room_part(room_id))
            .str(event_type);
        let previous: Option<Stored> = self.db.get_json(Keyspace::AccountData, key.bytes())?;
        let mut batch = self.db.batch();
        if let Some(previous) = previous {
            batch.delete(
                Keyspace::AccountDataStream,
                Key::new().str(user_id.as_str()).u64(previous.position),
            );
        }
        batch.put_json(Keyspace::AccountData, key, &Stored { position, content });
        batch.put_json(
            Keyspace::AccountDataStream,
            Key::new().str(user_id.as_str()).u64(position),
            &Change {
                room_id: room_part(room_id).to_owned(),
                event_type: event_type.to_owned(),
            },
        );
        permit.persist_in(&mut batch);
        self.db.write(batch)?;
        drop(permit);
        self.stream.notify([user_id]);
        Ok(())
    }

    /// All of a user's account data in one room: `(type, content)`.
    pub fn of_room(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<(String, serde_json::Value)>> {
        let prefix = Key::new().str(user_id.as_str()).str(room_id.as_str());
        let mut out = Vec::new();
        for (key, value) in self.db.scan_prefix(Keyspace::AccountData, prefix.bytes())? {
            let kind = &key[prefix.bytes().len()..];
            let kind = kind.strip_suffix(&[0xFF]).unwrap_or(kind);
            let stored: Stored = decode_json(&value)?;
            out.push((String::from_utf8_lossy(kind).into_owned(), stored.content));
        }
        Ok(out)
    }

    /// Account data changed after `since` (all of it when `since` is 0), up to `until`:
    /// `(room_id or None, type, content)`.
    pub fn changes_since(
        &self,
        user_id: &UserId,
        since: u64,
        until: u64,
    ) -> Result<Vec<(Option<String>, String, serde_json::Value)>> {
        let prefix = Key::new().str(user_id.as_str());
        let mut changes = Vec::new();
        for (_, value) in
            self.db
                .stream_range(Keyspace::AccountDataStream, &prefix, since, until)?
        {
            changes.push(decode_json::<Change>(&value)?);
        }
        let mut out = Vec::new();
        for change in changes {
            let room_id = (!change.room_id.is_empty()).then_some(change.room_id);
            let key = Key::new()
                .str(user_id.as_str())
                .str(room_id.as_deref().unwrap_or(""))
                .str(&change.event_type);
            if let Some(stored) = self
                .db
                .get_json::<Stored>(Keyspace::AccountData, key.bytes())?
            {
                out.push((room_id, change.event_type, stored.content));
            }
        }
        Ok(out)
    }
}
