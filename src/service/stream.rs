//! Stream positions and wake-ups.
//!
//! Every persisted change a sync can see (timeline events, membership, account data,
//! receipts) takes one position from a single global counter. A writer gets a [`Permit`]
//! that is registered as in flight in the same step that allocates its number; readers
//! only look at positions up to the [`Stream::frontier`], below the lowest number still in
//! flight, so a sync never skips a write that commits late. After its batch commits, a
//! writer drops the permit and wakes the users concerned through [`Stream::notify`].
//! A long-poll subscribes first, then reads, then waits: no wake-up falls in between.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

use crate::storage::{Batch, Db, Keyspace, StorageResult, codec};

/// The key under which the highest allocated position is kept (merged with `max`).
pub const POSITION_KEY: &[u8] = b"stream_position";

pub struct Stream {
    counter: Mutex<Counter>,
    frontier: watch::Sender<u64>,
    listeners: Mutex<HashMap<OwnedUserId, watch::Sender<()>>>,
}

struct Counter {
    last_allocated: u64,
    in_flight: BTreeSet<u64>,
}

/// A stream position being written. Dropping it retires the position, whether or not
/// the write succeeded: a failed write leaves a harmless gap.
pub struct Permit {
    stream: Arc<Stream>,
    position: u64,
}

impl Permit {
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Records the position in the batch, so a restart never hands it out again.
    pub fn persist_in(&self, batch: &mut Batch) {
        batch.merge_max(Keyspace::Meta, POSITION_KEY, self.position);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.stream.retire(self.position);
    }
}

impl Stream {
    /// Resumes after the highest position ever persisted.
    pub fn load(db: &Db) -> StorageResult<Arc<Self>> {
        let last = match db.get(Keyspace::Meta, POSITION_KEY)? {
            Some(bytes) => codec::decode_u64(&bytes)?,
            None => 0,
        };
        Ok(Arc::new(Self {
            counter: Mutex::new(Counter {
                last_allocated: last,
                in_flight: BTreeSet::new(),
            }),
            frontier: watch::Sender::new(last),
            listeners: Mutex::new(HashMap::new()),
        }))
    }

    /// Allocates the next position and registers it as in flight.
    pub fn next(self: &Arc<Self>) -> Permit {
        let mut counter = self.counter.lock();
        counter.last_allocated += 1;
        let position = counter.last_allocated;
        counter.in_flight.insert(position);
        Permit {
            stream: self.clone(),
            position,
        }
    }

    fn retire(&self, position: u64) {
        let mut counter = self.counter.lock();
        counter.in_flight.remove(&position);
        let frontier = match counter.in_flight.first() {
            Some(lowest) => lowest - 1,
            None => counter.last_allocated,
        };
        drop(counter);
        self.frontier.send_if_modified(|current| {
            let advanced = frontier > *current;
            if advanced {
                *current = frontier;
            }
            advanced
        });
    }

    /// Every position at or below this one is committed (or was abandoned).
    pub fn frontier(&self) -> u64 {
        *self.frontier.borrow()
    }

    /// A receiver woken whenever something concerning `user` commits. Subscribe before
    /// reading, then wait on it.
    /// A receiver that changes whenever the frontier moves (any event anywhere): for the
    /// deprecated event stream, which waits on rooms rather than on its user.
    pub fn watch_frontier(&self) -> watch::Receiver<u64> {
        self.frontier.subscribe()
    }

    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<()> {
        let mut listeners = self.listeners.lock();
        let sender = listeners
            .entry(user.to_owned())
            .or_insert_with(|| watch::Sender::new(()));
        let mut receiver = sender.subscribe();
        receiver.mark_unchanged();
        receiver
    }

    /// Wakes the long-polls of these users.
    pub fn notify<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        let mut listeners = self.listeners.lock();
        for user in users {
            if let Some(sender) = listeners.get(user) {
                if sender.receiver_count() == 0 {
                    listeners.remove(user);
                } else {
                    sender.send_replace(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Arc<Stream> {
        Arc::new(Stream {
            counter: Mutex::new(Counter {
                last_allocated: 10,
                in_flight: BTreeSet::new(),
            }),
            frontier: watch::Sender::new(10),
            listeners: Mutex::new(HashMap::new()),
        })
    }

    #[test]
    fn frontier_waits_for_the_lowest_write_in_flight() {
        let stream = stream();
        let first = stream.next();
        let second = stream.next();
        assert_eq!((first.position(), second.position()), (11, 12));
        drop(second);
        assert_eq!(stream.frontier(), 10, "12 is done but 11 is not");
        drop(first);
        assert_eq!(stream.frontier(), 12);
    }

    #[tokio::test]
    async fn a_wake_up_between_subscribe_and_wait_is_not_lost() {
        let stream = stream();
        let user = ruma::user_id!("@a:example.org");
        let mut receiver = stream.subscribe(user);
        stream.notify([user]);
        tokio::time::timeout(std::time::Duration::from_secs(1), receiver.changed())
            .await
            .expect("woken")
            .expect("sender alive");
    }
}
