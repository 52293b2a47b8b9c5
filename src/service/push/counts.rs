//! Unread and highlight counts per user and room: the stored notifications
//! (`actions.rs`) after the user's read receipts. A receipt without a thread reads
//! everything up to its event; a `main` receipt the main timeline; a thread's receipt
//! that thread.

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use lru::LruCache;
use parking_lot::Mutex;

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::actions::{
    CountedEvent, Listed, Notification, NotifyingEvent, Outcome, notifying_event_key,
    notifying_events_prefix, push_queue_prefix,
};
use crate::{
    Result,
    service::{receipts::Receipts, rooms::Rooms},
    storage::{
        Db, Keyspace,
        codec::{decode_json, decode_json_borrowed},
        runs::key_position,
    },
};

/// Notifying events read at most per count of a room (and per room by
/// `/notifications`): a sync never walks a room's whole backlog at once.
pub const COUNT_CAP: usize = 10_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub notifications: u64,
    pub highlights: u64,
}

impl Count {
    fn add(&mut self, outcome: Outcome) {
        self.notifications += 1;
        self.highlights += u64::from(outcome.highlight());
    }

    pub fn is_zero(&self) -> bool {
        self.notifications == 0 && self.highlights == 0
    }
}

/// A room's counts: its main timeline's and each thread's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomCounts {
    pub main: Count,
    pub threads: BTreeMap<OwnedEventId, Count>,
}

impl RoomCounts {
    /// Every notification of the room, threads included.
    pub fn total(&self) -> Count {
        self.threads.values().fold(self.main, |mut total, count| {
            total.notifications += count.notifications;
            total.highlights += count.highlights;
            total
        })
    }
}

/// How far a user has read a room, as stream positions of the events read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadMarks {
    /// Everything up to here: the unthreaded receipt, or when the user joined.
    pub all: u64,
    /// The main timeline up to here.
    pub main: u64,
    /// Each thread up to here.
    pub threads: BTreeMap<OwnedEventId, u64>,
}

impl ReadMarks {
    /// Whether the event at `position`, in `thread` (its root) or the main timeline, is
    /// read.
    pub fn is_read(&self, thread: Option<&EventId>, position: u64) -> bool {
        let own = match thread {
            None => self.main,
            Some(root) => self.threads.get(root).copied().unwrap_or(0),
        };
        position <= own.max(self.all)
    }
}

/// A user's counts in a room as last worked out: the next sync adds only what came
/// since, while the user's read marks and the redactions stay as they were.
struct Counted {
    marks: ReadMarks,
    redactions: u64,
    through: u64,
    counts: RoomCounts,
}

/// Users' counts kept per room.
const COUNTED: NonZeroUsize = NonZeroUsize::new(20_000).expect("not zero");

pub struct Counts {
    db: Arc<Db>,
    /// How many redactions took notifications away: counts kept from before are stale.
    redactions: Arc<AtomicU64>,
    counted: Mutex<LruCache<(OwnedUserId, OwnedRoomId), Counted>>,
}

impl Counts {
    /// `redactions` is the push actions' count of redactions that removed
    /// notifications.
    pub fn new(db: Arc<Db>, redactions: Arc<AtomicU64>) -> Self {
        Self {
            db,
            redactions,
            counted: Mutex::new(LruCache::new(COUNTED)),
        }
    }

    /// A user's counts in a room up to position `until`, given how far they read (never
    /// before they joined: they were a member of every event counted). What was counted
    /// for the same read marks up to an earlier position is kept: only the events since
    /// are read.
    pub fn room(
        &self,
        user: &UserId,
        room_id: &RoomId,
        read: &ReadMarks,
        until: u64,
    ) -> Result<RoomCounts> {
        let key = (user.to_owned(), room_id.to_owned());
        let redactions = self.redactions.load(Ordering::Acquire);
        let kept = match self.counted.lock().get(&key) {
            Some(kept)
                if kept.marks == *read
                    && kept.redactions == redactions
                    && kept.through <= until =>
            {
                Some((kept.through, kept.counts.clone()))
            }
            _ => None,
        };
        let (since, mut counts) = kept.unwrap_or((read.all, RoomCounts::default()));
        self.count(user, room_id, read, (since, until), &mut counts)?;
        self.counted.lock().put(
            key,
            Counted {
                marks: read.clone(),
                redactions,
                through: until,
                counts: counts.clone(),
            },
        );
        Ok(counts)
    }

    /// Adds to `counts` the user's unread notifications in `(since, until]`.
    fn count(
        &self,
        user: &UserId,
        room_id: &RoomId,
        read: &ReadMarks,
        (since, until): (u64, u64),
        counts: &mut RoomCounts,
    ) -> Result<()> {
        let events = self.db.stream_page(
            Keyspace::NotifyingEvents,
            &notifying_events_prefix(room_id),
            since,
            until,
            COUNT_CAP,
        )?;
        for (position, value) in events {
            let event: CountedEvent<'_> = decode_json_borrowed(&value)?;
            let (Listed::Named(Some(outcome)) | Listed::Everyone(Some(outcome))) =
                event.outcome(user)
            else {
                continue;
            };
            let thread = event
                .thread
                .as_deref()
                .and_then(|root| <&EventId>::try_from(root).ok());
            if read.is_read(thread, position) {
                continue;
            }
            match thread {
                Some(root) => counts
                    .threads
                    .entry(root.to_owned())
                    .or_default()
                    .add(outcome),
                None => counts.main.add(outcome),
            }
        }
        Ok(())
    }

    /// A user's notifications, newest first, at positions below `before`, in every room
    /// they have been in, from the events of each while they were joined: those that
    /// highlight only, if asked. At most `limit`.
    pub fn notifications(
        &self,
        rooms: &Rooms,
        user: &UserId,
        before: u64,
        limit: usize,
        only_highlight: bool,
    ) -> Result<Vec<(u64, Notification)>> {
        let mut found: Vec<(u64, Notification)> = Vec::new();
        for (room_id, _) in rooms.user_rooms(user)? {
            // Once `limit` are found, events older than the last of them add nothing.
            let floor = if found.len() >= limit {
                found.sort_unstable_by_key(|(position, _)| std::cmp::Reverse(*position));
                found.truncate(limit);
                found.last().map_or(0, |(position, _)| *position)
            } else {
                0
            };
            let found_here = self.room_notifications(
                rooms,
                user,
                &room_id,
                (floor, before),
                limit,
                only_highlight,
            )?;
            found.extend(found_here);
        }
        found.sort_unstable_by_key(|(position, _)| std::cmp::Reverse(*position));
        found.truncate(limit);
        Ok(found)
    }

    /// A user's notifications in one room at positions inside `(floor, before)`, newest
    /// first, at most `limit`; events of a time they were not joined are left out.
    fn room_notifications(
        &self,
        rooms: &Rooms,
        user: &UserId,
        room_id: &RoomId,
        (floor, before): (u64, u64),
        limit: usize,
        only_highlight: bool,
    ) -> Result<Vec<(u64, Notification)>> {
        let mut found = Vec::new();
        // Whether the user was joined in a state (events in a row mostly share one).
        let mut joined_in: HashMap<u64, bool> = HashMap::new();
        let prefix = notifying_events_prefix(room_id);
        let start = prefix.clone().u64(before.saturating_sub(1));
        let mut scanned = 0;
        let mut failure = None;
        self.db.for_each_from(
            Keyspace::NotifyingEvents,
            prefix.bytes(),
            start.bytes(),
            false,
            |key, value| {
                let position = key_position(&prefix, key);
                scanned += 1;
                if position <= floor || found.len() >= limit || scanned > COUNT_CAP {
                    return false;
                }
                let event: NotifyingEvent = match decode_json(value) {
                    Ok(event) => event,
                    Err(error) => {
                        failure = Some(error.into());
                        return false;
                    }
                };
                let outcome = match event.outcome(user) {
                    Listed::Named(outcome) | Listed::Everyone(outcome @ None) => outcome,
                    Listed::Everyone(Some(outcome)) => {
                        let joined = match joined_in.get(&event.state_before) {
                            Some(joined) => *joined,
                            None => match rooms.joined_in_state(event.state_before, user) {
                                Ok(joined) => {
                                    *joined_in.entry(event.state_before).or_insert(joined)
                                }
                                Err(error) => {
                                    failure = Some(error);
                                    return false;
                                }
                            },
                        };
                        joined.then_some(outcome)
                    }
                };
                if let Some(outcome) = outcome.filter(|o| !only_highlight || o.highlight())
                    && let Some(notification) = event.notification(room_id, outcome)
                {
                    found.push((position, notification));
                }
                true
            },
        )?;
        match failure {
            Some(error) => Err(error),
            None => Ok(found),
        }
    }

    /// What a user's push queue holds at positions in `(after, until]`, oldest first, at
    /// most `limit` (what a push gateway has still to be sent). Entries of an event
    /// since redacted are skipped.
    pub fn notifications_after(
        &self,
        user: &UserId,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Notification)>> {
        let entries = self.db.run_entries(
            Keyspace::PushQueue,
            &push_queue_prefix(user),
            after,
            until,
            limit,
        )?;
        let mut out = Vec::with_capacity(entries.len());
        for (position, room_id) in entries {
            let Some(room_id) = std::str::from_utf8(&room_id)
                .ok()
                .and_then(|room_id| <&RoomId>::try_from(room_id).ok())
            else {
                continue;
            };
            let event: Option<NotifyingEvent> = self.db.get_json(
                Keyspace::NotifyingEvents,
                notifying_event_key(room_id, position).bytes(),
            )?;
            let notification = event.and_then(|event| match event.outcome(user) {
                Listed::Named(outcome) | Listed::Everyone(outcome) => {
                    event.notification(room_id, outcome?)
                }
            });
            out.extend(notification.map(|notification| (position, notification)));
        }
        Ok(out)
    }
}

/// How far a user has read a room they are in now (counted from when they joined).
pub fn current_read_marks(
    rooms: &Rooms,
    receipts: &Receipts,
    room_id: &RoomId,
    user: &UserId,
) -> Result<ReadMarks> {
    let joined_at = rooms
        .membership(room_id, user)?
        .map_or(0, |membership| membership.position);
    read_marks(rooms, receipts, room_id, user, joined_at)
}

/// How far a user has read a room: the stream positions of their receipts' events.
pub fn read_marks(
    rooms: &Rooms,
    receipts: &Receipts,
    room_id: &RoomId,
    user: &UserId,
    joined_at: u64,
) -> Result<ReadMarks> {
    let mut marks = ReadMarks {
        all: joined_at,
        ..ReadMarks::default()
    };
    for (thread, receipt) in receipts.read_receipts(room_id, user)? {
        let Some(position) = rooms
            .pdu(&receipt.event_id)?
            .map(|pdu| pdu.position)
            .filter(|position| *position > 0)
        else {
            continue;
        };
        let mark = match thread.as_deref() {
            None => &mut marks.all,
            Some("main") => &mut marks.main,
            Some(root) => match OwnedEventId::try_from(root) {
                Ok(root) => marks.threads.entry(root).or_default(),
                Err(_) => continue,
            },
        };
        *mark = (*mark).max(position);
    }
    Ok(marks)
}
