//! A room's history from before this server joined it. Joining through another server
//! brings the room's state, not its messages; when a client pages back past the oldest
//! event of the timeline, the events before it are fetched from the room's other
//! servers (`federation/receive.rs`, `/backfill`), checked like any PDU and placed here,
//! below the timeline: `Keyspace::History` keeps them newest first (seq 1 is the event
//! just before the oldest one of the timeline), `Keyspace::HistoryFrontiers` where
//! fetching goes on. An event that fails the checks is kept as rejected, so it is
//! neither served nor fetched again.
//!
//! History events are seen with the state before the oldest timeline event (for a room
//! joined over federation, the state the join brought): who may read them follows the
//! room's history visibility as it stood then.

use ruma::{OwnedEventId, RoomId};
use serde::{Deserialize, Serialize};

use super::{
    Rooms,
    pdu::SignedPdu,
    timeline::{PduWrite, Place},
};
use crate::{
    Result,
    storage::{
        Keyspace,
        codec::{Key, KeyReader},
    },
};

/// Where fetching a room's history stands.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HistoryFrontier {
    /// The seq the next placed event gets.
    pub next_seq: u64,
    /// The events whose parents are still to fetch; none when the history is complete
    /// (or no server could give more).
    pub extremities: Vec<OwnedEventId>,
    /// The state group history events are seen with.
    pub state: u64,
}

impl Rooms {
    /// Where fetching the room's history stands; the first time, the parents of the
    /// oldest timeline event that are not in the timeline.
    pub fn history_frontier(&self, room_id: &RoomId) -> Result<HistoryFrontier> {
        if let Some(frontier) = self
            .db
            .get_json(Keyspace::HistoryFrontiers, room_id.as_bytes())?
        {
            return Ok(frontier);
        }
        let mut frontier = HistoryFrontier {
            next_seq: 1,
            ..HistoryFrontier::default()
        };
        let oldest = self.timeline(room_id, 0, u64::MAX, true, 1)?;
        let Some((_, event_id)) = oldest.first() else {
            return Ok(frontier);
        };
        if let (Some(stored), Some(pdu)) = (self.pdu(event_id)?, self.parsed_pdu(event_id)?) {
            frontier.state = stored.state_before;
            for parent in &pdu.prev_events {
                if !self.placed(parent)? {
                    frontier.extremities.push(parent.clone());
                }
            }
        }
        Ok(frontier)
    }

    /// Whether an event is in a room's timeline or history (not only known, as an auth
    /// or state event is).
    pub fn placed(&self, event_id: &ruma::EventId) -> Result<bool> {
        Ok(self
            .pdu(event_id)?
            .is_some_and(|stored| !stored.outlier && !stored.soft_failed))
    }

    /// Whether an event was fetched and refused by the checks.
    pub fn is_rejected(&self, event_id: &ruma::EventId) -> Result<bool> {
        Ok(self
            .pdu(event_id)?
            .is_some_and(|stored| stored.outlier && stored.soft_failed))
    }

    /// History entries older than `seq`, newest first, up to `limit`.
    pub fn history_back(
        &self,
        room_id: &RoomId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        self.history_walk(room_id, seq.saturating_add(1), true, limit)
    }

    /// History entries newer than `seq` (towards the timeline), oldest first.
    pub fn history_forward(
        &self,
        room_id: &RoomId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        if seq <= 1 {
            return Ok(Vec::new());
        }
        self.history_walk(room_id, seq - 1, false, limit)
    }

    fn history_walk(
        &self,
        room_id: &RoomId,
        start: u64,
        ascending: bool,
        limit: usize,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        let prefix = Key::new().str(room_id.as_str());
        let mut out = Vec::new();
        self.db.for_each_from(
            Keyspace::History,
            prefix.bytes(),
            prefix.clone().u64(start).bytes(),
            ascending,
            |key, value| {
                let mut reader = KeyReader::new(key);
                let Ok(seq) = reader.str().and_then(|_| reader.u64()) else {
                    return false;
                };
                if let Ok(id) = std::str::from_utf8(value)
                    .map_err(|_| ())
                    .and_then(|id| OwnedEventId::try_from(id).map_err(|_| ()))
                {
                    out.push((seq, id));
                }
                out.len() < limit
            },
        )?;
        Ok(out)
    }

    /// Places fetched history: `accepted` (newest first) at the next seqs, `rejected` as
    /// rejected; `extremities` are where fetching goes on.
    pub async fn add_history(
        &self,
        room_id: &RoomId,
        accepted: Vec<SignedPdu>,
        rejected: Vec<SignedPdu>,
        extremities: Vec<OwnedEventId>,
    ) -> Result<usize> {
        let _guard = self.lock(room_id).lock_owned().await;
        let Some(room) = self.room(room_id)? else {
            return Ok(0);
        };
        let rules = Self::rules(&room.version)?;
        let mut frontier = self.history_frontier(room_id)?;
        let mut batch = self.db.batch();
        let mut placed = 0;
        for event in accepted {
            if self.placed(&event.event_id)? {
                continue;
            }
            let place = Place::History {
                seq: frontier.next_seq,
                state: frontier.state,
            };
            frontier.next_seq += 1;
            placed += 1;
            let write = PduWrite {
                event,
                txn: None,
                place,
            };
            self.stage_pdu(&mut batch, room_id, &rules, write)?;
        }
        for event in rejected {
            if self.knows(&event.event_id)? {
                continue;
            }
            let write = PduWrite {
                event,
                txn: None,
                place: Place::Rejected,
            };
            self.stage_pdu(&mut batch, room_id, &rules, write)?;
        }
        frontier.extremities = extremities;
        batch.put_json(
            Keyspace::HistoryFrontiers,
            room_id.as_bytes().to_vec(),
            &frontier,
        );
        self.db.write(batch)?;
        Ok(placed)
    }
}
