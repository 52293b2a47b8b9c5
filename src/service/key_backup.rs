//! Server-side key backups: each user's encrypted room keys, so a new device can read
//! history. The server stores opaque encrypted session data per backup version; only
//! the current (newest live) version takes new keys.
//!
//! Of two uploads of the same session's key, the better one is kept: a verified one
//! over an unverified one, then the lower first message index, then the fewer forwards.

use std::{collections::BTreeMap, sync::Arc};

use parking_lot::Mutex;
use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Error, Result,
    storage::{
        Db, Keyspace,
        codec::{Key, KeyReader, decode_json},
    },
};

/// One backup version of a user. A deleted version stays as a tombstone so its number
/// is never handed out again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupVersion {
    pub algorithm: String,
    pub auth_data: Value,
    /// How many keys it holds.
    pub count: u64,
    /// Changes whenever its keys do.
    pub etag: u64,
    #[serde(default)]
    pub deleted: bool,
}

/// Where keys go: all of a version, one room's, or one session's.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

pub struct KeyBackup {
    db: Arc<Db>,
    /// Serialises changes, so counts and etags stay exact.
    writes: Mutex<()>,
}

fn version_key(user: &UserId, version: u64) -> Key {
    Key::new().str(user.as_str()).u64(version)
}

fn scope_prefix(user: &UserId, version: u64, scope: Scope<'_>) -> Key {
    let prefix = version_key(user, version);
    match scope {
        Scope::All => prefix,
        Scope::Room(room) => prefix.str(room),
        Scope::Session(room, session) => prefix.str(room).str(session),
    }
}

/// Parses a version as the API spells it; `None` for anything this server never issued.
pub fn parse_version(text: &str) -> Option<u64> {
    crate::service::sync::token::decimal(text).filter(|version| *version > 0)
}

/// Whether `new` should replace `old` (spec order: verified, first message index,
/// forwarded count).
fn better(new: &Value, old: &Value) -> bool {
    let verified = |data: &Value| data["is_verified"].as_bool().unwrap_or(false);
    let number = |data: &Value, field: &str| data[field].as_u64().unwrap_or(u64::MAX);
    (
        !verified(new),
        number(new, "first_message_index"),
        number(new, "forwarded_count"),
    ) < (
        !verified(old),
        number(old, "first_message_index"),
        number(old, "forwarded_count"),
    )
}

impl KeyBackup {
    pub fn new(db: Arc<Db>) -> Self {
        Self {
            db,
            writes: Mutex::new(()),
        }
    }

    fn versions(&self, user: &UserId) -> Result<Vec<(u64, BackupVersion)>> {
        let mut out = Vec::new();
        for (key, value) in self.db.scan_prefix(
            Keyspace::BackupVersions,
            Key::new().str(user.as_str()).bytes(),
        )? {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            out.push((reader.u64()?, decode_json(&value)?));
        }
        Ok(out)
    }

    /// The newest live version.
    pub fn current(&self, user: &UserId) -> Result<Option<(u64, BackupVersion)>> {
        Ok(self
            .versions(user)?
            .into_iter()
            .rev()
            .find(|(_, version)| !version.deleted))
    }

    /// A live version.
    pub fn version(&self, user: &UserId, version: u64) -> Result<Option<BackupVersion>> {
        Ok(self
            .db
            .get_json::<BackupVersion>(
                Keyspace::BackupVersions,
                version_key(user, version).bytes(),
            )?
            .filter(|version| !version.deleted))
    }

    /// Starts a new version, which becomes the current one.
    pub fn create(&self, user: &UserId, algorithm: String, auth_data: Value) -> Result<u64> {
        let _guard = self.writes.lock();
        let number = self.versions(user)?.last().map_or(1, |(last, _)| last + 1);
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::BackupVersions,
            version_key(user, number),
            &BackupVersion {
                algorithm,
                auth_data,
                count: 0,
                etag: 0,
                deleted: false,
            },
        );
        self.db.write(batch)?;
        Ok(number)
    }

    /// Replaces a live version's `auth_data`; its algorithm cannot change.
    pub fn update(
        &self,
        user: &UserId,
        number: u64,
        algorithm: &str,
        auth_data: Value,
    ) -> Result<()> {
        let _guard = self.writes.lock();
        let mut version = self
            .version(user, number)?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        if version.algorithm != algorithm {
            return Err(Error::invalid_param(
                "The algorithm of a backup version cannot change",
            ));
        }
        version.auth_data = auth_data;
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::BackupVersions,
            version_key(user, number),
            &version,
        );
        self.db.write(batch)?;
        Ok(())
    }

    /// Deletes a live version and its keys.
    pub fn delete(&self, user: &UserId, number: u64) -> Result<()> {
        let _guard = self.writes.lock();
        let mut version = self
            .version(user, number)?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        let mut batch = self.db.batch();
        for (key, _) in self.db.scan_prefix(
            Keyspace::BackupKeys,
            scope_prefix(user, number, Scope::All).bytes(),
        )? {
            batch.delete(Keyspace::BackupKeys, key);
        }
        version.deleted = true;
        version.count = 0;
        version.auth_data = Value::Null;
        batch.put_json(
            Keyspace::BackupVersions,
            version_key(user, number),
            &version,
        );
        self.db.write(batch)?;
        Ok(())
    }

    /// The live version that takes new keys: `number` must be the current one.
    fn writable(&self, user: &UserId, number: u64) -> Result<BackupVersion> {
        let current = self.current(user)?;
        match current {
            Some((current, version)) if current == number => Ok(version),
            Some((current, _)) => Err(Error::new(
                ruma::api::error::ErrorKind::WrongRoomKeysVersion(
                    ruma::api::error::WrongRoomKeysVersionErrorData::new(current.to_string()),
                ),
                "That is not the current backup version",
            )
            .with_status(http::StatusCode::FORBIDDEN)),
            None => Err(Error::not_found("Unknown backup version")),
        }
    }

    /// Stores session keys (room id → session id → key data), each kept only if better
    /// than the one stored. Returns the version's count and etag after.
    pub fn put(
        &self,
        user: &UserId,
        number: u64,
        keys: BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<(u64, u64)> {
        let _guard = self.writes.lock();
        let mut version = self.writable(user, number)?;
        let mut batch = self.db.batch();
        let mut changed = false;
        for (room, sessions) in &keys {
            for (session, data) in sessions {
                let key = scope_prefix(user, number, Scope::Session(room, session));
                match self
                    .db
                    .get_json::<Value>(Keyspace::BackupKeys, key.bytes())?
                {
                    Some(old) if !better(data, &old) => continue,
                    Some(_) => {}
                    None => version.count += 1,
                }
                batch.put_json(Keyspace::BackupKeys, key, data);
                changed = true;
            }
        }
        if changed {
            version.etag += 1;
            batch.put_json(
                Keyspace::BackupVersions,
                version_key(user, number),
                &version,
            );
            self.db.write(batch)?;
        }
        Ok((version.count, version.etag))
    }

    /// The keys of a live version within `scope`: room id → session id → key data.
    pub fn get(
        &self,
        user: &UserId,
        number: u64,
        scope: Scope<'_>,
    ) -> Result<BTreeMap<String, BTreeMap<String, Value>>> {
        if self.version(user, number)?.is_none() {
            return Err(Error::not_found("Unknown backup version"));
        }
        let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for (key, value) in self.db.scan_prefix(
            Keyspace::BackupKeys,
            scope_prefix(user, number, scope).bytes(),
        )? {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            reader.u64()?;
            let room = reader.str()?.to_owned();
            let session = reader.str()?.to_owned();
            out.entry(room)
                .or_default()
                .insert(session, decode_json(&value)?);
        }
        Ok(out)
    }

    /// Deletes a live version's keys within `scope`. Returns its count and etag after.
    pub fn remove(&self, user: &UserId, number: u64, scope: Scope<'_>) -> Result<(u64, u64)> {
        let _guard = self.writes.lock();
        let mut version = self
            .version(user, number)?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        let doomed = self.db.scan_prefix(
            Keyspace::BackupKeys,
            scope_prefix(user, number, scope).bytes(),
        )?;
        if !doomed.is_empty() {
            let mut batch = self.db.batch();
            version.count = version.count.saturating_sub(doomed.len() as u64);
            version.etag += 1;
            for (key, _) in doomed {
                batch.delete(Keyspace::BackupKeys, key);
            }
            batch.put_json(
                Keyspace::BackupVersions,
                version_key(user, number),
                &version,
            );
            self.db.write(batch)?;
        }
        Ok((version.count, version.etag))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_better_key_is_kept() {
        let key = |verified: bool, index: u64, forwards: u64| json!({ "is_verified": verified, "first_message_index": index, "forwarded_count": forwards });
        assert!(better(&key(true, 9, 9), &key(false, 0, 0)));
        assert!(!better(&key(false, 0, 0), &key(true, 9, 9)));
        assert!(better(&key(false, 1, 9), &key(false, 2, 0)));
        assert!(better(&key(false, 1, 0), &key(false, 1, 1)));
        assert!(
            !better(&key(false, 1, 1), &key(false, 1, 1)),
            "an equal key changes nothing"
        );
    }
}
