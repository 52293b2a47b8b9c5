//! Room aliases and the public room directory.

use std::sync::Arc;

use axum::Router;
use ruma::{
    RoomAliasId, RoomId, UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        appservice::set_room_visibility as set_network_room_visibility,
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{Visibility, aliases},
    },
    api::error::ErrorKind,
    directory::{PublicRoomsChunk, RoomNetwork},
};
use serde_json::{Map, Value};

use crate::service::rooms::Rooms;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{Services, users::Sender},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(create_alias)
        .ruma_route(get_alias)
        .ruma_route(delete_alias)
        .ruma_route(room_aliases)
        .ruma_route(visibility)
        .ruma_route_prepared(set_visibility, default_visibility)
        .ruma_route(public_rooms)
        .ruma_route(public_rooms_filtered)
        .ruma_route(set_network_visibility)
}

/// # `PUT /_matrix/client/v3/directory/room/{roomAlias}`
async fn create_alias(
    services: Arc<Services>,
    request: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response> {
    let user = request.user_id()?;
    not_claimed(&services, &request.body.room_alias, request.sender()?)?;
    if !services.rooms.exists(&request.body.room_id)? {
        return Err(Error::not_found("Unknown room"));
    }
    services.rooms.require_joined(&request.body.room_id, user)?;
    services
        .rooms
        .set_alias(&request.body.room_alias, &request.body.room_id, user)?;
    Ok(create_alias::v3::Response::new())
}

/// Refuses an alias an application service other than the sender's claims exclusively.
pub(super) fn not_claimed(services: &Services, alias: &RoomAliasId, sender: &Sender) -> Result<()> {
    if services
        .appservices
        .claims_alias(alias, sender.appservice.as_deref())
    {
        return Err(Error::new(
            ErrorKind::Exclusive,
            "The alias is reserved by an application service",
        ));
    }
    Ok(())
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
async fn get_alias(
    services: Arc<Services>,
    request: Ruma<get_alias::v3::Request>,
) -> Result<get_alias::v3::Response> {
    let alias = &request.body.room_alias;
    if alias.server_name() != services.config.server_name {
        if !services.config.federation.enabled {
            return Err(Error::not_found("Room alias not found"));
        }
        let (room_id, servers) = services
            .federation
            .memberships
            .resolve_remote_alias(alias)
            .await?;
        return Ok(get_alias::v3::Response::new(room_id, servers));
    }
    let record = super::appservice::local_alias(&services, alias)
        .await?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    Ok(get_alias::v3::Response::new(
        record.room_id,
        vec![services.config.server_name.clone()],
    ))
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
async fn delete_alias(
    services: Arc<Services>,
    request: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response> {
    let user = request.user_id()?;
    let record = services
        .rooms
        .resolve_alias(&request.body.room_alias)?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    // As on Synapse: the alias's creator, or a member who may set the room's canonical
    // alias.
    let may_delete = record.creator == user
        || (services.rooms.is_joined(&record.room_id, user)?
            && services
                .rooms
                .may_send_state(&record.room_id, user, "m.room.canonical_alias")?);
    if !may_delete {
        return Err(Error::forbidden(
            "Only the alias's creator or a room moderator may delete it",
        ));
    }
    services.rooms.remove_alias(&request.body.room_alias)?;
    Ok(delete_alias::v3::Response::new())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
async fn room_aliases(
    services: Arc<Services>,
    request: Ruma<aliases::v3::Request>,
) -> Result<aliases::v3::Response> {
    if !services
        .rooms
        .can_see_room(&request.body.room_id, request.user_id()?)?
    {
        return Err(Error::forbidden("You are not in this room"));
    }
    let aliases = services
        .rooms
        .aliases_of(&request.body.room_id)?
        .into_iter()
        .filter_map(|alias| alias.try_into().ok())
        .collect();
    Ok(aliases::v3::Response::new(aliases))
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
async fn visibility(
    services: Arc<Services>,
    request: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    if !services.rooms.exists(&request.body.room_id)? {
        return Err(Error::not_found("Unknown room"));
    }
    let visibility = if services.rooms.is_public(&request.body.room_id)? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(get_room_visibility::v3::Response::new(visibility))
}

/// The spec's `visibility` defaults to `public`; ruma requires it.
fn default_visibility(body: &mut Map<String, Value>, _: &[&str]) -> Result<()> {
    body.entry("visibility").or_insert_with(|| "public".into());
    Ok(())
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
async fn set_visibility(
    services: Arc<Services>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let user = request.user_id()?;
    if !services.rooms.exists(&request.body.room_id)? {
        return Err(Error::not_found("Unknown room"));
    }
    services.rooms.require_joined(&request.body.room_id, user)?;
    services.rooms.set_public(
        &request.body.room_id,
        matches!(request.body.visibility, Visibility::Public),
    )?;
    Ok(set_room_visibility::v3::Response::new())
}

fn chunk(rooms: &Rooms, room_id: &RoomId) -> Result<PublicRoomsChunk> {
    Ok(PublicRoomsChunk::from(rooms.summary(room_id)?))
}

/// One page of the directory.
pub(crate) struct Page {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: usize,
}

/// A page of this server's room directory, matching `term` if given (also what other
/// servers are answered over federation).
pub(crate) fn list(
    rooms: &Rooms,
    network: &RoomNetwork,
    term: Option<&str>,
    limit: Option<UInt>,
    since: Option<&str>,
) -> Result<Page> {
    let term = term.map(str::to_lowercase);
    let mut found = Vec::new();
    for room_id in listed(rooms, network)? {
        let chunk = chunk(rooms, &room_id)?;
        let hit = term.as_deref().is_none_or(|term| {
            [&chunk.name, &chunk.topic]
                .into_iter()
                .flatten()
                .any(|text| text.to_lowercase().contains(term))
                || chunk
                    .canonical_alias
                    .as_ref()
                    .is_some_and(|alias| alias.as_str().to_lowercase().contains(term))
        });
        if hit {
            found.push(chunk);
        }
    }
    found.sort_by(|a, b| {
        b.num_joined_members
            .cmp(&a.num_joined_members)
            .then(a.room_id.cmp(&b.room_id))
    });
    let total = found.len();
    // An empty token is the first page, as clients that always send `since` expect.
    let offset: usize = match since.filter(|token| !token.is_empty()) {
        Some(token) => token
            .parse()
            .map_err(|_| Error::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let limit = limit.map_or(total, |limit| {
        usize::try_from(u64::from(limit)).unwrap_or(total)
    });
    let page: Vec<_> = found.into_iter().skip(offset).take(limit).collect();
    let next = (offset + page.len() < total).then(|| (offset + page.len()).to_string());
    let prev = (offset > 0).then(|| offset.saturating_sub(limit).to_string());
    Ok(Page {
        chunk: page,
        next_batch: next,
        prev_batch: prev,
        total,
    })
}

/// The rooms of a directory listing: this server's own (`Matrix`), every application
/// service network's too (`All`), or one network's (`ThirdParty`, the instance id being
/// `appservice_id|network_id`; an id of no such form lists nothing).
fn listed(rooms: &Rooms, network: &RoomNetwork) -> Result<Vec<ruma::OwnedRoomId>> {
    match network {
        RoomNetwork::Matrix => rooms.public_rooms(),
        RoomNetwork::All => {
            let mut all = rooms.public_rooms()?;
            for room_id in rooms.network_rooms(None)? {
                if !all.contains(&room_id) {
                    all.push(room_id);
                }
            }
            Ok(all)
        }
        RoomNetwork::ThirdParty(instance) => match instance.split_once('|') {
            Some(network) => rooms.network_rooms(Some(network)),
            None => Ok(Vec::new()),
        },
        _ => Ok(Vec::new()),
    }
}

/// # `PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`
///
/// An application service lists a room under one of its networks, or stops.
async fn set_network_visibility(
    services: Arc<Services>,
    request: Ruma<set_network_room_visibility::v3::Request>,
) -> Result<set_network_room_visibility::v3::Response> {
    let body = &request.body;
    let appservice = (request.sender()?.appservice.as_deref())
        .ok_or_else(|| Error::forbidden("Only an application service lists rooms by network"))?;
    if !services.rooms.exists(&body.room_id)? {
        return Err(Error::not_found("Unknown room"));
    }
    let listed = body.visibility == Visibility::Public;
    services.rooms.set_network_listed(
        (appservice, body.network_id.as_str()),
        &body.room_id,
        listed,
    )?;
    Ok(set_network_room_visibility::v3::Response::new())
}

/// # `GET /_matrix/client/v3/publicRooms`
///
/// The filtered listing without a filter.
async fn public_rooms(
    services: Arc<Services>,
    request: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let mut filtered = get_public_rooms_filtered::v3::Request::new();
    filtered.server = request.body.server.clone();
    filtered.limit = request.body.limit;
    filtered.since = request.body.since.clone();
    let answer = listing(&services, &filtered).await?;
    let mut response = get_public_rooms::v3::Response::new(answer.chunk);
    response.next_batch = answer.next_batch;
    response.prev_batch = answer.prev_batch;
    response.total_room_count_estimate = answer.total_room_count_estimate;
    Ok(response)
}

/// # `POST /_matrix/client/v3/publicRooms`
async fn public_rooms_filtered(
    services: Arc<Services>,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    listing(&services, &request.body).await
}

/// A page of the room directory of this server, or of the server the request names
/// (asked over federation).
async fn listing(
    services: &Services,
    request: &get_public_rooms_filtered::v3::Request,
) -> Result<get_public_rooms_filtered::v3::Response> {
    let mut response = get_public_rooms_filtered::v3::Response::new();
    if let Some(server) = &request.server
        && *server != services.config.server_name
    {
        let mut remote =
            ruma::api::federation::directory::get_public_rooms_filtered::v1::Request::new();
        remote.limit = request.limit;
        remote.since = request.since.clone();
        remote.filter = request.filter.clone();
        remote.room_network = request.room_network.clone();
        let answer = services
            .federation_client
            .send(server, remote)
            .await
            .map_err(|error| {
                Error::not_found(format!("The server's directory is unavailable: {error}"))
            })?;
        response.chunk = answer.chunk;
        response.next_batch = answer.next_batch;
        response.prev_batch = answer.prev_batch;
        response.total_room_count_estimate = answer.total_room_count_estimate;
        return Ok(response);
    }
    let page = list(
        &services.rooms,
        &request.room_network,
        request.filter.generic_search_term.as_deref(),
        request.limit,
        request.since.as_deref(),
    )?;
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = UInt::try_from(page.total as u64).ok();
    Ok(response)
}
