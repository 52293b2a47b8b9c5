//! Room state at every event, stored as state groups without full copies.
//!
//! A state group is a parent group plus the entries it changes. Each state event makes a
//! new group; every other event points at the group in force before it. So that no
//! lookup walks a long chain, a group that would be [`SNAPSHOT_EVERY`] deltas away from
//! a full snapshot is written as a full snapshot instead. Group 0 is the empty state.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;
use ruma::OwnedEventId;
use serde::{Deserialize, Serialize};

use crate::{
    Result,
    storage::{Batch, Db, Keyspace, codec},
};

/// `(event type, state key)` → event id.
pub type StateMap = BTreeMap<(String, String), OwnedEventId>;

/// How many deltas may stack before a group is written in full.
pub const SNAPSHOT_EVERY: u32 = 32;

const COUNTER_KEY: &[u8] = b"state_group_counter";
const CACHE_LIMIT: usize = 4096;

#[derive(Serialize, Deserialize)]
struct StateGroup {
    parent: Option<u64>,
    /// Deltas between this group and the nearest full snapshot below it.
    chain: u32,
    changes: Vec<(String, String, OwnedEventId)>,
}

pub struct StateStore {
    db: Arc<Db>,
    last_group: AtomicU64,
    cache: Mutex<HashMap<u64, Arc<StateMap>>>,
}

impl StateStore {
    pub fn load(db: Arc<Db>) -> Result<Self> {
        let last = match db.get(Keyspace::Meta, COUNTER_KEY)? {
            Some(bytes) => codec::decode_u64(&bytes)?,
            None => 0,
        };
        Ok(Self {
            db,
            last_group: AtomicU64::new(last),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The full state of a group.
    pub fn get(&self, group: u64) -> Result<Arc<StateMap>> {
        if group == 0 {
            return Ok(Arc::default());
        }
        if let Some(state) = self.cache.lock().get(&group) {
            return Ok(state.clone());
        }
        let mut chain = Vec::new();
        let mut next = Some(group);
        let mut base = Arc::<StateMap>::default();
        while let Some(id) = next {
            if let Some(state) = self.cache.lock().get(&id) {
                base = state.clone();
                break;
            }
            let stored: StateGroup = self
                .db
                .get_json(Keyspace::StateGroups, &id.to_be_bytes())?
                .ok_or_else(|| crate::Error::internal(format!("missing state group {id}")))?;
            next = stored.parent;
            chain.push(stored);
        }
        let mut state = (*base).clone();
        for stored in chain.into_iter().rev() {
            for (kind, state_key, event_id) in stored.changes {
                state.insert((kind, state_key), event_id);
            }
        }
        let state = Arc::new(state);
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(group, state.clone());
        Ok(state)
    }

    /// Writes into `batch` a new group holding exactly `state` (a state learnt from
    /// another server, or resolved).
    pub fn create_snapshot(&self, batch: &mut Batch, state: &StateMap) -> Result<u64> {
        let entries = state
            .iter()
            .map(|((kind, key), id)| (kind.clone(), key.clone(), id.clone()))
            .collect();
        self.create(batch, 0, entries)
    }

    /// Writes into `batch` a new group: `parent`'s state with `changes` applied.
    pub fn create(
        &self,
        batch: &mut Batch,
        parent: u64,
        changes: Vec<(String, String, OwnedEventId)>,
    ) -> Result<u64> {
        let parent_chain = if parent == 0 {
            0
        } else {
            self.db
                .get_json::<StateGroup>(Keyspace::StateGroups, &parent.to_be_bytes())?
                .map_or(0, |group| group.chain)
        };
        let id = self.last_group.fetch_add(1, Ordering::SeqCst) + 1;
        let stored = if parent == 0 || parent_chain + 1 >= SNAPSHOT_EVERY {
            let mut state = (*self.get(parent)?).clone();
            for (kind, state_key, event_id) in &changes {
                state.insert((kind.clone(), state_key.clone()), event_id.clone());
            }
            StateGroup {
                parent: None,
                chain: 0,
                changes: state
                    .into_iter()
                    .map(|((kind, key), id)| (kind, key, id))
                    .collect(),
            }
        } else {
            StateGroup {
                parent: Some(parent),
                chain: parent_chain + 1,
                changes,
            }
        };
        batch.put_json(Keyspace::StateGroups, id.to_be_bytes(), &stored);
        batch.merge_max(Keyspace::Meta, COUNTER_KEY, id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_and_snapshots_give_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let store = StateStore::load(db.clone()).unwrap();
        let mut group = 0;
        for n in 0..100u32 {
            let mut batch = db.batch();
            let event: OwnedEventId = format!("$e{n}").try_into().unwrap();
            group = store
                .create(
                    &mut batch,
                    group,
                    vec![("m.room.member".into(), format!("@u{}:x", n % 40), event)],
                )
                .unwrap();
            db.write(batch).unwrap();
        }
        store.cache.lock().clear();
        let state = store.get(group).unwrap();
        assert_eq!(state.len(), 40);
        assert_eq!(
            state[&("m.room.member".to_owned(), "@u39:x".to_owned())].as_str(),
            "$e79"
        );
        assert_eq!(
            state[&("m.room.member".to_owned(), "@u19:x".to_owned())].as_str(),
            "$e99"
        );
        let reopened = StateStore::load(db).unwrap();
        assert_eq!(reopened.last_group.load(Ordering::SeqCst), group);
    }
}
