//! The RocksDB engine: a column family per keyspace, every synced write waiting for the
//! write-ahead log.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DBWithThreadMode, IteratorMode, MultiThreaded, Options};

use super::{
    Keyspace, StorageResult,
    engine::{Engine, Op},
};

pub(super) type Rocks = DBWithThreadMode<MultiThreaded>;

pub struct RocksEngine {
    rocks: Rocks,
}

impl RocksEngine {
    /// Opens (or creates) the database at `path`, creating any missing keyspace and
    /// dropping those no longer declared.
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
        Ok(Self { rocks })
    }

    fn cf(&self, keyspace: Keyspace) -> std::sync::Arc<rocksdb::BoundColumnFamily<'_>> {
        self.rocks
            .cf_handle(keyspace.name())
            .expect("every keyspace is created when the database is opened")
    }
}

impl Engine for RocksEngine {
    fn get(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>),
    ) -> StorageResult<()> {
        // Read from RocksDB's block in place, not copied first.
        let pinned = self.rocks.get_pinned_cf(&self.cf(keyspace), key)?;
        read(pinned.as_deref());
        Ok(())
    }

    fn multi_get(
        &self,
        keyspace: Keyspace,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> StorageResult<()> {
        let found =
            self.rocks
                .batched_multi_get_cf(&self.cf(keyspace), keys.iter().copied(), false);
        for (index, value) in found.into_iter().enumerate() {
            read(index, value?.as_deref());
        }
        Ok(())
    }

    fn for_each_from(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
        forwards: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
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
            if !key.starts_with(prefix) || !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, ops: Vec<Op>, sync: bool) -> StorageResult<()> {
        let mut batch = rocksdb::WriteBatchWithTransaction::<false>::default();
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
        for op in ops {
            match op {
                Op::Put(keyspace, key, value) => batch.put_cf(&cf(keyspace), key, value),
                Op::Delete(keyspace, key) => batch.delete_cf(&cf(keyspace), key),
                Op::MergeMax(keyspace, key, value) => {
                    batch.merge_cf(&cf(keyspace), key, value.to_be_bytes())
                }
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(sync);
        self.rocks.write_opt(batch, &options)?;
        Ok(())
    }

    fn sync(&self) -> StorageResult<()> {
        self.rocks.flush_wal(true)?;
        Ok(())
    }

    fn property(&self, property: &str) -> Option<u64> {
        let values: Vec<u64> = Keyspace::ALL
            .iter()
            .filter_map(|keyspace| {
                self.rocks
                    .property_int_value_cf(&self.cf(*keyspace), property)
                    .ok()
                    .flatten()
            })
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Db;

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
}
