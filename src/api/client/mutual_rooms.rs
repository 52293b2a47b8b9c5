//! The rooms one shares with another user (MSC2666, stable in v1.19), which clients show
//! on a user's profile.

use std::sync::Arc;

use axum::Router;
use ruma::{OwnedRoomId, UInt, UserId, api::client::membership::get_mutual_rooms};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(mutual_rooms)
        .ruma_route(mutual_rooms_unstable)
}

/// # `GET /_matrix/client/v1/mutual_rooms`
async fn mutual_rooms(
    services: Arc<Services>,
    request: Ruma<get_mutual_rooms::v1::Request>,
) -> Result<get_mutual_rooms::v1::Response> {
    let body = &request.body;
    let joined = shared(
        &services,
        request.user_id()?,
        &body.user_id,
        body.from.as_deref(),
    )?;
    let count = UInt::try_from(joined.len() as u64).unwrap_or_default();
    Ok(get_mutual_rooms::v1::Response::new(count, joined))
}

/// # `GET /_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms`
async fn mutual_rooms_unstable(
    services: Arc<Services>,
    request: Ruma<get_mutual_rooms::unstable::Request>,
) -> Result<get_mutual_rooms::unstable::Response> {
    let body = &request.body;
    let joined = shared(
        &services,
        request.user_id()?,
        &body.user_id,
        body.from.as_deref(),
    )?;
    Ok(get_mutual_rooms::unstable::Response::new(joined))
}

/// The rooms both users are joined to, in one page (no token is handed out, so any
/// `from` is unknown).
fn shared(
    services: &Services,
    asker: &UserId,
    other: &UserId,
    from: Option<&str>,
) -> Result<Vec<OwnedRoomId>> {
    if from.is_some() {
        return Err(Error::invalid_param("Unknown pagination token"));
    }
    if asker == other {
        return Err(Error::invalid_param("You share every room with yourself"));
    }
    let mut joined = Vec::new();
    for room_id in services.rooms.joined_rooms(asker)? {
        if services
            .rooms
            .joined_any(std::slice::from_ref(&room_id), other)?
        {
            joined.push(room_id);
        }
    }
    Ok(joined)
}
