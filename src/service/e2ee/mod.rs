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

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

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

/// What a device-list stream entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOf {
    /// A local user's devices (the `m.device_list_update` stream ids count these only).
    LocalDevices,
    /// A local user's cross-signing keys or signatures.
    LocalSigningKeys,
    /// Another server's user's devices or keys.
    Remote,
}

pub struct E2ee {
    db: Arc<Db>,
    stream: Arc<Stream>,
    /// Serialises claims, so a one-time key is never handed out twice.
    claims: Mutex<()>,
    /// The order of the last one-time key upload.
    last_upload: AtomicU64,
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
            last_upload: AtomicU64::new(0),
        }
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

    /// Adds one-time keys, ordered after every key uploaded before. A key id already
    /// stored with other content is refused, as clients never reuse one; the same key
    /// again is accepted (a retry).
    pub fn stage_one_time_keys(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
        keys: &[(String, Value)],
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut stored: BTreeMap<String, Value> = BTreeMap::new();
        for (key, value) in self
            .db
            .scan_prefix(Keyspace::OneTimeKeys, device_key(user, device).bytes())?
        {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            reader.str()?;
            reader.str()?;
            reader.u64()?;
            stored.insert(reader.str()?.to_owned(), decode_json(&value)?);
        }
        let sequence = self.upload_sequence();
        for (key_id, key) in keys {
            if let Some(existing) = stored.get(key_id) {
                if existing != key {
                    return Err(Error::invalid_param(format!(
                        "One-time key {key_id} already exists with other content"
                    )));
                }
                continue;
            }
            batch.put_json(
                Keyspace::OneTimeKeys,
                device_key(user, device)
                    .str(algorithm_of(key_id))
                    .u64(sequence)
                    .str(key_id),
                key,
            );
        }
        Ok(())
    }

    /// A number above every earlier upload's, so keys are handed out oldest first:
    /// microseconds since the epoch, raised past the last one handed out.
    fn upload_sequence(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
            });
        let previous = self.last_upload.fetch_max(now, Ordering::SeqCst);
        if previous >= now {
            self.last_upload.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
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
            reader.u64()?;
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
    /// `batch`. A local user's device change becomes their device-list stream id
    /// (returned with the previous one); another server's user's cached keys are dropped.
    pub fn stage_change(
        &self,
        batch: &mut Batch,
        user: &UserId,
        change: ChangeOf,
    ) -> Result<(Permit, Option<u64>)> {
        let permit = self.stream.next();
        permit.persist_in(batch);
        batch.put(
            Keyspace::DeviceListStream,
            Key::new().u64(permit.position()),
            user.as_str().as_bytes().to_vec(),
        );
        let previous = match change {
            ChangeOf::LocalDevices => {
                let previous = self.device_list_version(user)?;
                batch.put(
                    Keyspace::DeviceListVersions,
                    user.as_bytes().to_vec(),
                    permit.position().to_be_bytes().to_vec(),
                );
                previous
            }
            ChangeOf::LocalSigningKeys => None,
            ChangeOf::Remote => {
                batch.delete(Keyspace::RemoteDevices, user.as_bytes().to_vec());
                None
            }
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

#[cfg(test)]
mod tests {
    use ruma::{device_id, user_id};
    use serde_json::json;

    use super::*;

    #[test]
    fn one_time_keys_go_oldest_upload_first_then_the_fallback_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let e2ee = E2ee::new(db.clone(), Stream::load(&db).unwrap());
        let (user, device) = (user_id!("@a:x"), device_id!("D"));
        let upload = |keys: &[(&str, Value)], fallback: &[(&str, Value)]| {
            let owned = |keys: &[(&str, Value)]| {
                keys.iter()
                    .map(|(id, key)| ((*id).to_owned(), key.clone()))
                    .collect::<Vec<_>>()
            };
            let mut batch = db.batch();
            e2ee.stage_one_time_keys(&mut batch, user, device, &owned(keys))?;
            e2ee.stage_fallback_keys(&mut batch, user, device, &owned(fallback))?;
            db.write(batch)?;
            Ok::<_, Error>(())
        };
        upload(&[("signed_curve25519:zz", json!({ "key": "first" }))], &[]).unwrap();
        upload(
            &[("signed_curve25519:aa", json!({ "key": "second" }))],
            &[("signed_curve25519:fb", json!({ "key": "fallback" }))],
        )
        .unwrap();
        assert!(
            upload(&[("signed_curve25519:aa", json!({ "key": "other" }))], &[]).is_err(),
            "a key id is never reused with other content"
        );
        upload(&[("signed_curve25519:aa", json!({ "key": "second" }))], &[]).unwrap();
        assert_eq!(
            e2ee.one_time_key_counts(user, device).unwrap(),
            BTreeMap::from([("signed_curve25519".to_owned(), 2)])
        );
        let claim = || {
            e2ee.claim(user, device, "signed_curve25519")
                .unwrap()
                .unwrap()
        };
        assert_eq!(claim().1["key"], "first");
        assert_eq!(claim().1["key"], "second");
        assert_eq!(
            e2ee.unused_fallback_types(user, device).unwrap(),
            ["signed_curve25519"]
        );
        assert_eq!(claim().1["key"], "fallback");
        assert_eq!(
            claim().1["key"],
            "fallback",
            "a fallback key is handed out again"
        );
        assert!(e2ee.unused_fallback_types(user, device).unwrap().is_empty());
        assert!(e2ee.claim(user, device, "curve25519").unwrap().is_none());
    }
}
