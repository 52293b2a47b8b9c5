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

use super::queue::Outgoing;
use crate::{
    Result,
    service::{Services, e2ee::ChangeOf},
    storage::Batch,
};

/// What changed about one device of a local user.
pub enum DeviceChange<'a> {
    /// Its keys (uploaded, or signed since).
    Keys(&'a Value),
    /// Its display name; its keys stay as they are.
    Renamed,
    Deleted,
}

/// Writes `batch` (the change itself) with a device-list change of `device`, tells the
/// local users sharing a room and the other servers of those rooms.
pub fn device_changed(
    services: &Services,
    mut batch: Batch,
    user: &UserId,
    device: &DeviceId,
    change: DeviceChange<'_>,
) -> Result<()> {
    let (permit, previous) =
        services
            .e2ee
            .stage_change(&mut batch, user, ChangeOf::LocalDevices)?;
    let audience = services.rooms.shared_audience(user)?;
    if !audience.servers.is_empty() {
        let keys = match change {
            DeviceChange::Keys(keys) => Some(keys.clone()),
            DeviceChange::Renamed => services.e2ee.device_keys(user, device)?,
            DeviceChange::Deleted => None,
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
            _ => services
                .users
                .device(user, device)?
                .and_then(|record| record.display_name),
        };
        if let Some(name) = name {
            content["device_display_name"] = name.into();
        }
        enqueue(
            services,
            &mut batch,
            &audience.servers,
            json!({ "edu_type": "m.device_list_update", "content": content }),
        )?;
    }
    write_and_wake(services, batch, permit, user, &audience)
}

/// Deletes a local device with its tokens and everything it published; those who
/// encrypt for it hear that it is gone.
pub fn remove_device(services: &Services, user: &UserId, device: &DeviceId) -> Result<()> {
    let published = services.e2ee.device_keys(user, device)?.is_some();
    let mut batch = services.db.batch();
    services
        .users
        .stage_device_removal(&mut batch, user, device)?;
    services
        .e2ee
        .stage_device_removal(&mut batch, user, device)?;
    if published {
        device_changed(services, batch, user, device, DeviceChange::Deleted)
    } else {
        services.db.write(batch)?;
        Ok(())
    }
}

/// Writes `batch` (new cross-signing keys or signatures on them) with a device-list
/// change of `user`; when their master or self-signing key is among `changed`, the
/// other servers sharing a room hear of it (the user-signing key is private).
pub fn signing_keys_changed(
    services: &Services,
    mut batch: Batch,
    user: &UserId,
    master_key: Option<&Value>,
    self_signing_key: Option<&Value>,
) -> Result<()> {
    let (permit, _) = services
        .e2ee
        .stage_change(&mut batch, user, ChangeOf::LocalSigningKeys)?;
    let audience = services.rooms.shared_audience(user)?;
    if !audience.servers.is_empty() && (master_key.is_some() || self_signing_key.is_some()) {
        let mut content = json!({ "user_id": user });
        if let Some(master) = master_key {
            content["master_key"] = master.clone();
        }
        if let Some(self_signing) = self_signing_key {
            content["self_signing_key"] = self_signing.clone();
        }
        enqueue(
            services,
            &mut batch,
            &audience.servers,
            json!({ "edu_type": "m.signing_key_update", "content": content }),
        )?;
    }
    write_and_wake(services, batch, permit, user, &audience)
}

fn enqueue(
    services: &Services,
    batch: &mut Batch,
    servers: &[ruma::OwnedServerName],
    edu: Value,
) -> Result<()> {
    let raw = serde_json::value::to_raw_value(&edu).map_err(crate::Error::internal)?;
    services
        .outgoing
        .enqueue(batch, servers, &Outgoing::Edu(raw));
    Ok(())
}

fn write_and_wake(
    services: &Services,
    batch: Batch,
    permit: crate::service::stream::Permit,
    user: &UserId,
    audience: &crate::service::rooms::Audience,
) -> Result<()> {
    services.db.write(batch)?;
    drop(permit);
    services
        .stream
        .notify(std::iter::once(user).chain(audience.users.iter().map(|u| u.as_ref())));
    services.outgoing.wake(&audience.servers);
    Ok(())
}

/// Applies an `m.device_list_update` from `origin`, for its own users only.
pub fn receive_device_list_update(
    services: &Services,
    origin: &ServerName,
    content: &DeviceListUpdateContent,
) {
    remote_changed(services, origin, &content.user_id);
}

/// Applies an `m.signing_key_update` from `origin`, for its own users only.
pub fn receive_signing_key_update(
    services: &Services,
    origin: &ServerName,
    content: &SigningKeyUpdateContent,
) {
    remote_changed(services, origin, &content.user_id);
}

/// Another server's user changed devices or keys: their cached keys go, and the local
/// users sharing a room with them see them in `device_lists.changed`.
fn remote_changed(services: &Services, origin: &ServerName, user: &UserId) {
    if user.server_name() != origin {
        tracing::debug!(%origin, %user, "device-list update for another server's user ignored");
        return;
    }
    let result = (|| -> Result<()> {
        let audience = services.rooms.local_audience_of(user)?;
        if audience.is_empty() {
            // Nobody here shares a room with them: nobody is to be told.
            return services.e2ee.forget_remote_devices(user);
        }
        let mut batch = services.db.batch();
        let (permit, _) = services
            .e2ee
            .stage_change(&mut batch, user, ChangeOf::Remote)?;
        services.db.write(batch)?;
        drop(permit);
        services
            .stream
            .notify(audience.iter().map(|user| user.as_ref()));
        Ok(())
    })();
    if let Err(error) = result {
        tracing::warn!(%error, %origin, %user, "device-list update not applied");
    }
}
