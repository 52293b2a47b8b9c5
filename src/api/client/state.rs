//! Room state: reading it and sending state events.

use std::sync::Arc;

use axum::Router;
use ruma::{
    RoomId,
    api::client::state::{get_state_event_for_key, get_state_events, send_state_event},
};
use serde_json::Value;

use super::events::readable_state;
use crate::service::rooms::Rooms;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        rooms::{pdu::ClientFormat, summary, timeline::NewEvent},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(send_state)
        .ruma_route(state)
        .ruma_route(state_event)
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
///
/// An empty state key may also leave out its slash (routed in `router/ruma.rs`).
async fn send_state(
    services: Arc<Services>,
    request: Ruma<send_state_event::v3::Request>,
) -> Result<Value> {
    let sender = request.user_id()?.to_owned();
    services.message_limiter.check_sender(request.sender()?)?;
    let delay = super::delayed_events::asked_delay(&request.uri)?;
    let body = &request.body;
    let mut content: Value =
        serde_json::from_str(body.body.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be an object"));
    }
    let kind = body.event_type.to_string();
    if kind == "m.room.topic" {
        summary::complete_topic(&mut content);
    }
    services.rooms.require_joined(&body.room_id, &sender)?;
    if kind == "m.room.member" {
        require_same_membership(&services.rooms, &body.room_id, &body.state_key, &content)?;
    }
    if kind == "m.room.canonical_alias" {
        check_canonical_alias(&services.rooms, &body.room_id, &content)?;
    }
    require_own_call_membership(&sender, &kind, &body.state_key)?;
    if let Some(delay) = delay {
        return super::delayed_events::schedule(
            &services,
            &sender,
            &body.room_id,
            (&kind, Some(&body.state_key)),
            content,
            (delay, None),
        );
    }
    if let Some(event_id) =
        services
            .rooms
            .same_state(&body.room_id, &sender, &kind, &body.state_key, &content)?
    {
        return Ok(serde_json::json!({ "event_id": event_id }));
    }
    let event = NewEvent::state(&kind, &body.state_key, content);
    let event_id = services
        .rooms
        .append(&body.room_id, &sender, event, None)
        .await?;
    Ok(serde_json::json!({ "event_id": event_id }))
}

/// A member event sent as plain state may change what a membership says (a per-room
/// display name or avatar, as Element's `/myroomnick` sets it) but not the membership:
/// joins, leaves, invites and bans go through the membership endpoints, which do the
/// handshakes with other servers.
fn require_same_membership(
    rooms: &Rooms,
    room_id: &RoomId,
    state_key: &str,
    content: &Value,
) -> Result<()> {
    let target = ruma::UserId::parse(state_key)
        .map_err(|_| Error::invalid_param("The state key of a member event is a user id"))?;
    let current = rooms.member_state(room_id, &target)?;
    let wanted = crate::service::rooms::membership::membership_in(content);
    if current.is_some() && current == wanted {
        Ok(())
    } else {
        Err(Error::forbidden(
            "Use the membership endpoints to change membership",
        ))
    }
}

/// The call membership types whose per-device state keys (`_@user:server_DEVICE`) belong
/// to the user they start with (MSC3757's owned state keys; the room versions clients
/// use do not check them, since only `@`-prefixed keys are checked by the auth rules).
const CALL_MEMBERSHIP_TYPES: &[&str] = &["org.matrix.msc3401.call.member", "m.rtc.member"];

/// A call membership under another user's state key would put them in a call or take
/// them out of one: a user may only set their own.
fn require_own_call_membership(sender: &ruma::UserId, kind: &str, state_key: &str) -> Result<()> {
    if !CALL_MEMBERSHIP_TYPES.contains(&kind) {
        return Ok(());
    }
    let Some(owned) = state_key
        .strip_prefix('_')
        .filter(|key| key.starts_with('@'))
    else {
        return Ok(());
    };
    let own = owned
        .strip_prefix(sender.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'));
    if own {
        Ok(())
    } else {
        Err(Error::forbidden(
            "This call membership state key belongs to another user",
        ))
    }
}

/// The aliases of an `m.room.canonical_alias` event must point at the room.
fn check_canonical_alias(rooms: &Rooms, room_id: &RoomId, content: &Value) -> Result<()> {
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
        let record = rooms.resolve_alias(&parsed)?;
        if record.is_none_or(|record| record.room_id != room_id) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::BadAlias,
                format!("{alias} does not point at this room"),
            ));
        }
    }
    Ok(())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
async fn state(
    services: Arc<Services>,
    request: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let state = readable_state(&services.rooms, &request.body.room_id, request.user_id()?)?;
    let events = services.rooms.state_events(&state)?;
    Ok(get_state_events::v3::Response::new(
        events
            .into_iter()
            .map(|(_, _, event)| event.into_raw())
            .collect(),
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
///
/// An empty state key may also leave out its slash (routed in `router/ruma.rs`).
async fn state_event(
    services: Arc<Services>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let body = &request.body;
    let state = readable_state(&services.rooms, &body.room_id, request.user_id()?)?;
    let event_id = state
        .get(&(body.event_type.to_string(), body.state_key.clone()))
        .ok_or_else(|| Error::not_found("State event not found"))?;
    let pdu = services
        .rooms
        .pdu(event_id)?
        .ok_or_else(|| Error::not_found("State event not found"))?;
    let event = pdu.to_client(event_id, ClientFormat::Full, None, None);
    let json = match body.format {
        get_state_event_for_key::v3::StateEventFormat::Event => event.json,
        _ => event
            .content()
            .ok_or_else(|| Error::internal("a stored state event without content"))?,
    };
    Ok(get_state_event_for_key::v3::Response::new(json))
}
