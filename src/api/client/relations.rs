//! `/relations` (the events relating to an event: edits, reactions, references, thread
//! replies) and `/threads` (a room's threads, most recently active first), read from the
//! relations index (`service/rooms/relations.rs`).

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    EventId, OwnedEventId, RoomId, UInt,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
    serde::Raw,
};

use super::events::parse_token;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        rooms::{
            pdu::ClientFormat,
            relations::{Relation, RelationFilter},
            visibility::Viewer,
        },
        users::Sender,
    },
};

/// How deep `recurse=true` follows relations of relations.
const RECURSION_DEPTH: u64 = 3;
/// Events per page when the client names no limit, and the most it may ask.
const DEFAULT_LIMIT: u64 = 5;
const MAX_LIMIT: u64 = 1000;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(relating_events)
        .ruma_route(relating_events_with_rel_type)
        .ruma_route(relating_events_with_rel_type_and_event_type)
        .ruma_route(threads)
}

/// What one `/relations` request asks, whichever of its three forms.
struct Query<'a> {
    room_id: &'a RoomId,
    event_id: &'a EventId,
    rel_type: Option<&'a str>,
    kind: Option<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

/// A page of relating events.
struct Page {
    chunk: Vec<Raw<ruma::events::AnyMessageLikeEvent>>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
async fn relating_events(
    services: Arc<Services>,
    request: Ruma<get_relating_events::v1::Request>,
) -> Result<get_relating_events::v1::Response> {
    let body = &request.body;
    let page = page(
        &services,
        request.sender()?,
        Query {
            room_id: &body.room_id,
            event_id: &body.event_id,
            rel_type: None,
            kind: None,
            from: body.from.as_deref(),
            to: body.to.as_deref(),
            dir: body.dir,
            limit: body.limit,
            recurse: body.recurse,
        },
    )?;
    let mut response = get_relating_events::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response)
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
async fn relating_events_with_rel_type(
    services: Arc<Services>,
    request: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let body = &request.body;
    let rel_type = body.rel_type.to_string();
    let page = page(
        &services,
        request.sender()?,
        Query {
            room_id: &body.room_id,
            event_id: &body.event_id,
            rel_type: Some(&rel_type),
            kind: None,
            from: body.from.as_deref(),
            to: body.to.as_deref(),
            dir: body.dir,
            limit: body.limit,
            recurse: body.recurse,
        },
    )?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response)
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
async fn relating_events_with_rel_type_and_event_type(
    services: Arc<Services>,
    request: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let body = &request.body;
    let rel_type = body.rel_type.to_string();
    let kind = body.event_type.to_string();
    let page = page(
        &services,
        request.sender()?,
        Query {
            room_id: &body.room_id,
            event_id: &body.event_id,
            rel_type: Some(&rel_type),
            kind: Some(&kind),
            from: body.from.as_deref(),
            to: body.to.as_deref(),
            dir: body.dir,
            limit: body.limit,
            recurse: body.recurse,
        },
    )?;
    let mut response =
        get_relating_events_with_rel_type_and_event_type::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response)
}

/// The relating events the user may see, in the direction asked. Tokens are stream
/// positions read as boundaries: backwards from `p` gives events at or below `p`,
/// forwards from `p` events above it (so `/sync` and `/messages` tokens work too).
fn page(services: &Services, sender: &Sender, query: Query<'_>) -> Result<Page> {
    let mut viewer = Viewer::new(
        &services.rooms,
        &sender.user_id,
        sender.device_id.as_deref(),
    );
    let parent = viewer.event(query.event_id, ClientFormat::Full)?;
    if parent
        .as_ref()
        .is_none_or(|(served, _)| served.stored.room_id != query.room_id)
    {
        return Err(Error::not_found("Event not found or you may not see it"));
    }
    let limit = query
        .limit
        .map_or(DEFAULT_LIMIT, u64::from)
        .clamp(1, MAX_LIMIT) as usize;
    let from = query.from.map(parse_token).transpose()?;
    let to = query.to.map(parse_token).transpose()?;
    let filter = RelationFilter {
        rel_type: query.rel_type,
        kind: query.kind,
    };
    // Every relating event (to the depth asked), by position.
    let mut found: BTreeMap<u64, Relation> = BTreeMap::new();
    let mut parents: Vec<OwnedEventId> = vec![query.event_id.to_owned()];
    let depth = if query.recurse { RECURSION_DEPTH } else { 1 };
    for _ in 0..depth {
        let mut next = Vec::new();
        for parent in &parents {
            let children = if query.recurse {
                // Filters apply to the events returned, not to the ones walked through.
                services
                    .rooms
                    .relations(query.room_id, parent, &RelationFilter::default())?
            } else {
                services.rooms.relations(query.room_id, parent, &filter)?
            };
            for (position, relation) in children {
                next.push(relation.event_id.clone());
                if filter.matches(&relation) {
                    found.insert(position, relation);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        parents = next;
    }
    let forwards = query.dir == Direction::Forward;
    let in_range = |position: u64| {
        let after_from = match (from, forwards) {
            (Some(from), true) => position > from,
            (Some(from), false) => position <= from,
            (None, _) => true,
        };
        let before_to = match (to, forwards) {
            (Some(to), true) => position <= to,
            (Some(to), false) => position > to,
            (None, _) => true,
        };
        after_from && before_to
    };
    let mut ordered: Vec<(u64, Relation)> = found
        .into_iter()
        .filter(|(position, _)| in_range(*position))
        .collect();
    if !forwards {
        ordered.reverse();
    }
    let mut chunk = Vec::new();
    let mut next_batch = None;
    'pages: for (page, batch) in ordered.chunks(limit).enumerate() {
        let ids: Vec<&EventId> = batch.iter().map(|(_, r)| &*r.event_id).collect();
        let shown = viewer.events(&ids, ClientFormat::Full)?;
        for (at, ((position, _), shown)) in batch.iter().zip(shown).enumerate() {
            if let Some((_, event)) = shown {
                chunk.push(event.into_raw());
            }
            if chunk.len() >= limit {
                // A next page only when events remain past this one.
                let more = page * limit + at + 1 < ordered.len();
                next_batch = more.then(|| boundary_past(*position, forwards));
                break 'pages;
            }
        }
    }
    Ok(Page {
        chunk,
        next_batch,
        prev_batch: query.from.map(str::to_owned),
        recursion_depth: query.recurse.then(|| UInt::from(RECURSION_DEPTH as u32)),
    })
}

/// The token just past an event, in the direction of travel.
fn boundary_past(position: u64, forwards: bool) -> String {
    if forwards {
        position.to_string()
    } else {
        position.saturating_sub(1).to_string()
    }
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`
async fn threads(
    services: Arc<Services>,
    request: Ruma<get_threads::v1::Request>,
) -> Result<get_threads::v1::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    if !services
        .rooms
        .can_see_room(&body.room_id, &sender.user_id)?
    {
        return Err(Error::forbidden("You may not see this room"));
    }
    let limit = body
        .limit
        .map_or(DEFAULT_LIMIT, u64::from)
        .clamp(1, MAX_LIMIT) as usize;
    let mut before = match body.from.as_deref() {
        Some(from) => parse_token(from)?.saturating_add(1),
        None => u64::MAX,
    };
    let participant =
        matches!(body.include, IncludeThreads::Participated).then_some(&*sender.user_id);
    let mut viewer = Viewer::new(
        &services.rooms,
        &sender.user_id,
        sender.device_id.as_deref(),
    );
    let mut chunk = Vec::new();
    let mut next_batch = None;
    loop {
        let roots = services
            .rooms
            .threads(&body.room_id, before, limit, participant)?;
        let exhausted = roots.len() < limit;
        let ids: Vec<&EventId> = roots.iter().map(|(_, root)| &**root).collect();
        let shown = viewer.events(&ids, ClientFormat::Full)?;
        for ((position, _), shown) in roots.iter().zip(shown) {
            before = *position;
            if let Some((_, event)) = shown {
                chunk.push(event.into_raw());
            }
            if chunk.len() >= limit {
                next_batch = Some(position.saturating_sub(1).to_string());
                break;
            }
        }
        if chunk.len() >= limit || exhausted {
            break;
        }
    }
    let mut response = get_threads::v1::Response::new(chunk);
    response.next_batch = next_batch;
    Ok(response)
}
