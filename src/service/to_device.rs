//! To-device messages: events sent to one device (or every device) of a user, outside
//! any room: how encryption keys travel. Each waits in the device's inbox until a sync
//! after it has been answered, that is until the device syncs with a later `since`.

use std::sync::Arc;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::Value;

use crate::{
    Result,
    service::{appservices::interest::Interest, stream::Stream},
    storage::{
        Batch, Db, Keyspace,
        codec::{Key, decode_json},
    },
};

/// The most messages one sync hands a device; the rest follow on the next.
pub const MAX_PER_SYNC: usize = 100;

pub struct ToDevice {
    db: Arc<Db>,
    stream: Arc<Stream>,
    /// Queues the messages of application services' users for them (MSC4203).
    appservices: Arc<Interest>,
}

/// The transaction-id key of a `sendToDevice` call, beside the room-send ones.
pub fn txn_key(user: &UserId, device: &DeviceId, event_type: &str, txn_id: &str) -> Key {
    Key::new()
        .str(user.as_str())
        .str(device.as_str())
        .str("m.to_device")
        .str(event_type)
        .str(txn_id)
}

impl ToDevice {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>, appservices: Arc<Interest>) -> Self {
        Self {
            db,
            stream,
            appservices,
        }
    }

    /// Puts the messages in the inboxes of local devices at one new stream position,
    /// written with `batch` (what else the send records), and wakes the recipients.
    pub fn deliver(
        &self,
        mut batch: Batch,
        messages: Vec<(OwnedUserId, OwnedDeviceId, Value)>,
    ) -> Result<()> {
        let permit = self.stream.next();
        permit.persist_in(&mut batch);
        let mut recipients: Vec<OwnedUserId> = Vec::new();
        for (user, device, event) in &messages {
            batch.put_json(
                Keyspace::ToDevice,
                Key::new()
                    .str(user.as_str())
                    .str(device.as_str())
                    .u64(permit.position()),
                event,
            );
            self.appservices
                .stage_to_device(&mut batch, permit.position(), user, device, event);
            if !recipients.contains(user) {
                recipients.push(user.clone());
            }
        }
        self.db.write(batch)?;
        drop(permit);
        self.appservices.ephemeral_written();
        self.stream
            .notify(recipients.iter().map(|user| user.as_ref()));
        Ok(())
    }

    /// Whether this `sendToDevice` transaction was already carried out.
    pub fn seen(&self, txn: &Key) -> Result<bool> {
        Ok(self.db.contains(Keyspace::TxnIds, txn.bytes())?)
    }

    /// Records a `sendToDevice` transaction in `batch`.
    pub fn stage_txn(&self, batch: &mut Batch, txn: Key) {
        batch.put(Keyspace::TxnIds, txn, Vec::new());
    }

    pub fn batch(&self) -> Batch {
        self.db.batch()
    }

    /// The device's messages up to `until`, oldest first, at most [`MAX_PER_SYNC`]; when
    /// more wait, also the position of the last one handed out.
    pub fn pending(
        &self,
        user: &UserId,
        device: &DeviceId,
        until: u64,
    ) -> Result<(Vec<Value>, Option<u64>)> {
        let prefix = Key::new().str(user.as_str()).str(device.as_str());
        let mut events = Vec::new();
        let mut last = 0;
        for (position, value) in self
            .db
            .stream_range(Keyspace::ToDevice, &prefix, 0, until)?
        {
            if events.len() == MAX_PER_SYNC {
                return Ok((events, Some(last)));
            }
            events.push(decode_json(&value)?);
            last = position;
        }
        Ok((events, None))
    }

    /// Forgets the device's messages up to `position`: a sync from there shows the
    /// device received them.
    pub fn acknowledge(&self, user: &UserId, device: &DeviceId, position: u64) -> Result<()> {
        let prefix = Key::new().str(user.as_str()).str(device.as_str());
        let delivered = self
            .db
            .stream_range(Keyspace::ToDevice, &prefix, 0, position)?;
        if delivered.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for (position, _) in delivered {
            batch.delete(Keyspace::ToDevice, prefix.clone().u64(position));
        }
        self.db.write(batch)?;
        Ok(())
    }
}
