//! End-to-end encryption keys: what clients publish so that others can encrypt to them.
//! The server never sees a secret; it stores and hands out signed public keys.
//!
//! - device keys: each device's identity keys, signed by the device;
//! - one-time keys: handed out once each (`/keys/claim`), oldest upload first, then the
//!   device's fallback key;
//! - cross-signing keys: a user's master, self-signing and user-signing keys, with the
//!   signatures uploaded on them and on devices;
//! - the device-list stream: who changed their devices or keys when, read by sync and
//!   `/keys/changes` ([`device_lists`]).
//!
//! Other servers' users' keys are fetched over federation and cached in
//! [`RemoteDevices`] while a room is shared (`service::federation::device_keys`).

pub mod device_lists;
pub mod query;
pub mod signatures;

use std::{collections::BTreeMap, sync::Arc};

use parking_lot::Mutex;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Error, Result,
    service::stream::{Permit, Stream},
    storage::{
        Batch, Db, Keyspace,
        codec::{Key, KeyReader, decode_json},
    },
};

/// The cross-signing key usages, as the spec names them.
pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";

/// A device's fallback key for one algorithm: handed out when its one-time keys run
/// out, as often as needed, until the device replaces it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FallbackKey {
    pub key_id: String,
    pub key: Value,
    pub used: bool,
}

/// Another server's user's devices and cross-signing keys as last fetched.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RemoteDevices {
    /// Device id → signed device keys.
    pub devices: BTreeMap<OwnedDeviceId, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signing_key: Option<Value>,
}

pub struct E2ee {
    db: Arc<Db>,
    stream: Arc<Stream>,
    /// Serialises claims, so a one-time key is never handed out twice.
    claims: Mutex<()>,
}

fn device_key(user: &UserId, device: &DeviceId) -> Key {
    Key::new().str(user.as_str()).str(device.as_str())
}

/// The algorithm of a key id `algorithm:id`.
pub fn algorithm_of(key_id: &str) -> &str {
    key_id
        .split_once(':')
        .map_or(key_id, |(algorithm, _)| algorithm)
}

impl E2ee {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>) -> Self {
        Self {
            db,
            stream,
            claims: Mutex::new(()),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A local device's signed identity keys.
    pub fn device_keys(&self, user: &UserId, device: &DeviceId) -> Result<Option<Value>> {
        Ok(self
            .db
            .get_json(Keyspace::DeviceKeys, device_key(user, device).bytes())?)
    }

    /// Every device of a local user that published keys.
    pub fn all_device_keys(&self, user: &UserId) -> Result<Vec<(OwnedDeviceId, Value)>> {
        let prefix = Key::new().str(user.as_str());
        let mut out = Vec::new();
        for (key, value) in self.db.scan_prefix(Keyspace::DeviceKeys, prefix.bytes())? {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            out.push((OwnedDeviceId::from(reader.str()?), decode_json(&value)?));
        }
        Ok(out)
    }

    pub fn stage_device_keys(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
        keys: &Value,
    ) {
        batch.put_json(Keyspace::DeviceKeys, device_key(user, device), keys);
    }

    /// Adds one-time keys. A key id already stored with other content is refused, as
    /// the spec's clients never reuse one; the same key again is accepted (a retry).
    pub fn stage_one_time_keys(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
        keys: &[(String, Value)],
    ) -> Result<()> {
        for (key_id, key) in keys {
            let db_key = device_key(user, device)
                .str(algorithm_of(key_id))
                .str(key_id);
            if let Some(existing) = self
                .db
                .get_json::<Value>(Keyspace::OneTimeKeys, db_key.bytes())?
            {
                if &existing != key {
                    return Err(Error::invalid_param(format!(
                        "One-time key {key_id} already exists with other content"
                    )));
                }
                continue;
            }
            batch.put_json(Keyspace::OneTimeKeys, db_key, key);
        }
        Ok(())
    }

    /// How many unclaimed one-time keys a device has, per algorithm.
    pub fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for (key, _) in self
            .db
            .scan_prefix(Keyspace::OneTimeKeys, device_key(user, device).bytes())?
        {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            reader.str()?;
            *counts.entry(reader.str()?.to_owned()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Replaces the device's fallback keys, one per algorithm; a new key is unused.
    pub fn stage_fallback_keys(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
        keys: &[(String, Value)],
    ) -> Result<()> {
        for (key_id, key) in keys {
            let db_key = device_key(user, device).str(algorithm_of(key_id));
            let same = self
                .db
                .get_json::<FallbackKey>(Keyspace::FallbackKeys, db_key.bytes())?
                .is_some_and(|old| old.key_id == *key_id && old.key == *key);
            if same {
                continue;
            }
            batch.put_json(
                Keyspace::FallbackKeys,
                db_key,
                &FallbackKey {
                    key_id: key_id.clone(),
                    key: key.clone(),
                    used: false,
                },
            );
        }
        Ok(())
    }

    /// The algorithms of the device's fallback keys not yet handed out.
    pub fn unused_fallback_types(&self, user: &UserId, device: &DeviceId) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (_, value) in self
            .db
            .scan_prefix(Keyspace::FallbackKeys, device_key(user, device).bytes())?
        {
            let key: FallbackKey = decode_json(&value)?;
            if !key.used {
                out.push(algorithm_of(&key.key_id).to_owned());
            }
        }
        Ok(out)
    }

    /// Takes one key of `algorithm` for a local device: its oldest one-time key, else its
    /// fallback key (marked used, still handed out again).
    pub fn claim(
        &self,
        user: &UserId,
        device: &DeviceId,
        algorithm: &str,
    ) -> Result<Option<(String, Value)>> {
        let _guard = self.claims.lock();
        let prefix = device_key(user, device).str(algorithm);
        if let Some((key, value)) = self
            .db
            .scan_prefix(Keyspace::OneTimeKeys, prefix.bytes())?
            .into_iter()
            .next()
        {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            reader.str()?;
            reader.str()?;
            let key_id = reader.str()?.to_owned();
            let mut batch = self.db.batch();
            batch.delete(Keyspace::OneTimeKeys, key);
            self.db.write(batch)?;
            return Ok(Some((key_id, decode_json(&value)?)));
        }
        let fallback_key = device_key(user, device).str(algorithm);
        let Some(mut fallback) = self
            .db
            .get_json::<FallbackKey>(Keyspace::FallbackKeys, fallback_key.bytes())?
        else {
            return Ok(None);
        };
        if !fallback.used {
            fallback.used = true;
            let mut batch = self.db.batch();
            batch.put_json(Keyspace::FallbackKeys, fallback_key, &fallback);
            self.db.write(batch)?;
        }
        Ok(Some((fallback.key_id, fallback.key)))
    }

    /// Everything a deleted device published.
    pub fn stage_device_removal(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<()> {
        let prefix = device_key(user, device);
        batch.delete(Keyspace::DeviceKeys, prefix.clone());
        for keyspace in [
            Keyspace::OneTimeKeys,
            Keyspace::FallbackKeys,
            Keyspace::ToDevice,
        ] {
            for (key, _) in self.db.scan_prefix(keyspace, prefix.bytes())? {
                batch.delete(keyspace, key);
            }
        }
        Ok(())
    }

    /// A local user's cross-signing key of `usage`.
    pub fn cross_signing_key(&self, user: &UserId, usage: &str) -> Result<Option<Value>> {
        Ok(self.db.get_json(
            Keyspace::CrossSigningKeys,
            Key::new().str(user.as_str()).str(usage).bytes(),
        )?)
    }

    pub fn stage_cross_signing_key(
        &self,
        batch: &mut Batch,
        user: &UserId,
        usage: &str,
        key: &Value,
    ) {
        batch.put_json(
            Keyspace::CrossSigningKeys,
            Key::new().str(user.as_str()).str(usage),
            key,
        );
    }

    /// The signatures `signer` made on `target`'s master key with their user-signing key.
    pub fn user_signatures(&self, signer: &UserId, target: &UserId) -> Result<Option<Value>> {
        Ok(self.db.get_json(
            Keyspace::UserSignatures,
            Key::new().str(signer.as_str()).str(target.as_str()).bytes(),
        )?)
    }

    pub fn stage_user_signatures(
        &self,
        batch: &mut Batch,
        signer: &UserId,
        target: &UserId,
        signatures: &Value,
    ) {
        batch.put_json(
            Keyspace::UserSignatures,
            Key::new().str(signer.as_str()).str(target.as_str()),
            signatures,
        );
    }

    /// Another server's user's keys as cached.
    pub fn remote_devices(&self, user: &UserId) -> Result<Option<RemoteDevices>> {
        Ok(self.db.get_json(Keyspace::RemoteDevices, user.as_bytes())?)
    }

    pub fn store_remote_devices(&self, user: &UserId, devices: &RemoteDevices) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::RemoteDevices, user.as_bytes().to_vec(), devices);
        self.db.write_unsynced(batch)?;
        Ok(())
    }

    pub fn forget_remote_devices(&self, user: &UserId) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete(Keyspace::RemoteDevices, user.as_bytes().to_vec());
        self.db.write_unsynced(batch)?;
        Ok(())
    }

    /// A position on the stream for a change of `user`'s devices or keys, recorded in
    /// `batch`. For a local user it becomes their device-list stream id (returned with
    /// the previous one); another server's user's cached keys are dropped.
    pub fn stage_change(
        &self,
        batch: &mut Batch,
        user: &UserId,
        local: bool,
    ) -> Result<(Permit, Option<u64>)> {
        let permit = self.stream.next();
        permit.persist_in(batch);
        batch.put(
            Keyspace::DeviceListStream,
            Key::new().u64(permit.position()),
            user.as_str().as_bytes().to_vec(),
        );
        let previous = if local {
            let previous = self.device_list_version(user)?;
            batch.put(
                Keyspace::DeviceListVersions,
                user.as_bytes().to_vec(),
                permit.position().to_be_bytes().to_vec(),
            );
            previous
        } else {
            batch.delete(Keyspace::RemoteDevices, user.as_bytes().to_vec());
            None
        };
        Ok((permit, previous))
    }

    /// A local user's device-list stream id, if their devices ever changed.
    pub fn device_list_version(&self, user: &UserId) -> Result<Option<u64>> {
        match self.db.get(Keyspace::DeviceListVersions, user.as_bytes())? {
            Some(bytes) => Ok(Some(crate::storage::codec::decode_u64(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Users whose device lists changed after `since`, up to `until`.
    pub fn device_list_changes(&self, since: u64, until: u64) -> Result<Vec<OwnedUserId>> {
        let mut users: Vec<OwnedUserId> = Vec::new();
        for (_, value) in
            self.db
                .stream_range(Keyspace::DeviceListStream, &Key::new(), since, until)?
        {
            if let Ok(user) = OwnedUserId::try_from(String::from_utf8_lossy(&value).as_ref())
                && !users.contains(&user)
            {
                users.push(user);
            }
        }
        Ok(users)
    }
}
