//! `POST /search`: messages, room names and topics found in the rooms the user is or
//! was in, each shown only if the user may see it, with its context, the senders'
//! profiles, the rooms' state and groupings as asked.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use axum::Router;
use ruma::{
    EventId, OwnedRoomId, OwnedUserId, UInt,
    api::client::search::search_events::v3::{
        self as search_events, Criteria, EventContextResult, GroupingKey, OrderBy,
        ResultCategories, ResultGroup, ResultGroupMap, ResultRoomEvents, SearchKeys, SearchResult,
        UserProfile,
    },
    events::room::member::MembershipState,
};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services, filters,
        rooms::{
            pdu::{ClientEvent, ClientFormat},
            visibility::Viewer,
        },
        search::{Field, Order, SearchQuery},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(search)
}

/// Results a page holds unless the filter says.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Context events on each side of a result, at most.
const MAX_CONTEXT: usize = 50;
/// Hits looked at per round while filling a page with ones the user may see, and the
/// rounds before the page is answered as it is (with a `next_batch` to go on).
const ROUND: usize = 50;
const MAX_ROUNDS: usize = 10;

/// One result found: the event as the user sees it, where it is, its rank, and the
/// text it was found by.
struct Found {
    event: ClientEvent,
    event_id: ruma::OwnedEventId,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    position: u64,
    rank: f64,
    text: Option<String>,
}

/// # `POST /_matrix/client/v3/search`
async fn search(
    services: Arc<Services>,
    request: Ruma<search_events::Request>,
) -> Result<search_events::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let mut categories = ResultCategories::new();
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(search_events::Response::new(categories));
    };
    let offset: usize = match &body.next_batch {
        Some(token) => token
            .parse()
            .map_err(|_| Error::invalid_param("Unknown next_batch token"))?,
        None => 0,
    };
    let fields = fields_of(&criteria)?;
    let order = match &criteria.order_by {
        Some(OrderBy::Recent) => Order::Recent,
        None | Some(OrderBy::Rank) => Order::Rank,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "Unknown order_by {}",
                other.as_str()
            )));
        }
    };
    let filter = &criteria.filter;
    let limit = filter
        .limit
        .and_then(|limit| usize::try_from(u64::from(limit)).ok())
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT);
    let rooms = searchable_rooms(&services, &sender.user_id, filter)?;
    let mut viewer = Viewer::new(
        &services.rooms,
        &sender.user_id,
        sender.device_id.as_deref(),
    );

    let mut found: Vec<Found> = Vec::new();
    let mut consumed = offset;
    let mut total = 0;
    for _ in 0..MAX_ROUNDS {
        let hits = services.search.search(&SearchQuery {
            term: &criteria.search_term,
            fields: &fields,
            rooms: &rooms,
            senders: filter.senders.as_deref(),
            not_senders: &filter.not_senders,
            order,
            offset: consumed,
            limit: ROUND,
        })?;
        total = hits.total;
        let ids: Vec<&EventId> = hits.hits.iter().map(|hit| &*hit.event_id).collect();
        let shown = viewer.events(&ids, ClientFormat::Full)?;
        for (hit, shown) in hits.hits.iter().zip(shown) {
            consumed += 1;
            let Some((served, event)) = shown else {
                continue;
            };
            let content: Option<serde_json::Value> = event
                .content()
                .and_then(|content| serde_json::from_str(content.get()).ok());
            if !filters::allows_event(filter, &event) || !allows_url(filter, content.as_ref()) {
                continue;
            }
            let Ok(sender) = OwnedUserId::try_from(event.sender.as_str()) else {
                continue;
            };
            found.push(Found {
                event,
                event_id: hit.event_id.clone(),
                room_id: hit.room_id.clone(),
                sender,
                position: served.stored.position,
                rank: hit.rank,
                text: content.as_ref().and_then(text_of),
            });
            if found.len() == limit {
                break;
            }
        }
        if found.len() == limit || hits.hits.len() < ROUND {
            break;
        }
    }

    let mut events = ResultRoomEvents::new();
    events.count = UInt::try_from(total).ok();
    events.next_batch = (consumed < total).then(|| consumed.to_string());
    events.highlights = services.search.highlights(
        &criteria.search_term,
        found.iter().filter_map(|f| f.text.as_deref()),
    );
    events.groups = groups(&criteria, &found);
    if criteria.include_state == Some(true) {
        let result_rooms: BTreeSet<&OwnedRoomId> = found.iter().map(|f| &f.room_id).collect();
        for room_id in result_rooms {
            let state = services.rooms.current_state(room_id)?;
            let state_events = services
                .rooms
                .state_events(&state)?
                .into_iter()
                .map(|(_, _, event)| event.into_raw())
                .collect();
            events.state.insert(room_id.clone(), state_events);
        }
    }
    let before = context_size(criteria.event_context.before_limit);
    let after = context_size(criteria.event_context.after_limit);
    let frontier = services.stream.frontier();
    for result in found {
        let mut context = EventContextResult::new();
        let mut senders = BTreeSet::from([result.sender.clone()]);
        if before > 0 || after > 0 {
            let mut side = |events: Vec<(u64, ruma::OwnedEventId)>| -> Result<Vec<_>> {
                let ids: Vec<&EventId> = events.iter().map(|(_, id)| &**id).collect();
                Ok(viewer
                    .events(&ids, ClientFormat::Full)?
                    .into_iter()
                    .flatten()
                    .map(|(_, event)| {
                        if let Ok(sender) = OwnedUserId::try_from(event.sender.as_str()) {
                            senders.insert(sender);
                        }
                        event.into_raw()
                    })
                    .collect())
            };
            let earlier =
                services
                    .rooms
                    .timeline(&result.room_id, result.position, 0, false, before)?;
            context.start = Some(
                earlier
                    .last()
                    .map_or(result.position, |(position, _)| *position)
                    .saturating_sub(1)
                    .to_string(),
            );
            context.events_before = side(earlier)?;
            let later =
                services
                    .rooms
                    .timeline(&result.room_id, result.position, frontier, true, after)?;
            context.end = Some(
                later
                    .last()
                    .map_or(result.position, |(position, _)| *position)
                    .to_string(),
            );
            context.events_after = side(later)?;
        }
        if criteria.event_context.include_profile {
            for user in senders {
                if let Some(profile) = member_profile(&services, &result.room_id, &user)? {
                    context.profile_info.insert(user, profile);
                }
            }
        }
        let mut shown = SearchResult::new();
        shown.rank = Some(result.rank);
        shown.result = Some(result.event.into_raw());
        shown.context = context;
        events.results.push(shown);
    }
    categories.room_events = events;
    Ok(search_events::Response::new(categories))
}

/// The fields the criteria's `keys` name (all when none).
fn fields_of(criteria: &Criteria) -> Result<Vec<Field>> {
    let Some(keys) = &criteria.keys else {
        return Ok(Vec::new());
    };
    keys.iter()
        .map(|key| match key {
            SearchKeys::ContentBody => Ok(Field::Body),
            SearchKeys::ContentName => Ok(Field::Name),
            SearchKeys::ContentTopic => Ok(Field::Topic),
            other => Err(Error::invalid_param(format!(
                "Unknown search key {}",
                other.as_str()
            ))),
        })
        .collect()
}

/// The rooms whose history the user may have seen (joined now, or left or banned
/// since: what they saw before stays searchable), narrowed by the filter.
fn searchable_rooms(
    services: &Services,
    user: &ruma::UserId,
    filter: &ruma::api::client::filter::RoomEventFilter,
) -> Result<Vec<OwnedRoomId>> {
    Ok(services
        .rooms
        .user_rooms(user)?
        .into_iter()
        .filter(|(_, membership)| {
            matches!(
                membership.membership,
                MembershipState::Join | MembershipState::Leave | MembershipState::Ban
            )
        })
        .map(|(room_id, _)| room_id)
        .filter(|room_id| {
            filter
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.contains(room_id))
                && !filter.not_rooms.contains(room_id)
        })
        .collect())
}

/// `contains_url`: only events with (or without) a `url` in their content.
fn allows_url(
    filter: &ruma::api::client::filter::RoomEventFilter,
    content: Option<&serde_json::Value>,
) -> bool {
    let Some(wanted) = filter.url_filter else {
        return true;
    };
    let has_url = content.is_some_and(|content| content.get("url").is_some());
    match wanted {
        ruma::api::client::filter::UrlFilter::EventsWithUrl => has_url,
        ruma::api::client::filter::UrlFilter::EventsWithoutUrl => !has_url,
    }
}

/// The text a result was found by.
fn text_of(content: &serde_json::Value) -> Option<String> {
    ["body", "name", "topic"].iter().find_map(|key| {
        content
            .get(*key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    })
}

fn context_size(limit: UInt) -> usize {
    usize::try_from(u64::from(limit))
        .unwrap_or(MAX_CONTEXT)
        .min(MAX_CONTEXT)
}

/// The results grouped by room or sender, as asked, each group in result order.
fn groups(criteria: &Criteria, found: &[Found]) -> search_events::ResultGroupMapsByGroupingKey {
    let mut maps = search_events::ResultGroupMapsByGroupingKey::new();
    for grouping in &criteria.groupings.group_by {
        match grouping.key {
            Some(GroupingKey::RoomId) => {
                let mut groups: BTreeMap<OwnedRoomId, ResultGroup> = BTreeMap::new();
                for (order, result) in found.iter().enumerate() {
                    grouped(&mut groups, result.room_id.clone(), order, result);
                }
                maps.insert(ResultGroupMap::RoomId(groups));
            }
            Some(GroupingKey::Sender) => {
                let mut groups: BTreeMap<OwnedUserId, ResultGroup> = BTreeMap::new();
                for (order, result) in found.iter().enumerate() {
                    grouped(&mut groups, result.sender.clone(), order, result);
                }
                maps.insert(ResultGroupMap::Sender(groups));
            }
            _ => {}
        }
    }
    maps
}

fn grouped<K: Ord>(groups: &mut BTreeMap<K, ResultGroup>, key: K, order: usize, result: &Found) {
    let group = groups.entry(key).or_insert_with(|| {
        let mut group = ResultGroup::new();
        group.order = UInt::try_from(order).ok();
        group
    });
    group.results.push(result.event_id.clone());
}

/// A sender's display name and avatar in the room, from their member event.
fn member_profile(
    services: &Services,
    room_id: &ruma::RoomId,
    user: &OwnedUserId,
) -> Result<Option<UserProfile>> {
    let Some(content) = services
        .rooms
        .state_content(room_id, "m.room.member", user.as_str())?
    else {
        return Ok(None);
    };
    let mut profile = UserProfile::new();
    (profile.displayname, profile.avatar_url) =
        crate::service::rooms::membership::member_profile_in(&content);
    Ok(Some(profile))
}
