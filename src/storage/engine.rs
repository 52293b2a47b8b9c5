//! What a storage engine does for [`Db`](super::Db): point reads, ordered walks within a
//! keyspace, and atomic batches of writes. RocksDB ([`super::rocks`]) is the embedded
//! default; [`super::memory`] keeps everything in memory. Everything above (JSON values,
//! prefix scans, stream ranges, runs, the schema version) is built on these few calls,
//! so another engine implements only them.

use super::{Keyspace, StorageResult};

/// One write of a batch.
pub enum Op {
    Put(Keyspace, Vec<u8>, Vec<u8>),
    Delete(Keyspace, Vec<u8>),
    /// Raises a big-endian u64 to the value if it is lower (absent counts as 0).
    MergeMax(Keyspace, Vec<u8>, u64),
}

pub trait Engine: Send + Sync {
    /// Hands `read` the value of `key`, or `None`, without copying it where the engine
    /// can.
    fn get(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>),
    ) -> StorageResult<()>;

    /// Hands `read` each key's value, by the key's index, in one batched lookup where
    /// the engine has one.
    fn multi_get(
        &self,
        keyspace: Keyspace,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> StorageResult<()>;

    /// Walks the entries whose key starts with `prefix`, beginning at `start` (backwards:
    /// at the last key less than or equal to it), in key order or its reverse, until
    /// `visit` returns false.
    fn for_each_from(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
        forwards: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> StorageResult<()>;

    /// Applies the writes all together or not at all; with `sync`, returns once they are
    /// durable.
    fn write(&self, ops: Vec<Op>, sync: bool) -> StorageResult<()>;

    /// Waits until every write so far is durable.
    fn sync(&self) -> StorageResult<()>;

    /// An engine figure for the metrics (RocksDB's integer properties), if it has it.
    fn property(&self, property: &str) -> Option<u64>;
}
