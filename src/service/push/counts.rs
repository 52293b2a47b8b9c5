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
        let entries = self.db.stream_page(
            Keyspace::UnreadNotifications,
            &unread_prefix(user, room_id),
            read.all,
            until,
            COUNT_CAP,
        )?;
        for (position, value) in entries {
            let Some((&flags, thread)) = value.split_first() else {
                continue;
            };
            let thread = std::str::from_utf8(thread)
                .ok()
                .and_then(|root| OwnedEventId::try_from(root).ok());
            if read.is_read(thread.as_deref(), position) {
                continue;
            }
            match thread {
                Some(root) => counts.threads.entry(root).or_default().add(flags),
                None => counts.main.add(flags),
            }
        }
        Ok(counts)
    }

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

    /// A user's notifications at positions in `(after, until]`, oldest first, at most
    /// `limit` (what a push gateway has still to be sent).
    pub fn notifications_after(
        &self,
        user: &UserId,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Notification)>> {
        self.db
            .stream_page(
                Keyspace::Notifications,
                &Key::new().str(user.as_str()),
                after,
                until,
                limit,
            )?
            .into_iter()
            .map(|(position, value)| Ok((position, decode_json(&value)?)))
            .collect()
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
