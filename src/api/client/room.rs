//! Rooms: creation, sending, reading events, state and members.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    EventId, RoomId, RoomVersionId, UserId,
    api::Direction,
    api::client::{
        context::get_context,
        membership::{get_member_events, joined_members, joined_rooms},
        message::{get_message_events, send_message_event},
        redact::redact_event,
        room::{Visibility, create_room, get_room_event},
        state::{get_state_event_for_key, get_state_events, send_state_event},
    },
    serde::Raw,
};
use serde_json::Value;

use super::discovery::ROOM_VERSIONS;
use crate::{
    Error, Result,
    router::{Ruma, RumaRouter},
    service::{
        Services,
        rooms::{
            create::CreateRoom,
            pdu::{ClientFormat, StoredPdu},
            timeline::{NewEvent, Txn},
        },
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(create)
        .ruma_route(send_message)
        .ruma_route(send_state)
        .ruma_route(redact)
        .ruma_route(event)
        .ruma_route(state)
        .ruma_route(state_event)
        .ruma_route(members)
        .ruma_route(joined_members)
        .ruma_route(joined_rooms)
        .ruma_route(messages)
        .ruma_route(context)
}

pub fn raw<T>(value: Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(&value).expect("a JSON value serializes"))
}

/// An event as `user` may see it, or `None`.
pub fn visible_event(
    services: &Services,
    user: &UserId,
    device: Option<&ruma::DeviceId>,
    event_id: &EventId,
    format: ClientFormat,
) -> Result<Option<(StoredPdu, Value)>> {
    let Some(pdu) = services.rooms.pdu(event_id)? else {
        return Ok(None);
    };
    if !services.rooms.can_see_event(user, event_id, &pdu)? {
        return Ok(None);
    }
    let viewer = device.map(|device| (user, device));
    let value = pdu.to_client(event_id, format, viewer, prev_content(services, &pdu)?);
    Ok(Some((pdu, value)))
}

/// The previous content of the state this event replaced, for `unsigned.prev_content`.
pub fn prev_content(services: &Services, pdu: &StoredPdu) -> Result<Option<Value>> {
    if pdu.state_before == pdu.state_after {
        return Ok(None);
    }
    let parsed: Value = serde_json::from_str(pdu.pdu.get()).map_err(Error::internal)?;
    let (Some(kind), Some(state_key)) = (
        parsed.get("type").and_then(Value::as_str),
        parsed.get("state_key").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    let before = services.rooms.state.get(pdu.state_before)?;
    services.rooms.content_in(&before, kind, state_key)
}

/// # `POST /_matrix/client/v3/createRoom`
async fn create(
    services: Arc<Services>,
    request: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let creator = request.user_id()?.to_owned();
    services.message_limiter.check(creator.as_str())?;
    let body = request.body;
    let version = body
        .room_version
        .clone()
        .unwrap_or_else(|| services.config.default_room_version.clone());
    if !ROOM_VERSIONS.contains(&version) {
        return Err(Error::new(
            ruma::api::error::ErrorKind::UnsupportedRoomVersion,
            "Unsupported room version",
        ));
    }
    let creation_content = match &body.creation_content {
        Some(raw) => serde_json::from_str::<serde_json::Map<String, Value>>(raw.json().get())
            .map_err(|e| Error::bad_json(e.to_string()))?,
        None => serde_json::Map::new(),
    };
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event: Value =
            serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let state_key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        let content = event
            .get("content")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        initial_state.push(NewEvent::state(kind, state_key, content));
    }
    let power_level_override = match &body.power_level_content_override {
        Some(raw) => Some(
            serde_json::from_str::<serde_json::Map<String, Value>>(raw.json().get())
                .map_err(|e| Error::bad_json(e.to_string()))?,
        ),
        None => None,
    };
    let alias = match &body.room_alias_name {
        Some(name) => {
            if name.contains(':') || name.contains(char::is_whitespace) || name.is_empty() {
                return Err(Error::new(
                    ruma::api::error::ErrorKind::InvalidParam,
                    "Invalid alias localpart",
                ));
            }
            let alias = format!("#{name}:{}", services.config.server_name);
            let parsed = ruma::OwnedRoomAliasId::try_from(alias.as_str())
                .map_err(|_| Error::invalid_param("Invalid alias"))?;
            if services.rooms.resolve_alias(&parsed)?.is_some() {
                return Err(Error::new(
                    ruma::api::error::ErrorKind::RoomInUse,
                    "Alias already taken",
                ));
            }
            Some(alias)
        }
        None => None,
    };
    for invitee in &body.invite {
        if invitee.server_name() == services.config.server_name
            && !services.users.exists(invitee)?
        {
            return Err(Error::not_found(format!("Unknown user {invitee}")));
        }
    }
    let preset = body.preset.clone().unwrap_or(match body.visibility {
        Visibility::Public => create_room::v3::RoomPreset::PublicChat,
        _ => create_room::v3::RoomPreset::PrivateChat,
    });
    let room_id = services
        .rooms
        .create_room(
            &creator,
            CreateRoom {
                version: version as RoomVersionId,
                creation_content,
                preset,
                visibility: body.visibility.clone(),
                alias,
                name: body.name.clone(),
                topic: body.topic.clone(),
                invite: body.invite.clone(),
                is_direct: body.is_direct,
                initial_state,
                power_level_override,
                creator_profile: (
                    services.users.displayname(&creator)?,
                    services.users.avatar_url(&creator)?,
                ),
            },
        )
        .await?;
    tracing::info!(%room_id, %creator, "room created");
    Ok(create_room::v3::Response::new(room_id))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
async fn send_message(
    services: Arc<Services>,
    request: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let sender = request.sender()?.clone();
    let body = &request.body;
    let txn = Txn {
        device_id: &sender.device_id,
        txn_id: body.txn_id.as_str(),
    };
    if let Some(event_id) = services.rooms.txn_event(&sender.user_id, &txn)? {
        return Ok(send_message_event::v3::Response::new(event_id));
    }
    services.message_limiter.check(sender.user_id.as_str())?;
    services
        .rooms
        .require_joined(&body.room_id, &sender.user_id)?;
    let content: Value =
        serde_json::from_str(body.body.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be an object"));
    }
    let event = NewEvent::message(&body.event_type.to_string(), content);
    let event_id = services
        .rooms
        .append(&body.room_id, &sender.user_id, event, Some(txn))
        .await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn send_state(
    services: Arc<Services>,
    request: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let sender = request.user_id()?.to_owned();
    services.message_limiter.check(sender.as_str())?;
    let body = &request.body;
    let content: Value =
        serde_json::from_str(body.body.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be an object"));
    }
    let kind = body.event_type.to_string();
    if kind == "m.room.member" {
        return Err(Error::forbidden(
            "Use the membership endpoints to change membership",
        ));
    }
    services.rooms.require_joined(&body.room_id, &sender)?;
    if kind == "m.room.canonical_alias" {
        check_canonical_alias(&services, &body.room_id, &content)?;
    }
    let event = NewEvent::state(&kind, &body.state_key, content);
    let event_id = services
        .rooms
        .append(&body.room_id, &sender, event, None)
        .await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

/// The aliases of an `m.room.canonical_alias` event must point at the room.
fn check_canonical_alias(services: &Services, room_id: &RoomId, content: &Value) -> Result<()> {
    let mut aliases: Vec<&str> = Vec::new();
    if let Some(alias) = content.get("alias").and_then(Value::as_str) {
        aliases.push(alias);
    }
    if let Some(alt) = content.get("alt_aliases").and_then(Value::as_array) {
        aliases.extend(alt.iter().filter_map(Value::as_str));
    }
    for alias in aliases {
        let parsed = ruma::OwnedRoomAliasId::try_from(alias)
            .map_err(|_| Error::new(ruma::api::error::ErrorKind::InvalidParam, "Invalid alias"))?;
        let record = services.rooms.resolve_alias(&parsed)?;
        if record.is_none_or(|record| record.room_id != room_id) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::BadAlias,
                format!("{alias} does not point at this room"),
            ));
        }
    }
    Ok(())
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
async fn redact(
    services: Arc<Services>,
    request: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let sender = request.sender()?.clone();
    let body = &request.body;
    let txn = Txn {
        device_id: &sender.device_id,
        txn_id: body.txn_id.as_str(),
    };
    if let Some(event_id) = services.rooms.txn_event(&sender.user_id, &txn)? {
        return Ok(redact_event::v3::Response::new(event_id));
    }
    services.message_limiter.check(sender.user_id.as_str())?;
    services
        .rooms
        .require_joined(&body.room_id, &sender.user_id)?;
    let target = services
        .rooms
        .parsed_pdu(&body.event_id)?
        .filter(|pdu| {
            pdu.room_id
                .as_deref()
                .is_none_or(|room| room == body.room_id)
        })
        .ok_or_else(|| Error::not_found("Event not found"))?;
    if target.sender != sender.user_id
        && !may_redact_others(&services, &body.room_id, &sender.user_id)?
    {
        return Err(Error::forbidden("You may not redact other users' events"));
    }
    let mut content = serde_json::json!({});
    if let Some(reason) = &body.reason {
        content["reason"] = reason.as_str().into();
    }
    let event = NewEvent {
        kind: "m.room.redaction".to_owned(),
        content,
        state_key: None,
        redacts: Some(body.event_id.clone()),
    };
    let event_id = services
        .rooms
        .append(&body.room_id, &sender.user_id, event, Some(txn))
        .await?;
    Ok(redact_event::v3::Response::new(event_id))
}

fn power_level(levels: &Value, key: &str, default: i64) -> i64 {
    levels.get(key).and_then(Value::as_i64).unwrap_or(default)
}

/// Whether the user's power level reaches the room's `redact` level.
fn may_redact_others(services: &Services, room_id: &RoomId, user: &UserId) -> Result<bool> {
    let levels = services
        .rooms
        .state_content(room_id, "m.room.power_levels", "")?
        .unwrap_or_default();
    let create = services
        .rooms
        .state_content(room_id, "m.room.create", "")?
        .unwrap_or_default();
    let room = services
        .rooms
        .room(room_id)?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let rules = crate::service::rooms::Rooms::rules(&room.version)?;
    if rules.authorization.explicitly_privilege_room_creators {
        let creator_event = services
            .rooms
            .current_state(room_id)?
            .get(&("m.room.create".to_owned(), String::new()))
            .cloned();
        let creator = creator_event
            .and_then(|id| services.rooms.parsed_pdu(&id).ok().flatten())
            .map(|pdu| pdu.sender);
        let additional = create
            .get("additional_creators")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if creator.as_deref() == Some(user)
            || additional.iter().any(|u| u.as_str() == Some(user.as_str()))
        {
            return Ok(true);
        }
    }
    let user_level = levels
        .get("users")
        .and_then(|users| users.get(user.as_str()))
        .and_then(Value::as_i64)
        .unwrap_or_else(|| power_level(&levels, "users_default", 0));
    Ok(user_level >= power_level(&levels, "redact", 50))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
async fn event(
    services: Arc<Services>,
    request: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response> {
    let sender = request.sender()?;
    let (pdu, value) = visible_event(
        &services,
        &sender.user_id,
        Some(&sender.device_id),
        &request.body.event_id,
        ClientFormat::Full,
    )?
    .ok_or_else(|| Error::not_found("Event not found"))?;
    if pdu.room_id != request.body.room_id {
        return Err(Error::not_found("Event not found"));
    }
    Ok(get_room_event::v3::Response::new(raw(value)))
}

/// The state a user may read: the current state if joined, else the state when they left.
fn readable_state(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
) -> Result<Arc<crate::service::rooms::state::StateMap>> {
    match services.rooms.membership(room_id, user)? {
        Some(m) if m.membership == "join" => services.rooms.current_state(room_id),
        Some(m) if matches!(m.membership.as_str(), "leave" | "ban") => {
            let pdu = services
                .rooms
                .pdu(&m.event_id)?
                .ok_or_else(|| Error::internal("missing membership event"))?;
            services.rooms.state.get(pdu.state_after)
        }
        _ if services.rooms.can_see_room(room_id, user)? => services.rooms.current_state(room_id),
        _ => Err(Error::forbidden("You are not in this room")),
    }
}

fn state_events(
    services: &Services,
    state: &crate::service::rooms::state::StateMap,
) -> Result<Vec<(String, String, Value)>> {
    let mut out = Vec::new();
    for ((kind, state_key), event_id) in state {
        if let Some(pdu) = services.rooms.pdu(event_id)? {
            let value = pdu.to_client(event_id, ClientFormat::Full, None, None);
            out.push((kind.clone(), state_key.clone(), value));
        }
    }
    Ok(out)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
async fn state(
    services: Arc<Services>,
    request: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let state = readable_state(&services, &request.body.room_id, request.user_id()?)?;
    let events = state_events(&services, &state)?;
    Ok(get_state_events::v3::Response::new(
        events.into_iter().map(|(_, _, value)| raw(value)).collect(),
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn state_event(
    services: Arc<Services>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let body = &request.body;
    let state = readable_state(&services, &body.room_id, request.user_id()?)?;
    let event_id = state
        .get(&(body.event_type.to_string(), body.state_key.clone()))
        .ok_or_else(|| Error::not_found("State event not found"))?;
    let pdu = services
        .rooms
        .pdu(event_id)?
        .ok_or_else(|| Error::not_found("State event not found"))?;
    let event = pdu.to_client(event_id, ClientFormat::Full, None, None);
    let value = match body.format {
        get_state_event_for_key::v3::StateEventFormat::Event => event,
        _ => event.get("content").cloned().unwrap_or_default(),
    };
    Ok(get_state_event_for_key::v3::Response::new(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
async fn members(
    services: Arc<Services>,
    request: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let body = &request.body;
    let mut state = readable_state(&services, &body.room_id, request.user_id()?)?;
    if let Some(at) = &body.at {
        // The members at a point of the timeline, but never later than what the user
        // may read.
        let position = parse_token(at)?;
        let readable_until = match services
            .rooms
            .membership(&body.room_id, request.user_id()?)?
        {
            Some(m) if m.membership != "join" => m.position,
            _ => position,
        };
        let group = services
            .rooms
            .state_group_at(&body.room_id, position.min(readable_until))?;
        state = services.rooms.state.get(group)?;
    }
    let mut chunk = Vec::new();
    for (kind, _, value) in state_events(&services, &state)? {
        if kind != "m.room.member" {
            continue;
        }
        let membership = value
            .pointer("/content/membership")
            .and_then(Value::as_str)
            .unwrap_or("leave");
        if body
            .membership
            .as_ref()
            .is_some_and(|m| m.as_str() != membership)
        {
            continue;
        }
        if body
            .not_membership
            .as_ref()
            .is_some_and(|m| m.as_str() == membership)
        {
            continue;
        }
        chunk.push(raw(value));
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
        if content.get("membership").and_then(Value::as_str) != Some("join") {
            continue;
        }
        let Ok(user_id) = ruma::OwnedUserId::try_from(state_key.as_str()) else {
            continue;
        };
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = content
            .get("displayname")
            .and_then(Value::as_str)
            .map(str::to_owned);
        member.avatar_url = content
            .get("avatar_url")
            .and_then(Value::as_str)
            .map(Into::into);
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
        .filter(|(_, membership)| membership.membership == "join")
        .map(|(room_id, _)| room_id)
        .collect();
    Ok(joined_rooms::v3::Response::new(rooms))
}

/// Parses a pagination token: a stream position, or a sync token (`s{position}_...`).
pub fn parse_token(token: &str) -> Result<u64> {
    let position = token.strip_prefix('s').unwrap_or(token);
    let position = position.split('_').next().unwrap_or(position);
    position
        .parse()
        .map_err(|_| Error::invalid_param("Invalid pagination token"))
}

/// Event types a `RoomEventFilter` lets through.
pub fn filter_allows(filter: &ruma::api::client::filter::RoomEventFilter, value: &Value) -> bool {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    let sender = value.get("sender").and_then(Value::as_str).unwrap_or("");
    let matches = |pattern: &String| {
        pattern == kind
            || pattern
                .strip_suffix('*')
                .is_some_and(|prefix| kind.starts_with(prefix))
    };
    if filter.not_types.iter().any(matches) {
        return false;
    }
    if filter
        .types
        .as_ref()
        .is_some_and(|types| !types.iter().any(matches))
    {
        return false;
    }
    if filter.not_senders.iter().any(|s| s.as_str() == sender) {
        return false;
    }
    if filter
        .senders
        .as_ref()
        .is_some_and(|senders| !senders.iter().any(|s| s.as_str() == sender))
    {
        return false;
    }
    true
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
async fn messages(
    services: Arc<Services>,
    request: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let room_id = &body.room_id;
    let membership = services.rooms.membership(room_id, &sender.user_id)?;
    if membership.is_none() && !services.rooms.can_see_room(room_id, &sender.user_id)? {
        return Err(Error::forbidden("You are not in this room"));
    }
    let forwards = body.dir == Direction::Forward;
    let frontier = services.stream.frontier();
    // A token is a boundary: "after position p". Backwards from it come the events at or
    // below p, forwards the events above it.
    let from = match &body.from {
        Some(token) => parse_token(token)?,
        None if forwards => 0,
        None => frontier,
    };
    let to = match &body.to {
        Some(token) => parse_token(token)?.min(frontier),
        None if forwards => frontier,
        None => 0,
    };
    let limit = usize::try_from(u64::from(body.limit))
        .unwrap_or(10)
        .clamp(1, 1000);
    let ignored = services.account_data.ignored_users(&sender.user_id)?;
    let from_ignored = |event: &Value| {
        event.get("state_key").is_none()
            && event
                .get("sender")
                .and_then(Value::as_str)
                .is_some_and(|s| ignored.contains(s))
    };
    let mut chunk = Vec::new();
    let mut state_members = BTreeMap::new();
    let mut end = None;
    // `Rooms::timeline` takes an exclusive starting bound.
    let mut cursor = if forwards {
        from
    } else {
        from.saturating_add(1)
    };
    // Walk in pages, skipping what the viewer may not see, until the chunk is full.
    'walk: loop {
        let page = services
            .rooms
            .timeline(room_id, cursor, to, forwards, limit)?;
        for (position, event_id) in &page {
            cursor = *position;
            let Some((_, value)) = visible_event(
                &services,
                &sender.user_id,
                Some(&sender.device_id),
                event_id,
                ClientFormat::Full,
            )?
            else {
                continue;
            };
            if !filter_allows(&body.filter, &value) || from_ignored(&value) {
                continue;
            }
            if !body.filter.lazy_load_options.is_disabled()
                && let Some(member) = value.get("sender").and_then(Value::as_str)
            {
                state_members.entry(member.to_owned()).or_insert(*position);
            }
            chunk.push(raw(value));
            if chunk.len() >= limit {
                let boundary = if forwards {
                    cursor
                } else {
                    cursor.saturating_sub(1)
                };
                end = Some(boundary.to_string());
                break 'walk;
            }
        }
        if page.len() < limit {
            // The start (or end) of the room: `end` is left out, as the spec asks.
            break;
        }
    }
    let mut state = Vec::new();
    if !body.filter.lazy_load_options.is_disabled() {
        let current = services.rooms.current_state(room_id)?;
        for member in state_members.keys() {
            if let Some(event_id) = current.get(&("m.room.member".to_owned(), member.clone()))
                && let Some(pdu) = services.rooms.pdu(event_id)?
            {
                state.push(raw(pdu.to_client(event_id, ClientFormat::Full, None, None)));
            }
        }
    }
    let mut response = get_message_events::v3::Response::new();
    response.start = body.from.clone().unwrap_or_else(|| from.to_string());
    response.end = end;
    response.chunk = chunk;
    response.state = state;
    Ok(response)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
async fn context(
    services: Arc<Services>,
    request: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (pdu, value) = visible_event(
        &services,
        &sender.user_id,
        Some(&sender.device_id),
        &body.event_id,
        ClientFormat::Full,
    )?
    .ok_or_else(|| Error::not_found("Event not found"))?;
    if pdu.room_id != body.room_id {
        return Err(Error::not_found("Event not found"));
    }
    let limit = usize::try_from(u64::from(body.limit))
        .unwrap_or(10)
        .min(100);
    let half = limit / 2;
    let frontier = services.stream.frontier();
    let mut before = Vec::new();
    let mut start = pdu.position.saturating_sub(1);
    for (position, event_id) in
        services
            .rooms
            .timeline(&body.room_id, pdu.position, 0, false, half)?
    {
        start = position.saturating_sub(1);
        if let Some((_, value)) = visible_event(
            &services,
            &sender.user_id,
            Some(&sender.device_id),
            &event_id,
            ClientFormat::Full,
        )? && filter_allows(&body.filter, &value)
        {
            before.push(raw(value));
        }
    }
    let mut after = Vec::new();
    let mut end = pdu.position;
    for (position, event_id) in
        services
            .rooms
            .timeline(&body.room_id, pdu.position, frontier, true, limit - half)?
    {
        end = position;
        if let Some((_, value)) = visible_event(
            &services,
            &sender.user_id,
            Some(&sender.device_id),
            &event_id,
            ClientFormat::Full,
        )? && filter_allows(&body.filter, &value)
        {
            after.push(raw(value));
        }
    }
    let state = services.rooms.state.get(pdu.state_before)?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(start.to_string());
    response.end = Some(end.to_string());
    response.event = Some(raw(value));
    response.events_before = before;
    response.events_after = after;
    response.state = state_events(&services, &state)?
        .into_iter()
        .map(|(_, _, value)| raw(value))
        .collect();
    Ok(response)
}
