//! This server's room directory, for other servers' users.

use std::sync::Arc;

use axum::Router;
use ruma::{
    UInt,
    api::federation::directory::{get_public_rooms, get_public_rooms_filtered},
};

use crate::{
    Result,
    api::client::directory::{Page, list},
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(public_rooms)
        .ruma_route(public_rooms_filtered)
}

/// # `GET /_matrix/federation/v1/publicRooms`
async fn public_rooms(
    services: Arc<Services>,
    request: Ruma<get_public_rooms::v1::Request>,
) -> Result<get_public_rooms::v1::Response> {
    let page = list(
        &services.rooms,
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
