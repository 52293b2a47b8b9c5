//! Runs: the entries one batch stages under one prefix of a stream keyspace
//! (`prefix ‖ position` keys), stored as one value under the first entry's position.
//!
//! A batch that stages many entries under one prefix (the messages it queues for the
//! search index, the notifications it queues for a user's push gateways) writes one
//! record instead of one per entry. A run never spans more than [`RUN_SPAN`]
//! positions, so a reader looking for positions after `p` starts at `p - RUN_SPAN`.
//! Runs of one prefix from batches written side by side may interleave; readers sort.
//!
//! A run's value is the marker byte [`RUN`] then, per entry, its position (u64), its
//! length (u32) and its bytes, all big-endian. A value without the marker is a single
//! entry at its key's position, as written before runs.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hash, Hasher},
};

use super::{Batch, Db, Keyspace, StorageResult, codec::Key};

/// The most positions one run covers: a batch staging entries further apart starts a
/// new run.
pub const RUN_SPAN: u64 = 4096;

const RUN: u8 = 0xFF;

/// A run's prefix, hashed once: a writer staging entries for the same members event
/// after event keeps these, and each entry costs a comparison, not a hash of the key.
#[derive(Clone)]
pub struct RunPrefix {
    key: Key,
    hash: u64,
}

impl RunPrefix {
    pub fn new(key: Key) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        key.bytes().hash(&mut hasher);
        Self {
            hash: hasher.finish(),
            key,
        }
    }
}

impl PartialEq for RunPrefix {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key.bytes() == other.key.bytes()
    }
}

impl Eq for RunPrefix {}

impl Hash for RunPrefix {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a [`RunPrefix`]'s hash through.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The runs a batch stages in one keyspace, by prefix: the first position and the value.
type Runs = HashMap<RunPrefix, (u64, Vec<u8>), BuildHasherDefault<PrehashedHasher>>;

/// The runs a batch stages, by keyspace (a batch touches one or two).
#[derive(Default)]
pub(super) struct StagedRuns(Vec<(Keyspace, Runs)>);

impl StagedRuns {
    pub(super) fn is_empty(&self) -> bool {
        self.0.iter().all(|(_, runs)| runs.is_empty())
    }

    fn of(&mut self, keyspace: Keyspace) -> &mut Runs {
        let at = match self.0.iter().position(|(space, _)| *space == keyspace) {
            Some(at) => at,
            None => {
                self.0.push((keyspace, Runs::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    /// The staged runs as puts.
    pub(super) fn into_puts(self) -> impl Iterator<Item = (Keyspace, Vec<u8>, Vec<u8>)> {
        self.0.into_iter().flat_map(|(keyspace, runs)| {
            runs.into_iter().map(move |(prefix, (first, value))| {
                (keyspace, prefix.key.u64(first).into(), value)
            })
        })
    }
}

fn push_entry(value: &mut Vec<u8>, position: u64, entry: &[u8]) {
    value.extend_from_slice(&position.to_be_bytes());
    value.extend_from_slice(&(entry.len() as u32).to_be_bytes());
    value.extend_from_slice(entry);
}

/// The entries of a stored value found at `key_position`, in the order staged.
pub fn entries(key_position: u64, value: &[u8]) -> Vec<(u64, &[u8])> {
    let Some((&RUN, mut rest)) = value.split_first() else {
        return vec![(key_position, value)];
    };
    let mut out = Vec::new();
    while rest.len() >= 12 {
        let position = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        let Some(entry) = rest.get(12..12 + len) else {
            break;
        };
        out.push((position, entry));
        rest = &rest[12 + len..];
    }
    out
}

impl Batch {
    /// Stages `entry` at `position` under `prefix`, in this batch's run for the prefix.
    /// Positions staged under one prefix must rise.
    pub fn put_in_run(
        &mut self,
        keyspace: Keyspace,
        prefix: &RunPrefix,
        position: u64,
        entry: &[u8],
    ) {
        let runs = self.runs.of(keyspace);
        if let Some((first, value)) = runs.get_mut(prefix)
            && position < *first + RUN_SPAN
        {
            push_entry(value, position, entry);
            return;
        }
        // A new run, closing the one before it when its span is full.
        let mut value = vec![RUN];
        push_entry(&mut value, position, entry);
        if let Some((first, full)) = runs.insert(prefix.clone(), (position, value)) {
            self.ops.push(super::Op::Put(
                keyspace,
                prefix.key.clone().u64(first).into(),
                full,
            ));
        }
    }
}

/// The position a record's key under `prefix` names (its first entry's).
pub fn key_position(prefix: &Key, key: &[u8]) -> u64 {
    key.get(prefix.bytes().len()..)
        .and_then(|rest| rest.get(..8))
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl Db {
    /// Deletes the records under `prefix` whose entries are all at or below `through`
    /// (a queue's entries once every reader is past them); returns how many.
    pub fn trim_runs(
        &self,
        keyspace: Keyspace,
        prefix: &Key,
        through: u64,
    ) -> StorageResult<usize> {
        let mut done = Vec::new();
        self.for_each_from(
            keyspace,
            prefix.bytes(),
            prefix.bytes(),
            true,
            |key, value| {
                let first = key_position(prefix, key);
                if first > through {
                    return false;
                }
                if entries(first, value)
                    .iter()
                    .all(|(position, _)| *position <= through)
                {
                    done.push(key.to_vec());
                }
                // Runs written side by side interleave: a later one may still be done.
                true
            },
        )?;
        if done.is_empty() {
            return Ok(0);
        }
        let mut batch = self.batch();
        for key in &done {
            batch.delete(keyspace, key.clone());
        }
        self.write_unsynced(batch)?;
        Ok(done.len())
    }

    /// The entries under `prefix` at positions in `(since, until]`, oldest first (those of
    /// one position in the order staged), at most `limit`.
    pub fn run_entries(
        &self,
        keyspace: Keyspace,
        prefix: &Key,
        since: u64,
        until: u64,
        limit: usize,
    ) -> StorageResult<Vec<(u64, Vec<u8>)>> {
        let start = prefix.clone().u64((since + 1).saturating_sub(RUN_SPAN));
        let mut found: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        self.for_each_from(
            keyspace,
            prefix.bytes(),
            start.bytes(),
            true,
            |key, value| {
                let first = key_position(prefix, key);
                if first > until {
                    return false;
                }
                // Later runs start after this one's first position: once `limit` entries
                // are found, a run starting after the last of them adds none.
                if found.len() >= limit
                    && found
                        .keys()
                        .nth(limit - 1)
                        .is_some_and(|last| first > *last)
                {
                    return false;
                }
                for (position, entry) in entries(first, value) {
                    if position > since && position <= until {
                        found.entry(position).or_default().push(entry.to_vec());
                    }
                }
                true
            },
        )?;
        Ok(found
            .into_iter()
            .flat_map(|(position, entries)| entries.into_iter().map(move |entry| (position, entry)))
            .take(limit)
            .collect())
    }

    /// The entries under `prefix` at positions below `before`, newest first, at most
    /// `limit`, and only those `keep` accepts.
    pub fn run_entries_before(
        &self,
        keyspace: Keyspace,
        prefix: &Key,
        before: u64,
        limit: usize,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> StorageResult<Vec<(u64, Vec<u8>)>> {
        let start = prefix.clone().u64(before.saturating_sub(1));
        let mut found: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        self.for_each_from(
            keyspace,
            prefix.bytes(),
            start.bytes(),
            false,
            |key, value| {
                let first = key_position(prefix, key);
                // Earlier runs end before `first + RUN_SPAN`: once `limit` entries are found,
                // a run that ends before the oldest of them adds none.
                if found.len() >= limit
                    && found
                        .keys()
                        .nth_back(limit - 1)
                        .is_some_and(|oldest| first + RUN_SPAN <= *oldest)
                {
                    return false;
                }
                for (position, entry) in entries(first, value) {
                    if position < before && keep(entry) {
                        found.insert(position, entry.to_vec());
                    }
                }
                true
            },
        )?;
        Ok(found.into_iter().rev().take(limit).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn prefix(user: &str) -> Key {
        Key::new().str(user)
    }

    #[test]
    fn a_batch_writes_one_record_per_prefix_and_readers_see_every_entry_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let space = Keyspace::PushQueue;
        // A single entry written before runs, then two batches side by side whose
        // positions interleave.
        let mut batch = db.batch();
        batch.put(space, prefix("@a:x").u64(3), b"three".to_vec());
        db.write(batch).unwrap();
        let (mut one, mut two) = (db.batch(), db.batch());
        for position in [10, 12, 14] {
            one.put_in_run(
                space,
                &RunPrefix::new(prefix("@a:x")),
                position,
                format!("e{position}").as_bytes(),
            );
        }
        for position in [11, 13] {
            two.put_in_run(
                space,
                &RunPrefix::new(prefix("@a:x")),
                position,
                format!("e{position}").as_bytes(),
            );
        }
        two.put_in_run(space, &RunPrefix::new(prefix("@b:x")), 11, b"other");
        db.write(one).unwrap();
        db.write(two).unwrap();
        let records = db.scan_prefix(space, prefix("@a:x").bytes()).unwrap().len();
        assert_eq!(records, 3, "the old entry and one record per batch");

        let positions = |entries: Vec<(u64, Vec<u8>)>| -> Vec<u64> {
            entries.into_iter().map(|(position, _)| position).collect()
        };
        let all = db.run_entries(space, &prefix("@a:x"), 0, 100, 100).unwrap();
        assert_eq!(positions(all.clone()), [3, 10, 11, 12, 13, 14]);
        assert_eq!(all[0].1, b"three");
        assert_eq!(all[3].1, b"e12");
        assert_eq!(
            positions(db.run_entries(space, &prefix("@a:x"), 10, 13, 100).unwrap()),
            [11, 12, 13]
        );
        assert_eq!(
            positions(db.run_entries(space, &prefix("@a:x"), 0, 100, 2).unwrap()),
            [3, 10]
        );
        let newest = db
            .run_entries_before(space, &prefix("@a:x"), 14, 3, |_| true)
            .unwrap();
        assert_eq!(positions(newest), [13, 12, 11]);
        let odd = db
            .run_entries_before(space, &prefix("@a:x"), 100, 10, |entry| {
                entry.starts_with(b"e") && entry.last().is_some_and(|digit| digit % 2 == 1)
            })
            .unwrap();
        assert_eq!(positions(odd), [13, 11]);

        // Trimming: records whose entries are all at or below a position go.
        assert_eq!(db.trim_runs(space, &prefix("@a:x"), 10).unwrap(), 1);
        assert_eq!(
            positions(db.run_entries(space, &prefix("@a:x"), 0, 100, 100).unwrap()),
            [10, 11, 12, 13, 14]
        );
        assert_eq!(db.trim_runs(space, &prefix("@a:x"), 12).unwrap(), 0);
        // The later of two interleaved runs is done before the earlier one.
        assert_eq!(db.trim_runs(space, &prefix("@a:x"), 13).unwrap(), 1);
        assert_eq!(
            positions(db.run_entries(space, &prefix("@a:x"), 0, 100, 100).unwrap()),
            [10, 12, 14]
        );
        assert_eq!(db.trim_runs(space, &prefix("@a:x"), 14).unwrap(), 1);
        assert!(
            db.run_entries(space, &prefix("@a:x"), 0, 100, 100)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            positions(db.run_entries(space, &prefix("@b:x"), 0, 100, 100).unwrap()),
            [11]
        );
    }

    #[test]
    fn a_run_never_spans_more_than_the_span() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let space = Keyspace::PushQueue;
        let mut batch = db.batch();
        for position in [1, 2, RUN_SPAN, RUN_SPAN + 1, 3 * RUN_SPAN] {
            batch.put_in_run(space, &RunPrefix::new(prefix("@a:x")), position, b"x");
        }
        db.write(batch).unwrap();
        let records = db.scan_prefix(space, prefix("@a:x").bytes()).unwrap();
        assert_eq!(records.len(), 3);
        let after = |since| {
            db.run_entries(space, &prefix("@a:x"), since, u64::MAX, 100)
                .unwrap()
                .into_iter()
                .map(|(position, _)| position)
                .collect::<Vec<_>>()
        };
        assert_eq!(after(RUN_SPAN - 1), [RUN_SPAN, RUN_SPAN + 1, 3 * RUN_SPAN]);
        assert_eq!(after(RUN_SPAN + 1), [3 * RUN_SPAN]);
    }
}
