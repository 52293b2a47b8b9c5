//! The storage layer: the only code that touches RocksDB.
//!
//! Every keyspace is declared once in [`keyspaces`], every key is built through
//! [`codec`], and every change reaches the disk through an atomic [`Batch`] whose
//! write-ahead log is synced before [`Db::write`] returns. Services above this layer
//! see typed keys and values, never RocksDB.

pub mod blobs;
pub mod codec;
pub mod keyspaces;
pub mod runs;

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DBWithThreadMode, IteratorMode, MultiThreaded, Options};
use ruma::events::room::member::MembershipState;

pub use self::keyspaces::Keyspace;

/// The schema version this build writes. A database with a newer version is refused.
pub const SCHEMA_VERSION: u64 = 3;

type Rocks = DBWithThreadMode<MultiThreaded>;

/// An error from the storage engine or from decoding a stored value.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Engine(#[from] rocksdb::Error),
    #[error("stored value could not be decoded: {0}")]
    Decode(String),
    #[error(
        "the database has schema version {found}, newer than this build's {SCHEMA_VERSION}; \
         refusing to open it"
    )]
    NewerSchema { found: u64 },
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The embedded key-value store.
pub struct Db {
    rocks: Rocks,
}

impl Db {
    /// Opens (or creates) the database at `path`, creating any missing keyspace and
    /// checking the schema version.
    pub fn open(path: &Path) -> StorageResult<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_keep_log_file_num(4);
        options.set_max_log_file_size(16 * 1024 * 1024);
        let descriptors = Keyspace::ALL.iter().map(|keyspace| {
            let mut cf_options = Options::default();
            cf_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if *keyspace == Keyspace::Meta {
                cf_options.set_merge_operator_associative("max_u64", merge_max_u64);
            }
            ColumnFamilyDescriptor::new(keyspace.name(), cf_options)
        });
        // Keyspaces an earlier layout had and this one has not: opened (RocksDB opens
        // every one or none), then dropped with what they hold.
        let obsolete: Vec<String> = Rocks::list_cf(&options, path)
            .unwrap_or_default()
            .into_iter()
            .filter(|name| {
                name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME
                    && !Keyspace::ALL.iter().any(|keyspace| keyspace.name() == name)
            })
            .collect();
        let descriptors = descriptors.chain(
            obsolete
                .iter()
                .map(|name| ColumnFamilyDescriptor::new(name, Options::default())),
        );
        let rocks = Rocks::open_cf_descriptors(&options, path, descriptors)?;
        for name in &obsolete {
            tracing::info!(
                keyspace = name,
                "dropping a keyspace this version no longer has"
            );
            rocks.drop_cf(name)?;
        }
        let db = Self { rocks };
        db.check_schema_version()?;
        Ok(db)
    }

    fn check_schema_version(&self) -> StorageResult<()> {
        const KEY: &[u8] = b"schema_version";
        match self.get(Keyspace::Meta, KEY)? {
            Some(bytes) => {
                let found = codec::decode_u64(&bytes)?;
                if found > SCHEMA_VERSION {
                    return Err(StorageError::NewerSchema { found });
                }
                if found < 2 {
                    self.index_joined_rooms()?;
                }
                if found < SCHEMA_VERSION {
                    let mut batch = self.batch();
                    batch.put(Keyspace::Meta, KEY, SCHEMA_VERSION.to_be_bytes());
                    self.write(batch)?;
                }
                Ok(())
            }
            None => {
                let mut batch = self.batch();
                batch.put(Keyspace::Meta, KEY, SCHEMA_VERSION.to_be_bytes());
                self.write(batch)
            }
        }
    }

    /// Version 2: `joined_rooms`, the reverse of `room_members`' joins, built from it.
    fn index_joined_rooms(&self) -> StorageResult<()> {
        let mut batch = self.batch();
        for (key, membership) in self.scan_prefix(Keyspace::RoomMembers, &[])? {
            if codec::decode_membership(&membership) != MembershipState::Join {
                continue;
            }
            let mut reader = codec::KeyReader::new(&key);
            let room = reader.str()?;
            let user = reader.str()?;
            batch.put(
                Keyspace::JoinedRooms,
                codec::Key::new().str(user).str(room),
                Vec::new(),
            );
        }
        self.write(batch)
    }

    fn cf(&self, keyspace: Keyspace) -> std::sync::Arc<rocksdb::BoundColumnFamily<'_>> {
        self.rocks
            .cf_handle(keyspace.name())
            .expect("every keyspace is created when the database is opened")
    }

    /// Reads one value.
    pub fn get(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        Ok(self.rocks.get_cf(&self.cf(keyspace), key)?)
    }

    /// Reads one JSON value (decoded from RocksDB's block in place, not copied first).
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: Keyspace,
        key: &[u8],
    ) -> StorageResult<Option<T>> {
        self.rocks
            .get_pinned_cf(&self.cf(keyspace), key)?
            .map(|bytes| codec::decode_json(&bytes))
            .transpose()
    }

    /// Reads many JSON values of one keyspace in one batched lookup, in the keys' order.
    pub fn get_many_json<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: Keyspace,
        keys: &[&[u8]],
    ) -> StorageResult<Vec<Option<T>>> {
        self.rocks
            .batched_multi_get_cf(&self.cf(keyspace), keys.iter().copied(), false)
            .into_iter()
            .map(|found| found?.map(|bytes| codec::decode_json(&bytes)).transpose())
            .collect()
    }

    /// A JSON value as `batch` leaves it: staged there, else stored.
    pub fn get_json_through<T: serde::de::DeserializeOwned>(
        &self,
        batch: &Batch,
        keyspace: Keyspace,
        key: &[u8],
    ) -> StorageResult<Option<T>> {
        match batch.staged(keyspace, key) {
            Some(Some(value)) => Ok(Some(codec::decode_json(value)?)),
            Some(None) => Ok(None),
            None => self.get_json(keyspace, key),
        }
    }

    /// Whether a key exists.
    pub fn contains(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<bool> {
        Ok(self.get(keyspace, key)?.is_some())
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each_from(keyspace, prefix, prefix, true, |key, value| {
            out.push((key.to_vec(), value.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// Walks the entries whose key starts with `prefix`, beginning at `start`, forwards or
    /// backwards, until `visit` returns false. Backwards walks begin at the last key that
    /// is less than or equal to `start`.
    pub fn for_each_from(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
        forwards: bool,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> StorageResult<()> {
        let direction = if forwards {
            rocksdb::Direction::Forward
        } else {
            rocksdb::Direction::Reverse
        };
        let iter = self
            .rocks
            .iterator_cf(&self.cf(keyspace), IteratorMode::From(start, direction));
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    /// The entries of a stream keyspace (`prefix ‖ position` keys) with a position in
    /// `(since, until]`, in position order: `(position, value)`.
    pub fn stream_range(
        &self,
        keyspace: Keyspace,
        prefix: &codec::Key,
        since: u64,
        until: u64,
    ) -> StorageResult<Vec<(u64, Vec<u8>)>> {
        self.stream_page(keyspace, prefix, since, until, usize::MAX)
    }

    /// The first `limit` entries of [`Db::stream_range`].
    pub fn stream_page(
        &self,
        keyspace: Keyspace,
        prefix: &codec::Key,
        since: u64,
        until: u64,
        limit: usize,
    ) -> StorageResult<Vec<(u64, Vec<u8>)>> {
        let start = prefix.clone().u64(since.saturating_add(1));
        let mut out = Vec::new();
        let mut failure = None;
        self.for_each_from(
            keyspace,
            prefix.bytes(),
            start.bytes(),
            true,
            |key, value| {
                let position = key
                    .get(prefix.bytes().len()..)
                    .map(|rest| codec::KeyReader::new(rest).u64());
                match position {
                    Some(Ok(position)) if position <= until => {
                        out.push((position, value.to_vec()));
                        out.len() < limit
                    }
                    Some(Ok(_)) => false,
                    Some(Err(error)) => {
                        failure = Some(error);
                        false
                    }
                    None => false,
                }
            },
        )?;
        match failure {
            Some(error) => Err(error),
            None => Ok(out),
        }
    }

    /// Starts an atomic batch of writes.
    pub fn batch(&self) -> Batch {
        Batch {
            inner: rocksdb::WriteBatchWithTransaction::default(),
            ops: Vec::new(),
            runs: runs::StagedRuns::default(),
        }
    }

    /// Applies a batch atomically; returns once the write-ahead log is synced to disk.
    pub fn write(&self, batch: Batch) -> StorageResult<()> {
        self.apply(batch, true)
    }

    /// Applies a batch atomically without waiting for the disk. Every write is synced
    /// ([`Db::write`]) but these, each of data that is fetched again when lost:
    ///
    /// - the cache of other servers' users' device keys (`e2ee`);
    /// - the auth-chain and state events of a room on another server, stored as outliers
    ///   one at a time as each is checked against those before it
    ///   (`rooms::incoming::store_outliers`, which ends with [`Db::sync`], so all are on
    ///   disk before the join or event they back is written).
    pub fn write_unsynced(&self, batch: Batch) -> StorageResult<()> {
        self.apply(batch, false)
    }

    /// Waits until every write so far is on disk.
    pub fn sync(&self) -> StorageResult<()> {
        self.rocks.flush_wal(true)?;
        Ok(())
    }

    fn apply(&self, batch: Batch, sync: bool) -> StorageResult<()> {
        let started = std::time::Instant::now();
        let mut inner = batch.inner;
        // Each keyspace's handle looked up once per batch, not once per write.
        let mut handles: Vec<(Keyspace, std::sync::Arc<rocksdb::BoundColumnFamily<'_>>)> =
            Vec::new();
        let mut cf = |keyspace: Keyspace| match handles.iter().find(|(k, _)| *k == keyspace) {
            Some((_, handle)) => handle.clone(),
            None => {
                let handle = self.cf(keyspace);
                handles.push((keyspace, handle.clone()));
                handle
            }
        };
        for op in batch.ops {
            match op {
                Op::Put(keyspace, key, value) => inner.put_cf(&cf(keyspace), key, value),
                Op::Delete(keyspace, key) => inner.delete_cf(&cf(keyspace), key),
                Op::MergeMax(keyspace, key, value) => {
                    inner.merge_cf(&cf(keyspace), key, value.to_be_bytes())
                }
            }
        }
        for (keyspace, key, value) in batch.runs.into_puts() {
            inner.put_cf(&cf(keyspace), key, value);
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(sync);
        self.rocks.write_opt(inner, &options)?;
        crate::metrics::metrics().storage_batch(sync, started.elapsed());
        Ok(())
    }

    /// A RocksDB integer property summed over every keyspace (`rocksdb.block-cache-usage`,
    /// `rocksdb.estimate-live-data-size`, ...), for the metrics.
    pub fn property_sum(&self, property: &str) -> u64 {
        Keyspace::ALL
            .iter()
            .filter_map(|keyspace| {
                self.rocks
                    .property_int_value_cf(&self.cf(*keyspace), property)
                    .ok()
                    .flatten()
            })
            .sum()
    }

    /// Whether the database answers a read.
    pub fn answers(&self) -> bool {
        self.get(Keyspace::Meta, b"schema_version").is_ok()
    }
}

/// Merge operator keeping the largest of big-endian u64 values.
fn merge_max_u64(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let read = |bytes: &[u8]| {
        <[u8; 8]>::try_from(bytes)
            .map(u64::from_be_bytes)
            .unwrap_or(0)
    };
    let max = existing
        .into_iter()
        .chain(operands.iter())
        .map(read)
        .max()
        .unwrap_or(0);
    Some(max.to_be_bytes().to_vec())
}

enum Op {
    Put(Keyspace, Vec<u8>, Vec<u8>),
    Delete(Keyspace, Vec<u8>),
    MergeMax(Keyspace, Vec<u8>, u64),
}

/// A set of writes applied all together or not at all.
pub struct Batch {
    inner: rocksdb::WriteBatchWithTransaction<false>,
    ops: Vec<Op>,
    runs: runs::StagedRuns,
}

impl Batch {
    pub fn put(&mut self, keyspace: Keyspace, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(keyspace, key.into(), value.into()));
    }

    pub fn put_json<T: serde::Serialize>(
        &mut self,
        keyspace: Keyspace,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) {
        self.put(keyspace, key, codec::encode_json(value));
    }

    pub fn delete(&mut self, keyspace: Keyspace, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(keyspace, key.into()));
    }

    /// Raises a big-endian u64 counter to `value` if it is lower (only [`Keyspace::Meta`]
    /// has the merge operator).
    pub fn merge_max(&mut self, keyspace: Keyspace, key: impl Into<Vec<u8>>, value: u64) {
        self.ops.push(Op::MergeMax(keyspace, key.into(), value));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.runs.is_empty()
    }

    /// What this batch last stages for a key: `Some(Some(value))` for a put,
    /// `Some(None)` for a delete, `None` when it does not touch the key. Lets a writer
    /// that stages several events in one batch read what the earlier ones changed.
    pub fn staged(&self, keyspace: Keyspace, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ops.iter().rev().find_map(|op| match op {
            Op::Put(space, k, value) if *space == keyspace && k == key => {
                Some(Some(value.as_slice()))
            }
            Op::Delete(space, k) if *space == keyspace && k == key => Some(None),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_from_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let mut batch = db.batch();
            batch.put(
                Keyspace::Meta,
                b"schema_version".to_vec(),
                (SCHEMA_VERSION + 1).to_be_bytes(),
            );
            db.write(batch).unwrap();
        }
        assert!(matches!(
            Db::open(dir.path()),
            Err(StorageError::NewerSchema { .. })
        ));
    }

    #[test]
    fn a_keyspace_no_longer_declared_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        Db::open(dir.path()).unwrap();
        {
            let options = Options::default();
            let names = Rocks::list_cf(&options, dir.path()).unwrap();
            let rocks = Rocks::open_cf(&options, dir.path(), &names).unwrap();
            rocks.create_cf("unread_notifications", &options).unwrap();
            let old = rocks.cf_handle("unread_notifications").unwrap();
            rocks.put_cf(&old, b"k", b"v").unwrap();
            drop(old);
            rocks.flush().unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        drop(db);
        let names = Rocks::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(!names.iter().any(|name| name == "unread_notifications"));
        assert!(names.iter().any(|name| name == Keyspace::PushQueue.name()));
    }

    #[test]
    fn a_version_1_database_gets_its_joined_rooms_index() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let mut batch = db.batch();
            batch.put(
                Keyspace::Meta,
                b"schema_version".to_vec(),
                1u64.to_be_bytes(),
            );
            for (user, membership) in [("@a:x", "join"), ("@b:y", "invite")] {
                batch.put(
                    Keyspace::RoomMembers,
                    codec::Key::new().str("!r:x").str(user),
                    membership.as_bytes().to_vec(),
                );
            }
            db.write(batch).unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        let joined = |user: &str| {
            db.contains(
                Keyspace::JoinedRooms,
                codec::Key::new().str(user).str("!r:x").bytes(),
            )
            .unwrap()
        };
        assert!(joined("@a:x"));
        assert!(!joined("@b:y"));
        let version = db.get(Keyspace::Meta, b"schema_version").unwrap().unwrap();
        assert_eq!(codec::decode_u64(&version).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn merge_max_keeps_the_largest_value_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            for value in [5u64, 9, 3] {
                let mut batch = db.batch();
                batch.merge_max(Keyspace::Meta, b"counter".to_vec(), value);
                db.write(batch).unwrap();
            }
        }
        let db = Db::open(dir.path()).unwrap();
        let stored = db.get(Keyspace::Meta, b"counter").unwrap().unwrap();
        assert_eq!(codec::decode_u64(&stored).unwrap(), 9);
    }
}
