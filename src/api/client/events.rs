//! What the room read endpoints share: which state a user may read, and pagination
//! tokens.

use std::sync::Arc;

use ruma::events::room::member::MembershipState;
use ruma::{RoomId, UserId};

use crate::service::rooms::Rooms;
use crate::{Error, Result, service::rooms::state::StateMap};

/// The state a user may read: the current state if joined, else the state when they left.
pub fn readable_state(rooms: &Rooms, room_id: &RoomId, user: &UserId) -> Result<Arc<StateMap>> {
    match rooms.membership(room_id, user)? {
        Some(m) if m.membership == MembershipState::Join => rooms.current_state(room_id),
        Some(m) if matches!(m.membership, MembershipState::Leave | MembershipState::Ban) => {
            let pdu = rooms
                .pdu(&m.event_id)?
                .ok_or_else(|| Error::internal("missing membership event"))?;
            rooms.state.get(pdu.state_after)
        }
        _ if rooms.can_see_room(room_id, user)? => rooms.current_state(room_id),
        _ => Err(Error::forbidden("You are not in this room")),
    }
}

/// Parses a pagination token: a stream position, or a sync token (`s{position}_...`).
pub fn parse_token(token: &str) -> Result<u64> {
    let position = token.strip_prefix('s').unwrap_or(token);
    let position = position.split('_').next().unwrap_or(position);
    crate::service::sync::token::decimal(position)
        .ok_or_else(|| Error::invalid_param("Invalid pagination token"))
}
