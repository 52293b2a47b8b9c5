//! What `/keys/query` (client and federation) and `/user/devices` answer about this
//! server's users.

use std::collections::BTreeMap;

use ruma::{OneTimeKeyAlgorithm, OwnedDeviceId, UserId};
use serde_json::{Value, json};

use super::{E2ee, MASTER, SELF_SIGNING, USER_SIGNING, signatures};
use crate::{Result, service::users::Users};

/// A local user's published keys.
#[derive(Debug, Default)]
pub struct UserKeys {
    pub devices: BTreeMap<OwnedDeviceId, Value>,
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
    /// Only for the user themselves.
    pub user_signing_key: Option<Value>,
}

impl E2ee {
    /// A local user's device keys (the devices asked for, or all when none is), each with
    /// its display name in `unsigned`, and their cross-signing keys. `requester` is the
    /// local user asking, if any: their own user-signing key is shown to them, and their
    /// user-signing signatures on this user's master key.
    pub fn local_keys(
        &self,
        users: &Users,
        user: &UserId,
        devices: &[OwnedDeviceId],
        requester: Option<&UserId>,
    ) -> Result<UserKeys> {
        let names: BTreeMap<OwnedDeviceId, Option<String>> = users
            .devices(user)?
            .into_iter()
            .map(|(id, record)| (id, record.display_name))
            .collect();
        let mut out = UserKeys::default();
        for (device_id, mut keys) in self.all_device_keys(user)? {
            if !devices.is_empty() && !devices.contains(&device_id) {
                continue;
            }
            if let Some(Some(name)) = names.get(&device_id)
                && let Some(object) = keys.as_object_mut()
            {
                object.insert(
                    "unsigned".to_owned(),
                    json!({ "device_display_name": name }),
                );
            }
            out.devices.insert(device_id, keys);
        }
        out.master_key = self.cross_signing_key(user, MASTER)?;
        if let (Some(master), Some(requester)) = (&mut out.master_key, requester)
            && requester != user
            && let Some(theirs) = self.user_signatures(requester, user)?
        {
            signatures::merge(master, &theirs);
        }
        out.self_signing_key = self.cross_signing_key(user, SELF_SIGNING)?;
        if requester == Some(user) {
            out.user_signing_key = self.cross_signing_key(user, USER_SIGNING)?;
        }
        Ok(out)
    }

    /// One key per device asked for (`/keys/claim`, client and federation): user id →
    /// device id → key id → key. Devices without a key are left out.
    pub fn claim_local(
        &self,
        user: &UserId,
        devices: &BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>,
    ) -> Result<BTreeMap<String, BTreeMap<String, Value>>> {
        let mut out = BTreeMap::new();
        for (device, algorithm) in devices {
            if let Some((key_id, key)) = self.claim(user, device, algorithm.as_str())? {
                out.insert(device.to_string(), BTreeMap::from([(key_id, key)]));
            }
        }
        Ok(out)
    }
}
