//! Receipts (`m.read`, `m.read.private`, and delivered ones: `delivery.rs`), kept per
//! room, user, type and thread, with a per-room change stream for `/sync`.

use std::sync::Arc;

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    appservices::interest::{EphemeralChange, Interest},
    stream::Stream,
};
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
    /// Queues receipts for the application services that want them.
    appservices: Arc<Interest>,
}

impl Receipts {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>, appservices: Arc<Interest>) -> Self {
        Self {
            db,
            stream,
            appservices,
        }
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
        let mut batch = self.db.batch();
        self.stage(
            &mut batch,
            (room_id, user, receipt_type),
            event_id,
            thread_id,
            permit.position(),
        );
        permit.persist_in(&mut batch);
        self.db.write(batch)?;
        drop(permit);
        self.appservices.ephemeral_written();
        self.stream.notify(notify.iter().map(|user| user.as_ref()));
        Ok(())
    }

    /// Records one unthreaded receipt of a user in each of several rooms, in one write,
    /// and wakes `notify`.
    pub fn set_in_rooms(
        &self,
        user: &UserId,
        receipt_type: &str,
        receipts: &[(OwnedRoomId, OwnedEventId)],
        notify: &[OwnedUserId],
    ) -> Result<()> {
        let permit = self.stream.next();
        let mut batch = self.db.batch();
        for (room_id, event_id) in receipts {
            self.stage(
                &mut batch,
                (room_id, user, receipt_type),
                event_id,
                None,
                permit.position(),
            );
        }
        permit.persist_in(&mut batch);
        self.db.write(batch)?;
        drop(permit);
        self.appservices.ephemeral_written();
        self.stream.notify(notify.iter().map(|user| user.as_ref()));
        Ok(())
    }

    /// Stages a receipt at a stream position.
    fn stage(
        &self,
        batch: &mut crate::storage::Batch,
        (room_id, user, receipt_type): (&RoomId, &UserId, &str),
        event_id: &EventId,
        thread_id: Option<String>,
        position: u64,
    ) {
        let receipt = Receipt {
            event_id: event_id.to_owned(),
            ts: crate::service::users::now_ms(),
            position,
            thread_id: thread_id.clone(),
        };
        let key = Key::new()
            .str(room_id.as_str())
            .str(receipt_type)
            .str(thread_id.as_deref().unwrap_or(""))
            .str(user.as_str());
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
        self.appservices.stage_ephemeral(
            batch,
            position,
            EphemeralChange::Receipt {
                room_id,
                user,
                receipt_type,
                event_id,
                ts: receipt.ts,
                thread_id: thread_id.as_deref(),
            },
        );
        batch.put_json(
            Keyspace::ReceiptStream,
            Key::new().str(room_id.as_str()).u64(position),
            &Change {
                user_id: user.to_owned(),
                receipt_type: receipt_type.to_owned(),
                receipt,
            },
        );
        self.stream.note_room(room_id, position);
    }

    /// A user's unthreaded receipt of a type in a room.
    pub fn get(
        &self,
        room_id: &RoomId,
        user: &UserId,
        receipt_type: &str,
    ) -> Result<Option<Receipt>> {
        let key = Key::new()
            .str(room_id.as_str())
            .str(receipt_type)
            .str("")
            .str(user.as_str());
        Ok(self.db.get_json(Keyspace::Receipts, key.bytes())?)
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
    /// seen by `viewer` (others' private receipts are left out, and with `only_own` all
    /// others' receipts: a story's views are its author's). `None` if there are none.
    pub fn content_since(
        &self,
        room_id: &RoomId,
        viewer: &UserId,
        since: u64,
        until: u64,
        only_own: impl FnOnce() -> Result<bool>,
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
        // Worked out only when someone else's receipt is there to show.
        let mut only_own = Some(only_own);
        let mut others_hidden = false;
        for change in changes {
            if change.user_id != viewer {
                if let Some(only_own) = only_own.take() {
                    others_hidden = only_own()?;
                }
                if others_hidden || change.receipt_type == "m.read.private" {
                    continue;
                }
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
