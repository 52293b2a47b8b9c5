//! Fetching a room's history from before this server joined (`/backfill`), for a client
//! that pages back past the oldest event of the timeline. Each event is checked like
//! any PDU (signatures, content hash, the auth rules against its auth events, fetched
//! when missing); what passes is placed below the timeline, what fails is kept as
//! rejected (`rooms/history.rs`).

use std::collections::HashSet;

use ruma::{OwnedEventId, RoomId, UInt, api::federation::backfill::get_backfill};

use super::{pdu::verify_pdu, receive::Receiver};
use crate::{
    Error, Result,
    service::rooms::{Rooms, pdu::SignedPdu},
};

/// The most events asked for at once.
const MAX_BATCH: u32 = 100;

impl Receiver {
    /// Fetches up to `limit` events of the room's history from its other servers and
    /// places them. Returns how many were placed: 0 when there is no more to be had.
    pub async fn backfill(&self, room_id: &RoomId, limit: usize) -> Result<usize> {
        let frontier = self.rooms.history_frontier(room_id)?;
        if frontier.extremities.is_empty() {
            return Ok(0);
        }
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = Rooms::rules(&room.version)?;
        let limit = UInt::from(
            u32::try_from(limit)
                .unwrap_or(MAX_BATCH)
                .clamp(1, MAX_BATCH),
        );
        let mut answered = false;
        for server in self.rooms.remote_servers(room_id)? {
            let request = get_backfill::v1::Request::new(
                room_id.to_owned(),
                frontier.extremities.clone(),
                limit,
            );
            let response = match self.client.send(&server, request).await {
                Ok(response) => response,
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, "backfill refused");
                    continue;
                }
            };
            answered = true;
            let mut events = Vec::new();
            for raw in &response.pdus {
                match verify_pdu(&self.keys, &room.version, raw).await {
                    Ok(event) if event.pdu.room_id.as_deref().is_none_or(|id| id == room_id) => {
                        events.push(event);
                    }
                    Ok(_) => tracing::info!(%server, "backfilled event of another room"),
                    Err(error) => tracing::info!(%server, %error, "backfilled event refused"),
                }
            }
            // Oldest first for the checks, as each one's auth events come before it.
            events.sort_by_key(|event| event.pdu.depth);
            let mut accepted = Vec::new();
            let mut rejected = Vec::new();
            for event in events {
                if self.rooms.placed(&event.event_id)? {
                    continue;
                }
                let checked = match self
                    .fetch_auth_events(&server, room_id, &room.version, &event)
                    .await
                {
                    Ok(()) => self.rooms.authorise_by_auth_events(&rules, &event),
                    Err(error) => Err(error),
                };
                match checked {
                    Ok(()) => accepted.push(event),
                    Err(error) => {
                        tracing::info!(event_id = %event.event_id, %error, "backfilled event rejected");
                        rejected.push(event);
                    }
                }
            }
            if accepted.is_empty() {
                continue;
            }
            let extremities = next_extremities(&self.rooms, &accepted, &rejected)?;
            // Newest first: the seq grows into the past.
            accepted.reverse();
            return self
                .rooms
                .add_history(room_id, accepted, rejected, extremities)
                .await;
        }
        // A server answered but had nothing more: the history ends here. (When none
        // could be reached, a later page tries again.)
        if answered {
            self.rooms
                .add_history(room_id, Vec::new(), Vec::new(), Vec::new())
                .await?;
        }
        Ok(0)
    }
}

/// The parents of the newly placed events that are neither placed, nor among them, nor
/// rejected: where the next fetch starts.
fn next_extremities(
    rooms: &Rooms,
    accepted: &[SignedPdu],
    rejected: &[SignedPdu],
) -> Result<Vec<OwnedEventId>> {
    let fetched: HashSet<&OwnedEventId> = accepted
        .iter()
        .chain(rejected)
        .map(|event| &event.event_id)
        .collect();
    let mut out = Vec::new();
    for event in accepted {
        for parent in &event.pdu.prev_events {
            if !fetched.contains(parent) && !rooms.placed(parent)? && !rooms.is_rejected(parent)? {
                out.push(parent.clone());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
