//! Room previews and the deprecated event stream, as Element Web and matrix-js-sdk use
//! them to show a room before joining it: `GET /rooms/{roomId}/initialSync`, `GET
//! /events` (with `room_id`, peeking into a world-readable room or one the user is in;
//! without it, the user's rooms), and `GET /initialSync`. Who may look is who may read
//! the room: its members and, for a world-readable room, anyone.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::{
    OwnedRoomId, RoomId, UserId, api::client::peeking::get_current_state,
    events::room::member::MembershipState,
};
use serde_json::{Value, json};

use super::events::parse_token;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{Services, rooms::pdu::ClientFormat},
};

/// The events a room snapshot holds at most.
const SNAPSHOT_EVENTS: usize = 20;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(room_initial_sync)
        .ruma_route_json(events)
        .ruma_route_json(initial_sync)
}

/// `GET /_matrix/client/v3/events`, with `room_id` optional (ruma requires it).
mod event_stream {
    use ruma::{
        OwnedRoomId,
        api::{auth_scheme::AccessToken, request, response},
        metadata,
    };

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/events",
            1.1 => "/_matrix/client/v3/events",
        }
    }

    /// Where to start, the room to peek into, how long to wait (ms).
    #[request]
    pub struct Request {
        #[ruma_api(query)]
        pub from: Option<String>,
        #[ruma_api(query)]
        pub room_id: Option<OwnedRoomId>,
        #[ruma_api(query)]
        pub timeout: Option<u64>,
    }

    /// Unused: the handler answers with its own JSON.
    #[response]
    pub struct Response {}
}

/// `GET /_matrix/client/v3/initialSync`, which ruma has no type for.
mod global_initial_sync {
    use ruma::{
        api::{auth_scheme::AccessToken, request, response},
        metadata,
    };

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/initialSync",
            1.1 => "/_matrix/client/v3/initialSync",
        }
    }

    /// How many events per room; whether rooms left are included.
    #[request]
    pub struct Request {
        #[ruma_api(query)]
        pub limit: Option<u32>,
        #[ruma_api(query)]
        pub archived: Option<bool>,
    }

    /// Unused: the handler answers with its own JSON.
    #[response]
    pub struct Response {}
}

/// Fails unless `user` may read the room: a member, or anyone in a world-readable room.
fn require_readable(services: &Services, room_id: &RoomId, user: &UserId) -> Result<()> {
    let member = services.rooms.membership(room_id, user)?.is_some();
    if member || services.rooms.can_see_room(room_id, user)? {
        Ok(())
    } else {
        Err(Error::forbidden("You may not look into this room"))
    }
}

/// A room as `/initialSync` shows it: the user's membership, the state and the latest
/// events the user may see (up to their leave, for a room they left), its visibility.
fn room_snapshot(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    limit: usize,
) -> Result<Value> {
    let rooms = &services.rooms;
    let membership = rooms.membership(room_id, user)?;
    let frontier = services.stream.frontier();
    let until = match &membership {
        Some(m) if m.membership.as_str() == "leave" || m.membership.as_str() == "ban" => m.position,
        _ => frontier,
    };
    let mut chunk = Vec::new();
    let mut start = until;
    for (position, event_id) in
        rooms.timeline(room_id, until.saturating_add(1), 0, false, limit * 2)?
    {
        if chunk.len() >= limit {
            break;
        }
        start = position.saturating_sub(1);
        if let Some((_, event)) = rooms.visible_event(user, None, &event_id, ClientFormat::Full)? {
            chunk.push(event.into_value());
        }
    }
    chunk.reverse();
    let state = rooms.state.get(rooms.state_group_at(room_id, until)?)?;
    let state: Vec<Value> = rooms
        .state_events(&state)?
        .into_iter()
        .map(|(_, _, event)| event.into_value())
        .collect();
    let visibility = if rooms.is_public(room_id)? {
        "public"
    } else {
        "private"
    };
    let mut snapshot = json!({
        "room_id": room_id,
        "messages": { "chunk": chunk, "start": start.to_string(), "end": until.to_string() },
        "state": state,
        "visibility": visibility,
        "account_data": [],
    });
    if let Some(membership) = membership {
        snapshot["membership"] = membership.membership.as_str().into();
    }
    Ok(snapshot)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/initialSync`
async fn room_initial_sync(
    services: Arc<Services>,
    request: Ruma<get_current_state::v3::Request>,
) -> Result<Value> {
    let user = request.user_id()?;
    let room_id = &request.body.room_id;
    if !services.rooms.exists(room_id)? {
        return Err(Error::forbidden("You may not look into this room"));
    }
    require_readable(&services, room_id, user)?;
    room_snapshot(&services, user, room_id, SNAPSHOT_EVENTS)
}

/// # `GET /_matrix/client/v3/initialSync` (deprecated)
async fn initial_sync(
    services: Arc<Services>,
    request: Ruma<global_initial_sync::Request>,
) -> Result<Value> {
    let user = request.user_id()?;
    let limit = request
        .body
        .limit
        .map_or(SNAPSHOT_EVENTS, |limit| limit as usize)
        .clamp(1, 100);
    let archived = request.body.archived.unwrap_or(false);
    let mut rooms = Vec::new();
    for (room_id, membership) in services.rooms.user_rooms(user)? {
        let left = matches!(
            membership.membership,
            MembershipState::Leave | MembershipState::Ban
        );
        if left && !archived {
            continue;
        }
        rooms.push(room_snapshot(&services, user, &room_id, limit)?);
    }
    Ok(json!({
        "end": services.stream.frontier().to_string(),
        "rooms": rooms,
        "presence": [],
        "account_data": [],
    }))
}

/// # `GET /_matrix/client/v3/events` (deprecated)
///
/// The events after `from` in `room_id` (peeking) or in the user's joined rooms,
/// waiting up to `timeout` for one to come.
async fn events(services: Arc<Services>, request: Ruma<event_stream::Request>) -> Result<Value> {
    let user = request.user_id()?.to_owned();
    let body = &request.body;
    let rooms: Vec<OwnedRoomId> = match &body.room_id {
        Some(room_id) => {
            require_readable(&services, room_id, &user)?;
            vec![room_id.clone()]
        }
        None => services.rooms.joined_rooms(&user)?,
    };
    let from = match &body.from {
        Some(token) => parse_token(token)?,
        None => services.stream.frontier(),
    };
    let max = services.config.sync_timeout_max_ms;
    let wait = Duration::from_millis(body.timeout.unwrap_or(30_000).min(max));
    let deadline = tokio::time::Instant::now() + wait;
    let mut frontier_moved = services.stream.watch_frontier();
    loop {
        let until = services.stream.frontier();
        let chunk = events_between(&services, &user, &rooms, from, until)?;
        if !chunk.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(json!({
                "chunk": chunk,
                "start": from.to_string(),
                "end": until.to_string(),
            }));
        }
        let _ = tokio::time::timeout_at(deadline, frontier_moved.changed()).await;
    }
}

/// The events of `rooms` in `(from, until]` that `user` may see, in stream order.
fn events_between(
    services: &Services,
    user: &UserId,
    rooms: &[OwnedRoomId],
    from: u64,
    until: u64,
) -> Result<Vec<Value>> {
    let mut found = Vec::new();
    for room_id in rooms {
        for (position, event_id) in services.rooms.timeline(room_id, from, until, true, 100)? {
            if let Some((_, value)) =
                services
                    .rooms
                    .visible_event(user, None, &event_id, ClientFormat::Full)?
            {
                found.push((position, value.into_value()));
            }
        }
    }
    found.sort_by_key(|(position, _)| *position);
    Ok(found.into_iter().map(|(_, value)| value).collect())
}
