//! To-device messages across servers: a local user's message to other servers' users
//! goes as one `m.direct_to_device` EDU per server; such EDUs from other servers fill
//! local devices' inboxes.

use std::collections::BTreeMap;

use ruma::{
    OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId,
    api::federation::transactions::edu::DirectDeviceContent, to_device::DeviceIdOrAllDevices,
};
use serde_json::{Value, json};

use std::sync::Arc;

use super::queue::{Outgoing, OutgoingQueue};
use crate::{
    Result,
    service::{
        to_device::ToDevice,
        users::{Users, random_string},
    },
    storage::codec::Key,
};

/// To-device messages delivered here or sent on to other servers, and theirs taken.
pub struct ToDeviceRelay {
    pub(super) server_name: OwnedServerName,
    pub(super) users: Arc<Users>,
    pub(super) to_device: Arc<ToDevice>,
    pub(super) outgoing: Arc<OutgoingQueue>,
}

impl ToDeviceRelay {
    /// Sends `event_type` from `sender` to the devices named in `messages` (a device id or
    /// `*` for all of a user's devices), recording `txn` in the same write. Unknown users
    /// and devices are skipped, as the spec says.
    pub fn send(
        &self,
        sender: &UserId,
        event_type: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<DeviceIdOrAllDevices, Value>>,
        txn: Key,
    ) -> Result<()> {
        let mut batch = self.to_device.batch();
        self.to_device.stage_txn(&mut batch, txn);
        let mut local = Vec::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, BTreeMap<String, Value>>> =
            BTreeMap::new();
        for (user, devices) in messages {
            if user.server_name() == self.server_name {
                local.extend(self.local_messages(sender, event_type, &user, devices)?);
            } else {
                let server = remote.entry(user.server_name().to_owned()).or_default();
                let user_messages = server.entry(user).or_default();
                for (device, content) in devices {
                    user_messages.insert(device.to_string(), content);
                }
            }
        }
        let servers: Vec<OwnedServerName> = remote.keys().cloned().collect();
        for (server, messages) in remote {
            let edu = json!({
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": sender,
                    "type": event_type,
                    "message_id": random_string(24),
                    "messages": messages,
                },
            });
            let raw = serde_json::value::to_raw_value(&edu).map_err(crate::Error::internal)?;
            self.outgoing.enqueue(
                &mut batch,
                std::slice::from_ref(&server),
                &Outgoing::Edu(raw),
            );
        }
        self.to_device.deliver(batch, local)?;
        self.outgoing.wake(&servers);
        Ok(())
    }

    /// The messages for a local user's devices, `*` spread to all of them.
    fn local_messages(
        &self,
        sender: &UserId,
        event_type: &str,
        user: &UserId,
        devices: BTreeMap<DeviceIdOrAllDevices, Value>,
    ) -> Result<Vec<(OwnedUserId, OwnedDeviceId, Value)>> {
        let known: Vec<OwnedDeviceId> = self
            .users
            .devices(user)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut out = Vec::new();
        for (target, content) in devices {
            let event = json!({ "sender": sender, "type": event_type, "content": content });
            match target {
                DeviceIdOrAllDevices::AllDevices => {
                    for device in &known {
                        out.push((user.to_owned(), device.clone(), event.clone()));
                    }
                }
                DeviceIdOrAllDevices::DeviceId(device) => {
                    if known.contains(&device) {
                        out.push((user.to_owned(), device, event));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Applies an `m.direct_to_device` EDU from `origin`: its own user's messages to this
    /// server's users.
    pub fn receive(&self, origin: &ServerName, content: DirectDeviceContent) {
        if content.sender.server_name() != origin {
            tracing::debug!(%origin, sender = %content.sender, "to-device message for another server's user ignored");
            return;
        }
        let result = (|| -> Result<()> {
            let mut local = Vec::new();
            for (user, devices) in content.messages {
                if user.server_name() != self.server_name {
                    continue;
                }
                let devices = devices
                    .into_iter()
                    .filter_map(|(device, raw)| {
                        Some((device, raw.deserialize_as_unchecked::<Value>().ok()?))
                    })
                    .collect();
                local.extend(self.local_messages(
                    &content.sender,
                    content.ev_type.to_string().as_str(),
                    &user,
                    devices,
                )?);
            }
            if local.is_empty() {
                return Ok(());
            }
            self.to_device.deliver(self.to_device.batch(), local)
        })();
        if let Err(error) = result {
            tracing::warn!(%error, %origin, "to-device messages not delivered");
        }
    }
}
