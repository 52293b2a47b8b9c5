//! Unread and highlight counts per user and room: the stored notifications
//! (`actions.rs`) after the user's read receipts. A receipt without a thread reads
//! everything up to its event; a `main` receipt the main timeline; a thread's receipt
//! that thread.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{EventId, OwnedEventId, RoomId, UserId};

use super::actions::{
    HIGHLIGHT, NOTIFY, Notification, NotifyingEvent, notifications_prefix, notifying_event_key,
    unread_prefix,
};
use crate::{
    Result,
    service::{receipts::Receipts, rooms::Rooms},
    storage::{Db, Keyspace, codec::decode_json},
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
        let entries = self.db.run_entries(
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
        let entries = self.db.run_entries_before(
            Keyspace::Notifications,
            &notifications_prefix(user),
            before,
            limit,
            |entry| !only_highlight || highlights(entry),
        )?;
        self.resolve(entries)
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
        let entries = self.db.run_entries(
            Keyspace::Notifications,
            &notifications_prefix(user),
            after,
            until,
            limit,
        )?;
        self.resolve(entries)
    }

    /// The notifications of a user's entries, each completed from what its event's
    /// notifications share (entries of an event since redacted are skipped).
    fn resolve(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<Vec<(u64, Notification)>> {
        let mut out = Vec::with_capacity(entries.len());
        for (position, entry) in entries {
            if entry.first() == Some(&b'{') {
                out.push((position, decode_json(&entry)?));
                continue;
            }
            let event: Option<NotifyingEvent> = self.db.get_json(
                Keyspace::NotifyingEvents,
                notifying_event_key(position).bytes(),
            )?;
            if let Some(notification) = event.and_then(|event| event.notification(&entry)) {
                out.push((position, notification));
            }
        }
        Ok(out)
    }
}

/// Whether a user's entry in the notifications keyspace highlights.
fn highlights(entry: &[u8]) -> bool {
    match entry.first() {
        Some(b'{') => decode_json::<Notification>(entry).is_ok_and(|n| n.highlight),
        Some(flags) => flags & HIGHLIGHT != 0,
        None => false,
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

#[cfg(test)]
mod tests {
    use ruma::{owned_event_id, owned_room_id, push::Action, user_id};

    use super::*;
    use crate::storage::codec::encode_json;

    #[test]
    fn entries_written_before_runs_and_shared_events_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let (user, room) = (user_id!("@bob:x"), owned_room_id!("!r:x"));
        let notify = vec![Action::Notify];
        // As stored before: one whole notification per key, one flag byte per key.
        let mut batch = db.batch();
        let old = Notification {
            room_id: room.clone(),
            event_id: owned_event_id!("$old"),
            actions: notify.clone(),
            highlight: true,
            thread: None,
            ts: 1,
        };
        batch.put(
            Keyspace::Notifications,
            notifications_prefix(user).u64(5),
            encode_json(&old),
        );
        batch.put(
            Keyspace::UnreadNotifications,
            unread_prefix(user, &room).u64(5),
            vec![NOTIFY | HIGHLIGHT],
        );
        // As stored now: the event's shared record, the member's two-byte entry in a run.
        batch.put_json(
            Keyspace::NotifyingEvents,
            notifying_event_key(7),
            &NotifyingEvent {
                room_id: room.clone(),
                event_id: owned_event_id!("$new"),
                thread: None,
                ts: 2,
                actions: vec![vec![], notify],
            },
        );
        batch.put_in_run(
            Keyspace::Notifications,
            &crate::storage::runs::RunPrefix::new(notifications_prefix(user)),
            7,
            &[NOTIFY, 1],
        );
        batch.put_in_run(
            Keyspace::UnreadNotifications,
            &crate::storage::runs::RunPrefix::new(unread_prefix(user, &room)),
            7,
            &[NOTIFY],
        );
        db.write(batch).unwrap();

        let counts = Counts::new(db);
        let listed = counts.notifications(user, u64::MAX, 10, false).unwrap();
        let ids: Vec<(u64, &str, bool)> = listed
            .iter()
            .map(|(at, n)| (*at, n.event_id.as_str(), n.highlight))
            .collect();
        assert_eq!(ids, [(7, "$new", false), (5, "$old", true)]);
        assert_eq!(listed[0].1.actions.len(), 1);
        let highlights = counts.notifications(user, u64::MAX, 10, true).unwrap();
        assert_eq!(highlights.len(), 1);
        assert_eq!(highlights[0].0, 5);
        let after = counts.notifications_after(user, 5, u64::MAX, 10).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].1.event_id, "$new");
        let unread = counts
            .room(user, &room, &ReadMarks::default(), u64::MAX)
            .unwrap();
        assert_eq!(
            unread.main,
            Count {
                notifications: 2,
                highlights: 1
            }
        );
    }
}
