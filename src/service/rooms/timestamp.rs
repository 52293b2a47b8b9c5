//! Jumping to a date: the event of a room's timeline closest to a point in time.

use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId};

use super::Rooms;
use crate::Result;

/// How many events next to the one found are also looked at: `origin_server_ts` comes
/// from the sending server's clock, so the timeline is only nearly in time order.
const NEIGHBOURS: usize = 8;

impl Rooms {
    /// The first event of the room's timeline at or after `ts` (`forwards`), or the last
    /// one at or before it; with its time.
    pub fn event_near(
        &self,
        room_id: &RoomId,
        ts: MilliSecondsSinceUnixEpoch,
        forwards: bool,
    ) -> Result<Option<(OwnedEventId, MilliSecondsSinceUnixEpoch)>> {
        let Some(room) = self.room(room_id)? else {
            return Ok(None);
        };
        // The time of the first event after a position.
        let after = |position: u64| -> Result<Option<MilliSecondsSinceUnixEpoch>> {
            let next = self.timeline(room_id, position, u64::MAX, true, 1)?;
            let Some((_, event_id)) = next.first() else {
                return Ok(None);
            };
            Ok(self.parsed_pdu(event_id)?.map(|pdu| pdu.origin_server_ts))
        };
        // The first position whose next event is at or after `ts` (binary search: the
        // timeline is nearly in time order).
        let (mut low, mut high) = (0, room.last_position);
        while low < high {
            let middle = low + (high - low) / 2;
            match after(middle)? {
                Some(time) if time < ts => low = middle + 1,
                _ => high = middle,
            }
        }
        // Look around the place found for the best match.
        let around: Vec<(u64, OwnedEventId)> = {
            let mut before = self.timeline(room_id, low.saturating_add(1), 0, false, NEIGHBOURS)?;
            before.reverse();
            before.extend(self.timeline(room_id, low, u64::MAX, true, NEIGHBOURS)?);
            before
        };
        let mut best: Option<(OwnedEventId, MilliSecondsSinceUnixEpoch)> = None;
        for (_, event_id) in around {
            let Some(pdu) = self.parsed_pdu(&event_id)? else {
                continue;
            };
            let time = pdu.origin_server_ts;
            let fits = if forwards { time >= ts } else { time <= ts };
            let better =
                best.as_ref().is_none_or(
                    |(_, best)| {
                        if forwards { time < *best } else { time > *best }
                    },
                );
            if fits && better {
                best = Some((event_id, time));
            }
        }
        Ok(best)
    }
}
