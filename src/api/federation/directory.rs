//! This server's room directory and space hierarchies, for other servers' users.

use std::sync::Arc;

use axum::Router;
use ruma::{
    UInt,
    api::federation::{
        directory::{get_public_rooms, get_public_rooms_filtered},
        space::get_hierarchy,
    },
};

use crate::{
    Error, Result,
    api::client::directory::{Page, list},
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(public_rooms)
        .ruma_route(public_rooms_filtered)
        .ruma_route(hierarchy)
}

/// # `GET /_matrix/federation/v1/hierarchy/{roomId}`
///
/// A local room's summary with its children's: those the asking server may see, and the
/// ids of the others. A room this server is not in, or one the asking server may not
/// see (or that its ACL keeps out), is not found.
async fn hierarchy(
    services: Arc<Services>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let (origin, body) = (request.origin()?, &request.body);
    if services.rooms.is_resident(&body.room_id)?
        && !services.rooms.server_allowed(&body.room_id, origin)?
    {
        return Err(Error::forbidden("The room's server ACL denies your server"));
    }
    services
        .spaces
        .answer(&body.room_id, origin, body.suggested_only)?
        .ok_or_else(|| Error::not_found("Room not found"))
}

/// # `GET /_matrix/federation/v1/publicRooms`
async fn public_rooms(
    services: Arc<Services>,
    request: Ruma<get_public_rooms::v1::Request>,
) -> Result<get_public_rooms::v1::Response> {
    let page = list(
        &services.rooms,
        &ruma::directory::RoomNetwork::Matrix,
        None,
        request.body.limit,
        request.body.since.as_deref(),
    )?;
    let mut response = get_public_rooms::v1::Response::new();
    fill(
        page,
        &mut response.chunk,
        &mut response.next_batch,
        &mut response.prev_batch,
        &mut response.total_room_count_estimate,
    );
    Ok(response)
}

/// # `POST /_matrix/federation/v1/publicRooms`
async fn public_rooms_filtered(
    services: Arc<Services>,
    request: Ruma<get_public_rooms_filtered::v1::Request>,
) -> Result<get_public_rooms_filtered::v1::Response> {
    let body = &request.body;
    let page = list(
        &services.rooms,
        &body.room_network,
        body.filter.generic_search_term.as_deref(),
        body.limit,
        body.since.as_deref(),
    )?;
    let mut response = get_public_rooms_filtered::v1::Response::new();
    fill(
        page,
        &mut response.chunk,
        &mut response.next_batch,
        &mut response.prev_batch,
        &mut response.total_room_count_estimate,
    );
    Ok(response)
}

fn fill(
    page: Page,
    chunk: &mut Vec<ruma::directory::PublicRoomsChunk>,
    next_batch: &mut Option<String>,
    prev_batch: &mut Option<String>,
    total: &mut Option<UInt>,
) {
    *chunk = page.chunk;
    *next_batch = page.next_batch;
    *prev_batch = page.prev_batch;
    *total = UInt::try_from(page.total as u64).ok();
}
