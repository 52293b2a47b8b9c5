//! A storage engine in memory: ordered maps per keyspace behind one lock. Nothing
//! survives the process; for tests and tools that need a [`Db`](super::Db) without a
//! disk, and the reference behaviour every engine must match.

use std::collections::{BTreeMap, HashMap};

use parking_lot::RwLock;

use super::{
    Keyspace, StorageResult,
    engine::{Engine, Op},
};

/// One keyspace's entries, in key order.
type Space = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub struct MemoryEngine {
    spaces: RwLock<HashMap<Keyspace, Space>>,
}

impl Engine for MemoryEngine {
    fn get(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>),
    ) -> StorageResult<()> {
        let spaces = self.spaces.read();
        read(
            spaces
                .get(&keyspace)
                .and_then(|space| space.get(key))
                .map(Vec::as_slice),
        );
        Ok(())
    }

    fn multi_get(
        &self,
        keyspace: Keyspace,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> StorageResult<()> {
        let spaces = self.spaces.read();
        let space = spaces.get(&keyspace);
        for (index, key) in keys.iter().enumerate() {
            read(
                index,
                space.and_then(|space| space.get(*key)).map(Vec::as_slice),
            );
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
        use std::ops::Bound::{Included, Unbounded};
        let spaces = self.spaces.read();
        let Some(space) = spaces.get(&keyspace) else {
            return Ok(());
        };
        let entries: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> = if forwards {
            Box::new(space.range::<[u8], _>((Included(start), Unbounded)))
        } else {
            Box::new(space.range::<[u8], _>((Unbounded, Included(start))).rev())
        };
        for (key, value) in entries {
            if !key.starts_with(prefix) || !visit(key, value) {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, ops: Vec<Op>, _sync: bool) -> StorageResult<()> {
        let mut spaces = self.spaces.write();
        for op in ops {
            match op {
                Op::Put(keyspace, key, value) => {
                    spaces.entry(keyspace).or_default().insert(key, value);
                }
                Op::Delete(keyspace, key) => {
                    if let Some(space) = spaces.get_mut(&keyspace) {
                        space.remove(&key);
                    }
                }
                Op::MergeMax(keyspace, key, value) => {
                    let stored = spaces.entry(keyspace).or_default().entry(key).or_default();
                    let current = <[u8; 8]>::try_from(stored.as_slice())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    *stored = current.max(value).to_be_bytes().to_vec();
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> StorageResult<()> {
        Ok(())
    }

    fn property(&self, _property: &str) -> Option<u64> {
        None
    }
}
