//! Unread and highlight counts per user and room: the stored notifications
//! (`actions.rs`) after the user's read receipts. A receipt without a thread reads
//! everything up to its event; a `main` receipt the main timeline; a thread's receipt
//! that thread.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{EventId, OwnedEventId, RoomId, UserId};

use super::actions::{HIGHLIGHT, NOTIFY, Notification, unread_prefix};
use crate::{
    Result,
    service::{receipts::Receipts, rooms::Rooms},
    storage::{
        Db, Keyspace,
        codec::{Key, KeyReader, decode_json},
    },
};

/// Notifications counted at most per room: beyond, a badge says as much as an exact
/// figure, and a sync does not walk a room's whole backlog.
pub const COUNT_CAP: usize = 10_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub notifications: u64,
    pub highlights: u64,
}

impl Count {
    fn add(&mut self, flags: u8) {
        self.notifications += u64::from(flags & NOTIFY != 0);
        self.highlights += u64::from(flags & NOTIFY != 0 && flags & HIGHLIGHT != 0);
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
#[derive(Clone, Debug, Default)]
pub struct ReadMarks {
    /// Everything up to here: the unthreaded receipt, or when the user joined.
    pub all: u64,
    /// The main timeline up to here.
    pub main: u64,
    /// Each thread up to here.
    pub threads: BTreeMap<OwnedEventId, u64>,
}

impl ReadMarks {
    fn of(&self, thread: Option<&str>) -> u64 {
        let own = match thread {
            None => self.main,
            Some(root) => self
                .threads
                .iter()
                .find(|(id, _)| id.as_str() == root)
                .map_or(0, |(_, position)| *position),
        };
        own.max(self.all)
    }

    /// Whether the event at `position`, in `thread` (a root id) or the main timeline,
    /// is read.
    pub fn is_read(&self, thread: Option<&EventId>, position: u64) -> bool {
        position <= self.of(thread.map(EventId::as_str))
    }

    /// The earliest position anything may be unread after.
    fn floor(&self) -> u64 {
        self.all
    }
}

pub struct Counts {
    db: Arc<Db>,
}

impl Counts {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// A user's counts in a room up to position `until`, given how far they read.
    pub fn room(
        &self,
        user: &UserId,
        room_id: &RoomId,
        read: &ReadMarks,
        until: u64,
    ) -> Result<RoomCounts> {
        let mut counts = RoomCounts::default();
        let entries = self.db.stream_range(
            Keyspace::UnreadNotifications,
            &unread_prefix(user, room_id),
            read.floor(),
            until,
        )?;
        for (position, value) in entries.into_iter().take(COUNT_CAP) {
            let Some((&flags, thread)) = value.split_first() else {
                continue;
            };
            let thread = (!thread.is_empty())
                .then(|| std::str::from_utf8(thread).ok())
                .flatten();
            if position <= read.of(thread) {
                continue;
            }
            match thread.and_then(|root| OwnedEventId::try_from(root).ok()) {
                Some(root) => counts.threads.entry(root).or_default().add(flags),
                None => counts.main.add(flags),
            }
        }
        Ok(counts)
    }
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

impl Counts {
    /// A user's notifications, newest first, at positions below `before`: those that
    /// highlight only, if asked. At most `limit`.
    pub fn notifications(
        &self,
        user: &UserId,
        before: u64,
        limit: usize,
        only_highlight: bool,
    ) -> Result<Vec<(u64, Notification)>> {
        let prefix = Key::new().str(user.as_str());
        let start = prefix.clone().u64(before.saturating_sub(1));
        let mut out = Vec::new();
        let mut failure = None;
        self.db.for_each_from(
            Keyspace::Notifications,
            prefix.bytes(),
            start.bytes(),
            false,
            |key, value| {
                let position = KeyReader::new(&key[prefix.bytes().len()..]).u64();
                let decoded = decode_json::<Notification>(value);
                match (position, decoded) {
                    (Ok(position), Ok(notification)) => {
                        if position < before && (!only_highlight || notification.highlight) {
                            out.push((position, notification));
                        }
                        out.len() < limit
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        failure = Some(error);
                        false
                    }
                }
            },
        )?;
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(out),
        }
    }
}
