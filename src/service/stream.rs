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
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

use crate::storage::{Batch, Db, Keyspace, StorageResult, codec};

/// The key under which the highest allocated position is kept (merged with `max`).
pub const POSITION_KEY: &[u8] = b"stream_position";

pub struct Stream {
    counter: Mutex<Counter>,
    frontier: watch::Sender<u64>,
    listeners: Mutex<HashMap<OwnedUserId, watch::Sender<()>>>,
    rooms: Mutex<RoomChanges>,
    /// Each user's devices' syncs.
    syncing: Mutex<HashMap<OwnedUserId, HashMap<OwnedDeviceId, Syncing>>>,
}

/// A device's syncs: how many are open, and when the last one ended.
struct Syncing {
    open: usize,
    last: Instant,
}

/// Held while a device syncs (`Stream::syncing`).
pub struct SyncingGuard {
    stream: Arc<Stream>,
    key: (OwnedUserId, OwnedDeviceId),
}

impl Drop for SyncingGuard {
    fn drop(&mut self) {
        let mut syncing = self.stream.syncing.lock();
        let (user, device) = &self.key;
        if let Some(entry) = syncing
            .get_mut(user)
            .and_then(|devices| devices.get_mut(device))
        {
            entry.open = entry.open.saturating_sub(1);
            entry.last = Instant::now();
        }
    }
}

/// The rooms whose timeline or receipts changed, by position, since the server started:
/// what lets a sync visit the rooms that changed instead of every room of its user. Each
/// room is listed once, at its latest change, so memory grows with rooms, not events.
struct RoomChanges {
    /// Changes at or below this position are not known (before the start, or forgotten).
    horizon: u64,
    latest: HashMap<OwnedRoomId, u64>,
    by_position: BTreeMap<u64, OwnedRoomId>,
}

/// Users whose syncing is remembered before the devices idle longest are forgotten.
const USERS_REMEMBERED: usize = 100_000;
/// How long an idle device's last sync is remembered once that many are.
const FORGET_SYNCING: Duration = Duration::from_secs(10 * 60);

/// Rooms remembered before the oldest is forgotten (and the horizon moves up past it).
const ROOMS_REMEMBERED: usize = 500_000;

impl RoomChanges {
    fn new(horizon: u64) -> Self {
        Self {
            horizon,
            latest: HashMap::new(),
            by_position: BTreeMap::new(),
        }
    }

    fn note(&mut self, room_id: &RoomId, position: u64) {
        if position <= self.horizon {
            return;
        }
        match self.latest.get_mut(room_id) {
            Some(latest) if *latest >= position => return,
            Some(latest) => {
                self.by_position.remove(latest);
                *latest = position;
            }
            None => {
                self.latest.insert(room_id.to_owned(), position);
            }
        }
        self.by_position.insert(position, room_id.to_owned());
        while self.by_position.len() > ROOMS_REMEMBERED {
            let Some((oldest, room)) = self.by_position.pop_first() else {
                break;
            };
            self.latest.remove(&room);
            self.horizon = oldest;
        }
    }

    fn since(&self, since: u64) -> Option<Vec<OwnedRoomId>> {
        (since >= self.horizon).then(|| {
            self.by_position
                .range(since.saturating_add(1)..)
                .map(|(_, room)| room.clone())
                .collect()
        })
    }
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
            rooms: Mutex::new(RoomChanges::new(last)),
            syncing: Mutex::default(),
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

    /// Notes that a room's timeline or receipts change at `position` (a position being
    /// written: noted before it commits, so no reader that can see it misses the note).
    pub fn note_room(&self, room_id: &RoomId, position: u64) {
        self.rooms.lock().note(room_id, position);
    }

    /// The rooms that changed after `since`, or `None` when that is before what this
    /// process knows (then every room may have). May name rooms whose change is above
    /// the frontier: a reader finds nothing new in them.
    pub fn rooms_changed_since(&self, since: u64) -> Option<Vec<OwnedRoomId>> {
        self.rooms.lock().since(since)
    }

    /// Notes that a device syncs until the guard is dropped.
    pub fn syncing(self: &Arc<Self>, user: &UserId, device: &DeviceId) -> SyncingGuard {
        let mut syncing = self.syncing.lock();
        if syncing.len() >= USERS_REMEMBERED {
            let now = Instant::now();
            syncing.retain(|_, devices| {
                devices.retain(|_, entry| entry.open > 0 || now - entry.last < FORGET_SYNCING);
                !devices.is_empty()
            });
        }
        let entry = syncing
            .entry(user.to_owned())
            .or_default()
            .entry(device.to_owned())
            .or_insert(Syncing {
                open: 0,
                last: Instant::now(),
            });
        entry.open += 1;
        entry.last = Instant::now();
        SyncingGuard {
            stream: self.clone(),
            key: (user.to_owned(), device.to_owned()),
        }
    }

    /// Whether a device has a sync open, or ended one less than `grace` ago (a client
    /// between two long-polls): it sees new events without being pushed them.
    pub fn is_syncing(&self, user: &UserId, device: &DeviceId, grace: Duration) -> bool {
        self.syncing
            .lock()
            .get(user)
            .and_then(|devices| devices.get(device))
            .is_some_and(|entry| entry.open > 0 || entry.last.elapsed() < grace)
    }

    /// How long ago any device of the user last synced: zero while one syncs, `None`
    /// if none has since the server started (or it was long enough ago to be forgotten).
    pub fn last_synced(&self, user: &UserId) -> Option<Duration> {
        let syncing = self.syncing.lock();
        let devices = syncing.get(user)?;
        devices
            .values()
            .map(|entry| {
                if entry.open > 0 {
                    Duration::ZERO
                } else {
                    entry.last.elapsed()
                }
            })
            .min()
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
            rooms: Mutex::new(RoomChanges::new(10)),
            syncing: Mutex::default(),
        })
    }

    #[test]
    fn room_changes_list_each_room_once_after_a_position() {
        let stream = stream();
        let (a, b) = (ruma::room_id!("!a:x"), ruma::room_id!("!b:x"));
        stream.note_room(a, 11);
        stream.note_room(b, 12);
        stream.note_room(a, 13);
        stream.note_room(b, 5);
        assert_eq!(stream.rooms_changed_since(10).map(|r| r.len()), Some(2));
        assert_eq!(stream.rooms_changed_since(12), Some(vec![a.to_owned()]));
        assert_eq!(stream.rooms_changed_since(13), Some(vec![]));
        assert_eq!(stream.rooms_changed_since(9), None, "before the horizon");
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
