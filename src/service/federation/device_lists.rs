//! Device-list changes, here and across servers.
//!
//! A local user's change (device keys uploaded or signed, a device renamed or deleted,
//! cross-signing keys replaced) takes one position on the device-list stream, written
//! in the same batch as the change, wakes the local users sharing a room with them, and
//! goes as an `m.device_list_update` or `m.signing_key_update` EDU to the servers of
//! those rooms. The same EDUs from other servers drop the cached keys of their user and
//! take a position on the stream, so local clients fetch them again.

use ruma::{
    DeviceId, ServerName, UserId,
    api::federation::transactions::edu::{DeviceListUpdateContent, SigningKeyUpdateContent},
};
use serde_json::{Value, json};

use std::sync::Arc;

use super::queue::{Outgoing, OutgoingQueue};
use crate::{
    Result,
    service::{
        e2ee::{ChangeOf, E2ee, MASTER, SELF_SIGNING},
        rooms::{Audience, Rooms},
        stream::{Permit, Stream},
        users::Users,
    },
    storage::{Batch, Db},
};

/// What changed about one device of a local user.
enum DeviceChange<'a> {
    /// Its keys (uploaded, or signed since).
    Keys(&'a Value),
    /// A new device, with no keys yet.
    Added,
    /// Its display name; its keys stay as they are.
    Renamed,
    Deleted,
}

/// A key write of a local user's, staged in the batch that records the device-list
/// change it makes.
pub enum KeyWrite<'a> {
    /// A device's keys, uploaded or with new signatures.
    DeviceKeys(&'a DeviceId, &'a Value),
    OneTimeKeys(&'a DeviceId, &'a [(String, Value)]),
    FallbackKeys(&'a DeviceId, &'a [(String, Value)]),
    /// A cross-signing key (by usage), new or with new signatures.
    CrossSigningKey(&'a str, &'a Value),
    /// The user's user-signing signatures on another user's master key.
    UserSignatures(&'a UserId, &'a Value),
}

/// Device-list changes of local users told, and other servers' applied.
pub struct DeviceLists {
    pub(super) db: Arc<Db>,
    pub(super) e2ee: Arc<E2ee>,
    pub(super) users: Arc<Users>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) stream: Arc<Stream>,
    pub(super) outgoing: Arc<OutgoingQueue>,
}

impl DeviceLists {
    /// Writes a local user's key changes in one batch with the device-list change they
    /// make: new device keys are a change of that device; cross-signing keys, or
    /// signatures on them, a change of the user's signing keys. One-time and fallback
    /// keys change no list.
    pub fn write_keys(&self, user: &UserId, writes: &[KeyWrite<'_>]) -> Result<()> {
        let mut batch = self.db.batch();
        let mut device_keys = None;
        let mut signing = false;
        let (mut master, mut self_signing) = (None, None);
        for write in writes {
            match *write {
                KeyWrite::DeviceKeys(device, keys) => {
                    self.e2ee.stage_device_keys(&mut batch, user, device, keys);
                    device_keys = Some((device, keys));
                }
                KeyWrite::OneTimeKeys(device, keys) => {
                    self.e2ee
                        .stage_one_time_keys(&mut batch, user, device, keys)?;
                }
                KeyWrite::FallbackKeys(device, keys) => {
                    self.e2ee
                        .stage_fallback_keys(&mut batch, user, device, keys)?;
                }
                KeyWrite::CrossSigningKey(usage, key) => {
                    self.e2ee
                        .stage_cross_signing_key(&mut batch, user, usage, key);
                    signing = true;
                    match usage {
                        MASTER => master = Some(key),
                        SELF_SIGNING => self_signing = Some(key),
                        _ => {}
                    }
                }
                KeyWrite::UserSignatures(target, signatures) => {
                    self.e2ee
                        .stage_user_signatures(&mut batch, user, target, signatures);
                    signing = true;
                }
            }
        }
        if let Some((device, keys)) = device_keys {
            self.device_changed(batch, user, device, DeviceChange::Keys(keys))
        } else if signing {
            self.signing_keys_changed(batch, user, master, self_signing)
        } else {
            if !batch.is_empty() {
                self.db.write(batch)?;
            }
            Ok(())
        }
    }

    /// A local device was renamed: the user's other devices and those who share a room
    /// hear of it (as on Synapse, whether or not it has keys yet).
    pub fn device_renamed(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        self.device_changed(self.db.batch(), user, device, DeviceChange::Renamed)
    }

    /// A local user signed in on a new device: their other devices and those who share a
    /// room hear of it before it has uploaded keys.
    pub fn device_added(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        self.device_changed(self.db.batch(), user, device, DeviceChange::Added)
    }

    /// Writes `batch` (the change itself) with a device-list change of `device`, tells the
    /// local users sharing a room and the other servers of those rooms.
    fn device_changed(
        &self,
        mut batch: Batch,
        user: &UserId,
        device: &DeviceId,
        change: DeviceChange<'_>,
    ) -> Result<()> {
        let (permit, previous) =
            self.e2ee
                .stage_change(&mut batch, user, ChangeOf::LocalDevices)?;
        let audience = self.rooms.shared_audience(user)?;
        if !audience.servers.is_empty() {
            let keys = match change {
                DeviceChange::Keys(keys) => Some(keys.clone()),
                DeviceChange::Renamed => self.e2ee.device_keys(user, device)?,
                DeviceChange::Added | DeviceChange::Deleted => None,
            };
            let mut content = json!({
                "user_id": user,
                "device_id": device,
                "stream_id": permit.position(),
                "prev_id": previous.into_iter().collect::<Vec<_>>(),
                "deleted": matches!(change, DeviceChange::Deleted),
            });
            if let Some(keys) = keys {
                content["keys"] = keys;
            }
            let name = match change {
                DeviceChange::Deleted => None,
                _ => self
                    .users
                    .device(user, device)?
                    .and_then(|record| record.display_name),
            };
            if let Some(name) = name {
                content["device_display_name"] = name.into();
            }
            self.enqueue(
                &mut batch,
                &audience.servers,
                json!({ "edu_type": "m.device_list_update", "content": content }),
            )?;
        }
        self.write_and_wake(batch, permit, user, &audience)
    }

    /// Deletes a local device with its tokens and everything it published; those who
    /// encrypt for it hear that it is gone.
    pub fn remove_device(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        let mut batch = self.db.batch();
        self.users.stage_device_removal(&mut batch, user, device)?;
        self.e2ee.stage_device_removal(&mut batch, user, device)?;
        let written = self.device_changed(batch, user, device, DeviceChange::Deleted);
        // Also after a failure: whether the write landed is not known.
        self.users.tokens_revoked();
        written
    }

    /// Writes `batch` (new cross-signing keys or signatures on them) with a device-list
    /// change of `user`; when their master or self-signing key is among `changed`, the
    /// other servers sharing a room hear of it (the user-signing key is private).
    fn signing_keys_changed(
        &self,
        mut batch: Batch,
        user: &UserId,
        master_key: Option<&Value>,
        self_signing_key: Option<&Value>,
    ) -> Result<()> {
        let (permit, _) = self
            .e2ee
            .stage_change(&mut batch, user, ChangeOf::LocalSigningKeys)?;
        let audience = self.rooms.shared_audience(user)?;
        if !audience.servers.is_empty() && (master_key.is_some() || self_signing_key.is_some()) {
            let mut content = json!({ "user_id": user });
            if let Some(master) = master_key {
                content["master_key"] = master.clone();
            }
            if let Some(self_signing) = self_signing_key {
                content["self_signing_key"] = self_signing.clone();
            }
            self.enqueue(
                &mut batch,
                &audience.servers,
                json!({ "edu_type": "m.signing_key_update", "content": content }),
            )?;
        }
        self.write_and_wake(batch, permit, user, &audience)
    }

    fn enqueue(
        &self,
        batch: &mut Batch,
        servers: &[ruma::OwnedServerName],
        edu: Value,
    ) -> Result<()> {
        let raw = serde_json::value::to_raw_value(&edu).map_err(crate::Error::internal)?;
        self.outgoing.enqueue(batch, servers, &Outgoing::Edu(raw));
        Ok(())
    }

    fn write_and_wake(
        &self,
        batch: Batch,
        permit: Permit,
        user: &UserId,
        audience: &Audience,
    ) -> Result<()> {
        self.db.write(batch)?;
        drop(permit);
        self.stream
            .notify(std::iter::once(user).chain(audience.users.iter().map(|u| u.as_ref())));
        self.outgoing.wake(&audience.servers);
        Ok(())
    }

    /// Applies an `m.device_list_update` from `origin`, for its own users only.
    pub fn receive_device_list_update(
        &self,
        origin: &ServerName,
        content: &DeviceListUpdateContent,
    ) {
        self.remote_changed(origin, &content.user_id);
    }

    /// Applies an `m.signing_key_update` from `origin`, for its own users only.
    pub fn receive_signing_key_update(
        &self,
        origin: &ServerName,
        content: &SigningKeyUpdateContent,
    ) {
        self.remote_changed(origin, &content.user_id);
    }

    /// Another server's user changed devices or keys: their cached keys go, and the local
    /// users sharing a room with them see them in `device_lists.changed`.
    fn remote_changed(&self, origin: &ServerName, user: &UserId) {
        if user.server_name() != origin {
            tracing::debug!(%origin, %user, "device-list update for another server's user ignored");
            return;
        }
        let result = (|| -> Result<()> {
            let audience = self.rooms.local_audience_of(user)?;
            if audience.is_empty() {
                // Nobody here shares a room with them: nobody is to be told.
                return self.e2ee.forget_remote_devices(user);
            }
            let mut batch = self.db.batch();
            let (permit, _) = self.e2ee.stage_change(&mut batch, user, ChangeOf::Remote)?;
            self.db.write(batch)?;
            drop(permit);
            self.stream
                .notify(audience.iter().map(|user| user.as_ref()));
            Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!(%error, %origin, %user, "device-list update not applied");
        }
    }
}
