//! Reading a room's events and state over federation: one event, the state at an event
//! (full or ids), an event's auth chain, backfill, the missing events of a gap, and the
//! event closest to a time.

use std::{collections::HashSet, sync::Arc};

use axum::Router;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, ServerName,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{
            get_event, get_event_by_timestamp, get_missing_events, get_room_state,
            get_room_state_ids,
        },
    },
};
use serde_json::value::RawValue;

use super::require_server_in_room;
use crate::service::rooms::Rooms;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

/// The most events one request returns.
const MAX_EVENTS: usize = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(event)
        .ruma_route(state)
        .ruma_route(state_ids)
        .ruma_route(event_auth)
        .ruma_route(backfill)
        .ruma_route(missing_events)
        .ruma_route(timestamp_to_event)
}

/// # `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`
///
/// The event of this server's timeline of the room closest to a time, for a server in
/// the room.
async fn timestamp_to_event(
    services: Arc<Services>,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let body = &request.body;
    require_server_in_room(&services.rooms, request.origin()?, &body.room_id)?;
    let forwards = body.dir == ruma::api::Direction::Forward;
    let (event_id, time) = services
        .rooms
        .event_near(&body.room_id, body.ts, forwards)?
        .ok_or_else(|| Error::not_found("No event was found in that direction"))?;
    Ok(get_event_by_timestamp::v1::Response::new(event_id, time))
}

/// The event if `server` may read it: its room must have a member of that server.
fn readable_event(rooms: &Rooms, server: &ServerName, event_id: &EventId) -> Result<Box<RawValue>> {
    let stored = rooms
        .pdu(event_id)?
        .ok_or_else(|| Error::not_found("Unknown event"))?;
    require_server_in_room(rooms, server, &stored.room_id)?;
    rooms.pdu_for_servers(stored)
}

/// # `GET /_matrix/federation/v1/event/{eventId}`
async fn event(
    services: Arc<Services>,
    request: Ruma<get_event::v1::Request>,
) -> Result<get_event::v1::Response> {
    let pdu = readable_event(&services.rooms, request.origin()?, &request.body.event_id)?;
    Ok(get_event::v1::Response::new(
        services.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu,
    ))
}

/// The state before an event of the room and the auth chain of that state.
fn state_before(
    rooms: &Rooms,
    server: &ServerName,
    room_id: &ruma::RoomId,
    event_id: &EventId,
) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
    require_server_in_room(rooms, server, room_id)?;
    let stored = rooms
        .pdu(event_id)?
        .ok_or_else(|| Error::not_found("Unknown event"))?;
    if stored.room_id != room_id {
        return Err(Error::not_found("The event is not in this room"));
    }
    let (state, chain) = rooms.state_and_auth_chain_before(event_id)?;
    Ok((state.into_values().collect(), chain))
}

fn raws(rooms: &Rooms, ids: &[OwnedEventId]) -> Result<Vec<Box<RawValue>>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(raw) = rooms.raw_pdu(id)? {
            out.push(raw);
        }
    }
    Ok(out)
}

/// # `GET /_matrix/federation/v1/state/{roomId}`
async fn state(
    services: Arc<Services>,
    request: Ruma<get_room_state::v1::Request>,
) -> Result<get_room_state::v1::Response> {
    let body = &request.body;
    let (state, chain) = state_before(
        &services.rooms,
        request.origin()?,
        &body.room_id,
        &body.event_id,
    )?;
    Ok(get_room_state::v1::Response::new(
        raws(&services.rooms, &chain)?,
        raws(&services.rooms, &state)?,
    ))
}

/// # `GET /_matrix/federation/v1/state_ids/{roomId}`
async fn state_ids(
    services: Arc<Services>,
    request: Ruma<get_room_state_ids::v1::Request>,
) -> Result<get_room_state_ids::v1::Response> {
    let body = &request.body;
    let (state, chain) = state_before(
        &services.rooms,
        request.origin()?,
        &body.room_id,
        &body.event_id,
    )?;
    Ok(get_room_state_ids::v1::Response::new(chain, state))
}

/// # `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn event_auth(
    services: Arc<Services>,
    request: Ruma<get_event_authorization::v1::Request>,
) -> Result<get_event_authorization::v1::Response> {
    let body = &request.body;
    require_server_in_room(&services.rooms, request.origin()?, &body.room_id)?;
    let stored = services
        .rooms
        .pdu(&body.event_id)?
        .ok_or_else(|| Error::not_found("Unknown event"))?;
    if stored.room_id != body.room_id {
        return Err(Error::not_found("The event is not in this room"));
    }
    let chain: Vec<OwnedEventId> = services
        .rooms
        .auth_chain([body.event_id.clone()])?
        .into_iter()
        .collect();
    Ok(get_event_authorization::v1::Response::new(raws(
        &services.rooms,
        &chain,
    )?))
}

/// # `GET /_matrix/federation/v1/backfill/{roomId}`
async fn backfill(
    services: Arc<Services>,
    request: Ruma<get_backfill::v1::Request>,
) -> Result<get_backfill::v1::Response> {
    let body = &request.body;
    require_server_in_room(&services.rooms, request.origin()?, &body.room_id)?;
    let limit = usize::try_from(u64::from(body.limit))
        .unwrap_or(MAX_EVENTS)
        .min(MAX_EVENTS);
    // Breadth-first through prev events from the given ones, newest first.
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut queue: std::collections::VecDeque<OwnedEventId> = body.v.iter().cloned().collect();
    let mut out = Vec::new();
    while let Some(id) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(stored) = services.rooms.pdu(&id)? else {
            continue;
        };
        if stored.room_id != body.room_id {
            continue;
        }
        let parsed = stored.parse(id.clone()).map_err(Error::internal)?;
        queue.extend(parsed.prev_events.iter().cloned());
        out.push(services.rooms.pdu_for_servers(stored)?);
    }
    Ok(get_backfill::v1::Response::new(
        services.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        out,
    ))
}

/// # `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn missing_events(
    services: Arc<Services>,
    request: Ruma<get_missing_events::v1::Request>,
) -> Result<get_missing_events::v1::Response> {
    let body = &request.body;
    require_server_in_room(&services.rooms, request.origin()?, &body.room_id)?;
    let limit = usize::try_from(u64::from(body.limit))
        .unwrap_or(10)
        .min(MAX_EVENTS);
    let min_depth = u64::from(body.min_depth);
    let earliest: HashSet<&OwnedEventId> = body.earliest_events.iter().collect();
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut queue: std::collections::VecDeque<OwnedEventId> = std::collections::VecDeque::new();
    for id in &body.latest_events {
        if let Some(stored) = services.rooms.pdu(id)? {
            let parsed = stored.parse(id.clone()).map_err(Error::internal)?;
            queue.extend(parsed.prev_events.iter().cloned());
        }
    }
    let mut found = Vec::new();
    while let Some(id) = queue.pop_front() {
        if found.len() >= limit {
            break;
        }
        if earliest.contains(&id) || !seen.insert(id.clone()) {
            continue;
        }
        let Some(stored) = services.rooms.pdu(&id)? else {
            continue;
        };
        if stored.room_id != body.room_id || stored.outlier {
            continue;
        }
        let parsed = stored.parse(id.clone()).map_err(Error::internal)?;
        if parsed.depth < min_depth {
            continue;
        }
        queue.extend(parsed.prev_events.iter().cloned());
        found.push((parsed.depth, services.rooms.pdu_for_servers(stored)?));
    }
    // Oldest first, as the spec asks.
    found.sort_by_key(|(depth, _)| *depth);
    Ok(get_missing_events::v1::Response::new(
        found.into_iter().map(|(_, pdu)| pdu).collect(),
    ))
}
