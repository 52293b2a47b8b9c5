//! Unread and highlight counts per user and room: the events after the user's read
//! receipt (and after they joined) that their push rules say notify.
//!
//! Counts are kept in memory per (user, room) with the span already evaluated, so a sync
//! evaluates only the events that arrived since the last one; a new read receipt or a
//! push rule change starts the span again. At most [`COUNT_CAP`] events are evaluated
//! from a receipt on.

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::{
    Result,
    service::{
        account_data::AccountData,
        push_rules::Evaluator,
        rooms::{Rooms, pdu::ClientFormat},
    },
};

/// The most events counted after a read receipt.
pub const COUNT_CAP: usize = 999;
/// Entries kept before the cache starts over.
const CACHE_LIMIT: usize = 100_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

#[derive(Clone, Copy)]
struct Span {
    from: u64,
    until: u64,
    counts: Counts,
}

#[derive(Default)]
pub struct Unread {
    spans: Mutex<HashMap<(OwnedUserId, OwnedRoomId), Span>>,
}

impl Unread {
    /// The counts for events in `(from, until]`.
    pub async fn counts(
        &self,
        rooms: &Rooms,
        account_data: &AccountData,
        room_id: &RoomId,
        user: &UserId,
        from: u64,
        until: u64,
    ) -> Result<Counts> {
        let key = (user.to_owned(), room_id.to_owned());
        let cached = self.spans.lock().get(&key).copied();
        let (start, mut counts) = match cached {
            Some(span) if span.from == from && span.until <= until => (span.until, span.counts),
            _ => (from, Counts::default()),
        };
        let events = rooms.timeline(room_id, start, until, true, COUNT_CAP)?;
        if !events.is_empty() {
            let evaluator = Evaluator::new(rooms, account_data, room_id, user)?;
            for (_, event_id) in events {
                let Some(pdu) = rooms.pdu(&event_id)? else {
                    continue;
                };
                let event = pdu.to_client(&event_id, ClientFormat::Sync, None, None);
                let outcome = evaluator.evaluate(&event).await;
                counts.notifications += u64::from(outcome.notify);
                counts.highlights += u64::from(outcome.notify && outcome.highlight);
            }
        }
        let mut spans = self.spans.lock();
        if spans.len() >= CACHE_LIMIT {
            spans.clear();
        }
        spans.insert(
            key,
            Span {
                from,
                until,
                counts,
            },
        );
        Ok(counts)
    }

    /// Forgets a user's counts (their push rules changed).
    pub fn invalidate_user(&self, user: &UserId) {
        self.spans
            .lock()
            .retain(|(cached_user, _), _| cached_user != user);
    }
}
