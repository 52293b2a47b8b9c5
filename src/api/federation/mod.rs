//! The server-server API handlers, served on the federation listener only. Every
//! request but the discovery ones is signed by the requesting server (`X-Matrix`,
//! checked by `api::ruma` before a handler runs; `Ruma::origin` names the server).

mod directory;
mod events;
mod media;
mod membership;
mod query;
mod transactions;
mod user_keys;
mod version;

use std::sync::Arc;

use axum::Router;
use ruma::events::room::{history_visibility::HistoryVisibility, member::MembershipState};
use ruma::{RoomId, ServerName};

use crate::service::rooms::Rooms;
use crate::{Error, Result, service::Services};

/// Registers every server-server endpoint.
pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = version::routes(router);
    let router = transactions::routes(router);
    let router = membership::routes(router);
    let router = events::routes(router);
    let router = directory::routes(router);
    let router = user_keys::routes(router);
    let router = media::routes(router);
    query::routes(router)
}

/// Fails with `403 M_FORBIDDEN` unless the room's server ACL lets `server` in and it has
/// a joined member in the room (or the room is world-readable), the condition for
/// reading its events over federation.
fn require_server_in_room(rooms: &Rooms, server: &ServerName, room_id: &RoomId) -> Result<()> {
    if !rooms.exists(room_id)? {
        return Err(Error::not_found("Unknown room"));
    }
    require_allowed(rooms, server, room_id)?;
    let joined = rooms
        .members_with(room_id, MembershipState::Join)?
        .iter()
        .any(|user| user.server_name() == server);
    if joined || world_readable(rooms, room_id)? {
        Ok(())
    } else {
        Err(Error::forbidden("Your server is not in this room"))
    }
}

/// Fails with `403 M_FORBIDDEN` when the room's server ACL denies `server`.
fn require_allowed(rooms: &Rooms, server: &ServerName, room_id: &RoomId) -> Result<()> {
    if rooms.server_allowed(room_id, server)? {
        Ok(())
    } else {
        Err(Error::forbidden(
            "Your server is denied by the room's server ACL",
        ))
    }
}

fn world_readable(rooms: &Rooms, room_id: &RoomId) -> Result<bool> {
    Ok(rooms.history_visibility(room_id)? == HistoryVisibility::WorldReadable)
}
