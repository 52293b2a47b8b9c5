//! The storage layer: the only code that touches the storage engine.
//!
//! Every keyspace is declared once in [`keyspaces`], every key is built through
//! [`codec`], and every change reaches the disk through an atomic [`Batch`] that is
//! durable before [`Db::write`] returns. Services above this layer see typed keys and
//! values, never the engine: RocksDB ([`rocks`]) by default, or any [`engine::Engine`].

pub mod blobs;
pub mod codec;
pub mod engine;
pub mod keyspaces;
pub mod memory;
pub mod postgres;
pub mod rocks;
pub mod runs;

use std::path::Path;

use ruma::events::room::member::MembershipState;

use self::engine::{Engine, Op};
pub use self::keyspaces::Keyspace;

/// The schema version this build writes. A database with a newer version is refused.
pub const SCHEMA_VERSION: u64 = 3;

/// An error from the storage engine or from decoding a stored value.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Engine(#[from] rocksdb::Error),
    #[error("database: {0}")]
    Backend(String),
    #[error("stored value could not be decoded: {0}")]
    Decode(String),
    #[error(
        "the database has schema version {found}, newer than this build's {SCHEMA_VERSION}; \
         refusing to open it"
    )]
    NewerSchema { found: u64 },
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The key-value store, on its engine.
pub struct Db {
    engine: Box<dyn Engine>,
}

impl Db {
    /// Opens (or creates) the RocksDB database at `path`, creating any missing keyspace
    /// and checking the schema version.
    pub fn open(path: &Path) -> StorageResult<Self> {
        Self::with_engine(Box::new(rocks::RocksEngine::open(path)?))
    }

    /// A database on PostgreSQL at `url`, with up to `pool_size` connections.
    pub fn postgres(url: &str, pool_size: usize) -> StorageResult<Self> {
        Self::with_engine(Box::new(postgres::PostgresEngine::open(url, pool_size)?))
    }

    /// A database kept in memory only (tests, tools).
    pub fn in_memory() -> StorageResult<Self> {
        Self::with_engine(Box::new(memory::MemoryEngine::default()))
    }

    fn with_engine(engine: Box<dyn Engine>) -> StorageResult<Self> {
        let db = Self { engine };
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

    /// Reads one value.
    pub fn get(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        let mut found = None;
        self.engine.get(keyspace, key, &mut |value| {
            found = value.map(<[u8]>::to_vec)
        })?;
        Ok(found)
    }

    /// Reads one JSON value (decoded where the engine keeps it, not copied first).
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: Keyspace,
        key: &[u8],
    ) -> StorageResult<Option<T>> {
        let mut decoded = Ok(None);
        self.engine.get(keyspace, key, &mut |value| {
            decoded = value.map(codec::decode_json).transpose();
        })?;
        decoded
    }

    /// Reads many JSON values of one keyspace in one batched lookup, in the keys' order.
    pub fn get_many_json<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: Keyspace,
        keys: &[&[u8]],
    ) -> StorageResult<Vec<Option<T>>> {
        let mut decoded: Vec<StorageResult<Option<T>>> =
            (0..keys.len()).map(|_| Ok(None)).collect();
        self.engine.multi_get(keyspace, keys, &mut |index, value| {
            decoded[index] = value.map(codec::decode_json).transpose();
        })?;
        decoded.into_iter().collect()
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
        self.engine
            .for_each_from(keyspace, prefix, start, forwards, &mut visit)
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
        self.engine.sync()
    }

    fn apply(&self, batch: Batch, sync: bool) -> StorageResult<()> {
        let started = std::time::Instant::now();
        let mut ops = batch.ops;
        ops.extend(
            (batch.runs.into_puts()).map(|(keyspace, key, value)| Op::Put(keyspace, key, value)),
        );
        self.engine.write(ops, sync)?;
        crate::metrics::metrics().storage_batch(sync, started.elapsed());
        Ok(())
    }

    /// An engine figure summed over every keyspace (RocksDB's
    /// `rocksdb.block-cache-usage`, `rocksdb.estimate-live-data-size`, ...), for the
    /// metrics; `None` where the engine has no such figure.
    pub fn property(&self, property: &str) -> Option<u64> {
        self.engine.property(property)
    }

    /// Whether the database answers a read.
    pub fn answers(&self) -> bool {
        self.get(Keyspace::Meta, b"schema_version").is_ok()
    }
}

/// A set of writes applied all together or not at all.
pub struct Batch {
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

    /// The behaviours the layers above rely on, the same on every engine.
    fn behaves_as_a_store(db: &Db) {
        let mut batch = db.batch();
        for (room, position) in [("!a:x", 1u64), ("!a:x", 5), ("!a:x", 9), ("!b:x", 2)] {
            batch.put(
                Keyspace::Timeline,
                codec::Key::new().str(room).u64(position),
                format!("\"{room}{position}\"").into_bytes(),
            );
        }
        batch.merge_max(Keyspace::Meta, b"counter".to_vec(), 7);
        assert!(!batch.is_empty());
        db.write(batch).unwrap();

        let prefix = codec::Key::new().str("!a:x");
        let all = db.scan_prefix(Keyspace::Timeline, prefix.bytes()).unwrap();
        assert_eq!(all.len(), 3, "a prefix scan stays in its prefix");
        let range = db.stream_range(Keyspace::Timeline, &prefix, 1, 9).unwrap();
        assert_eq!(range.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [5, 9]);
        let page = db
            .stream_page(Keyspace::Timeline, &prefix, 0, 9, 2)
            .unwrap();
        assert_eq!(page.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [1, 5]);

        // Backwards from a key between two: the last one at or before it, then back.
        let mut seen = Vec::new();
        let start = prefix.clone().u64(6);
        db.for_each_from(
            Keyspace::Timeline,
            prefix.bytes(),
            start.bytes(),
            false,
            |_, value| {
                seen.push(String::from_utf8(value.to_vec()).unwrap());
                true
            },
        )
        .unwrap();
        assert_eq!(seen, ["\"!a:x5\"", "\"!a:x1\""]);

        let keys = [prefix.clone().u64(5), prefix.clone().u64(6)];
        let keys: Vec<&[u8]> = keys.iter().map(codec::Key::bytes).collect();
        let many: Vec<Option<String>> = db.get_many_json(Keyspace::Timeline, &keys).unwrap();
        assert_eq!(many, [Some("!a:x5".to_owned()), None]);

        let mut batch = db.batch();
        batch.merge_max(Keyspace::Meta, b"counter".to_vec(), 3);
        batch.delete(Keyspace::Timeline, prefix.clone().u64(1).bytes().to_vec());
        assert_eq!(
            batch.staged(Keyspace::Timeline, prefix.clone().u64(1).bytes()),
            Some(None)
        );
        db.write_unsynced(batch).unwrap();
        db.sync().unwrap();
        let counter = db.get(Keyspace::Meta, b"counter").unwrap().unwrap();
        assert_eq!(codec::decode_u64(&counter).unwrap(), 7);
        assert!(
            !db.contains(Keyspace::Timeline, prefix.clone().u64(1).bytes())
                .unwrap()
        );
        let version = db.get(Keyspace::Meta, b"schema_version").unwrap().unwrap();
        assert_eq!(codec::decode_u64(&version).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn rocksdb_and_memory_engines_behave_alike() {
        let dir = tempfile::tempdir().unwrap();
        behaves_as_a_store(&Db::open(dir.path()).unwrap());
        behaves_as_a_store(&Db::in_memory().unwrap());
    }

    /// On the PostgreSQL server `PALISADE_TEST_POSTGRES` names (a connection URL of an
    /// empty database); skipped without one.
    #[test]
    fn the_postgres_engine_behaves_alike() {
        let Ok(url) = std::env::var("PALISADE_TEST_POSTGRES") else {
            eprintln!("PALISADE_TEST_POSTGRES is not set: the PostgreSQL engine is not tested");
            return;
        };
        let db = Db::postgres(&url, 4).unwrap();
        // Start from empty tables, as the RocksDB run starts from an empty directory.
        let mut batch = db.batch();
        for keyspace in [Keyspace::Timeline, Keyspace::Meta] {
            for (key, _) in db.scan_prefix(keyspace, &[]).unwrap() {
                batch.delete(keyspace, key);
            }
        }
        db.write(batch).unwrap();
        db.check_schema_version().unwrap();
        behaves_as_a_store(&db);
        // Walks longer than one query's page.
        let mut batch = db.batch();
        for n in 0..600u64 {
            batch.put(
                Keyspace::Timeline,
                codec::Key::new().str("!long:x").u64(n),
                b"1".to_vec(),
            );
        }
        db.write(batch).unwrap();
        let prefix = codec::Key::new().str("!long:x");
        assert_eq!(
            db.scan_prefix(Keyspace::Timeline, prefix.bytes())
                .unwrap()
                .len(),
            600
        );
        let mut back = 0;
        let start = prefix.clone().u64(u64::MAX);
        db.for_each_from(
            Keyspace::Timeline,
            prefix.bytes(),
            start.bytes(),
            false,
            |_, _| {
                back += 1;
                true
            },
        )
        .unwrap();
        assert_eq!(back, 600);
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
