//! Room members and the rooms a user is in.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::api::client::membership::{get_member_events, joined_members, joined_rooms};
use ruma::events::room::member::MembershipState;

use super::events::{parse_token, readable_state};
use crate::{
    Result,
    api::{Ruma, RumaRouter},
    service::{Services, rooms::membership::membership_in},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(members)
        .ruma_route(joined_members)
        .ruma_route(joined_rooms)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
async fn members(
    services: Arc<Services>,
    request: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let body = &request.body;
    let mut state = readable_state(&services.rooms, &body.room_id, request.user_id()?)?;
    if let Some(at) = &body.at {
        // The members at a point of the timeline, but never later than what the user
        // may read.
        let position = parse_token(at)?;
        let readable_until = match services
            .rooms
            .membership(&body.room_id, request.user_id()?)?
        {
            Some(m) if m.membership != MembershipState::Join => m.position,
            _ => position,
        };
        let group = services
            .rooms
            .state_group_at(&body.room_id, position.min(readable_until))?;
        state = services.rooms.state.get(group)?;
    }
    let mut chunk = Vec::new();
    for (kind, _, value) in services.rooms.state_events(&state)? {
        if kind != "m.room.member" {
            continue;
        }
        let membership = value
            .content()
            .and_then(|content| serde_json::from_str(content.get()).ok())
            .and_then(|content| membership_in(&content))
            .unwrap_or(MembershipState::Leave);
        if body
            .membership
            .as_ref()
            .is_some_and(|m| m.as_str() != membership.as_str())
        {
            continue;
        }
        if body
            .not_membership
            .as_ref()
            .is_some_and(|m| m.as_str() == membership.as_str())
        {
            continue;
        }
        chunk.push(value.into_raw());
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
async fn joined_members(
    services: Arc<Services>,
    request: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response> {
    let room_id = &request.body.room_id;
    services.rooms.require_joined(room_id, request.user_id()?)?;
    let state = services.rooms.current_state(room_id)?;
    let mut joined = BTreeMap::new();
    for ((kind, state_key), _) in state.iter() {
        if kind != "m.room.member" {
            continue;
        }
        let Some(content) = services.rooms.content_in(&state, kind, state_key)? else {
            continue;
        };
        if membership_in(&content) != Some(MembershipState::Join) {
            continue;
        }
        let Ok(user_id) = ruma::OwnedUserId::try_from(state_key.as_str()) else {
            continue;
        };
        let mut member = joined_members::v3::RoomMember::new();
        (member.display_name, member.avatar_url) =
            crate::service::rooms::membership::member_profile_in(&content);
        joined.insert(user_id, member);
    }
    Ok(joined_members::v3::Response::new(joined))
}

/// # `GET /_matrix/client/v3/joined_rooms`
async fn joined_rooms(
    services: Arc<Services>,
    request: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response> {
    let rooms = services
        .rooms
        .user_rooms(request.user_id()?)?
        .into_iter()
        .filter(|(_, membership)| membership.membership == MembershipState::Join)
        .map(|(room_id, _)| room_id)
        .collect();
    Ok(joined_rooms::v3::Response::new(rooms))
}
