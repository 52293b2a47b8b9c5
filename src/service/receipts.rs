//! Read receipts (`m.read`, `m.read.private`), kept per room, user, type and thread, with
//! a per-room change stream for `/sync`.

use std::sync::Arc;

use ruma::{EventId, OwnedEventId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::stream::Stream;
use crate::{
    Result,
    storage::{
        Db, Keyspace,
        codec::{Key, decode_json},
    },
};

/// The receipt types that mark events read.
pub const READ_TYPES: [&str; 2] = ["m.read", "m.read.private"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: OwnedEventId,
    pub ts: u64,
    pub position: u64,
    pub thread_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Change {
    user_id: OwnedUserId,
    receipt_type: String,
    receipt: Receipt,
}

pub struct Receipts {
    db: Arc<Db>,
    stream: Arc<Stream>,
}

impl Receipts {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>) -> Self {
        Self { db, stream }
    }

    /// Records a receipt and wakes `notify` (the room's members, or only the user for a
    /// private receipt).
    pub fn set(
        &self,
        room_id: &RoomId,
        user: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<String>,
        notify: &[OwnedUserId],
    ) -> Result<()> {
        let permit = self.stream.next();
        let receipt = Receipt {
            event_id: event_id.to_owned(),
            ts: crate::service::users::now_ms(),
            position: permit.position(),
            thread_id: thread_id.clone(),
        };
        let key = Key::new()
            .str(room_id.as_str())
            .str(receipt_type)
            .str(thread_id.as_deref().unwrap_or(""))
            .str(user.as_str());
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Receipts, key, &receipt);
        if let Some(thread) = thread_id.as_deref().filter(|thread| *thread != "main") {
            batch.put_json(
                Keyspace::ThreadReceipts,
                Key::new()
                    .str(user.as_str())
                    .str(room_id.as_str())
                    .str(receipt_type)
                    .str(thread),
                &receipt,
            );
        }
        batch.put_json(
            Keyspace::ReceiptStream,
            Key::new().str(room_id.as_str()).u64(permit.position()),
            &Change {
                user_id: user.to_owned(),
                receipt_type: receipt_type.to_owned(),
                receipt,
            },
        );
        permit.persist_in(&mut batch);
        self.stream.note_room(room_id, permit.position());
        self.db.write(batch)?;
        drop(permit);
        self.stream.notify(notify.iter().map(|user| user.as_ref()));
        Ok(())
    }

    /// A user's read receipts in a room (public and private): the unthreaded ones
    /// (`None`), the main timeline's (`Some("main")`) and each thread's.
    pub fn read_receipts(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Vec<(Option<String>, Receipt)>> {
        let mut found = Vec::new();
        for receipt_type in READ_TYPES {
            for thread in ["", "main"] {
                let key = Key::new()
                    .str(room_id.as_str())
                    .str(receipt_type)
                    .str(thread)
                    .str(user.as_str());
                if let Some(receipt) = self
                    .db
                    .get_json::<Receipt>(Keyspace::Receipts, key.bytes())?
                {
                    found.push(((!thread.is_empty()).then(|| thread.to_owned()), receipt));
                }
            }
        }
        let prefix = Key::new().str(user.as_str()).str(room_id.as_str());
        for (_, value) in self
            .db
            .scan_prefix(Keyspace::ThreadReceipts, prefix.bytes())?
        {
            let receipt: Receipt = decode_json(&value)?;
            found.push((receipt.thread_id.clone(), receipt));
        }
        Ok(found)
    }

    /// The `m.receipt` ephemeral event content for receipts in a room after `since`, as
    /// seen by `viewer` (others' private receipts are left out). `None` if there are none.
    pub fn content_since(
        &self,
        room_id: &RoomId,
        viewer: &UserId,
        since: u64,
        until: u64,
    ) -> Result<Option<serde_json::Value>> {
        let prefix = Key::new().str(room_id.as_str());
        let mut changes = Vec::new();
        for (_, value) in self
            .db
            .stream_range(Keyspace::ReceiptStream, &prefix, since, until)?
        {
            changes.push(decode_json::<Change>(&value)?);
        }
        let mut content = serde_json::Map::new();
        for change in changes {
            if change.receipt_type == "m.read.private" && change.user_id != viewer {
                continue;
            }
            let mut receipt = json!({ "ts": change.receipt.ts });
            if let Some(thread) = &change.receipt.thread_id {
                receipt["thread_id"] = thread.as_str().into();
            }
            let event = content
                .entry(change.receipt.event_id.to_string())
                .or_insert_with(|| json!({}));
            event
                .as_object_mut()
                .expect("built as an object")
                .entry(change.receipt_type)
                .or_insert_with(|| json!({}))[change.user_id.as_str()] = receipt;
        }
        Ok((!content.is_empty()).then_some(serde_json::Value::Object(content)))
    }
}
