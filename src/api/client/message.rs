//! Sending, redacting and reading room events: `/send`, `/redact`, `/event`, `/context`
//! (`/messages` is in `pagination.rs`).

use std::{collections::BTreeSet, sync::Arc};

use axum::Router;
use ruma::{
    EventId, OwnedEventId, RoomId, UserId,
    api::client::{
        context::get_context, message::send_message_event, redact::redact_event,
        room::get_room_event,
    },
};
use serde_json::Value;

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::users::Sender,
    service::{
        Services, filters,
        rooms::{
            pdu::ClientFormat,
            timeline::{NewEvent, Txn},
            visibility::Viewer,
        },
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(send_message)
        .ruma_route(redact)
        .ruma_route(event)
        .ruma_route_json(event_without_room)
        .ruma_route(context)
}

/// `GET /_matrix/client/v3/events/{eventId}` (deprecated), which ruma has no type for.
mod single_event {
    use ruma::{
        OwnedEventId,
        api::{auth_scheme::AccessToken, request, response},
        metadata,
    };

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/events/{event_id}",
            1.1 => "/_matrix/client/v3/events/{event_id}",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
    }

    /// Unused: the handler answers with the event's JSON.
    #[response]
    pub struct Response {}
}

/// What every event a client sends goes through first: a transaction already answered
/// gets the same event id back (no rate limit, no second event); otherwise the sender
/// must be within the rate limit and in the room.
fn admit(
    services: &Services,
    sender: &Sender,
    room_id: &RoomId,
    txn: &Txn<'_>,
) -> Result<Option<OwnedEventId>> {
    if let Some(event_id) = services.rooms.txn_event(&sender.user_id, txn)? {
        return Ok(Some(event_id));
    }
    services.message_limiter.check_sender(sender)?;
    services.rooms.require_joined(room_id, &sender.user_id)?;
    Ok(None)
}

/// An event's content as sent: a JSON object (`M_BAD_JSON` otherwise).
fn content_object(raw: &str) -> Result<Value> {
    let content: Value = serde_json::from_str(raw).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be an object"));
    }
    Ok(content)
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
async fn send_message(
    services: Arc<Services>,
    request: Ruma<send_message_event::v3::Request>,
) -> Result<serde_json::Value> {
    let sender = request.sender()?.clone();
    let body = &request.body;
    if let Some(delay) = super::delayed_events::asked_delay(&request.uri)? {
        services.message_limiter.check_sender(&sender)?;
        let content = content_object(body.body.json().get())?;
        let kind = body.event_type.to_string();
        let txn = format!("{}\u{0}{}", sender.txn_scope(), body.txn_id);
        return super::delayed_events::schedule(
            &services,
            &sender.user_id,
            &body.room_id,
            (&kind, None),
            content,
            (delay, Some(txn)),
        );
    }
    let scope = sender.txn_scope();
    let txn = Txn {
        device_id: &scope,
        txn_id: body.txn_id.as_str(),
    };
    if let Some(event_id) = admit(&services, &sender, &body.room_id, &txn)? {
        return Ok(serde_json::json!({ "event_id": event_id }));
    }
    let content = content_object(body.body.json().get())?;
    let kind = body.event_type.to_string();
    services
        .rooms
        .check_relation(&body.room_id, &sender.user_id, &kind, &content)?;
    let event = NewEvent::message(&kind, content);
    let event_id = services
        .rooms
        .append(&body.room_id, &sender.user_id, event, Some(txn))
        .await?;
    services.federation.presence.was_active(&sender.user_id);
    Ok(serde_json::json!({ "event_id": event_id }))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
async fn redact(
    services: Arc<Services>,
    request: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let sender = request.sender()?.clone();
    let body = &request.body;
    let scope = sender.txn_scope();
    let txn = Txn {
        device_id: &scope,
        txn_id: body.txn_id.as_str(),
    };
    if let Some(event_id) = admit(&services, &sender, &body.room_id, &txn)? {
        return Ok(redact_event::v3::Response::new(event_id));
    }
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
        && !may_redact_others(&services.rooms, &body.room_id, &sender.user_id)?
    {
        return Err(Error::forbidden("You may not redact other users' events"));
    }
    let mut content = serde_json::json!({});
    if let Some(reason) = &body.reason {
        content["reason"] = reason.as_str().into();
    }
    let event = NewEvent::redaction(body.event_id.clone(), content);
    let event_id = services
        .rooms
        .append(&body.room_id, &sender.user_id, event, Some(txn))
        .await?;
    services.federation.presence.was_active(&sender.user_id);
    Ok(redact_event::v3::Response::new(event_id))
}

fn power_level(levels: &Value, key: &str, default: i64) -> i64 {
    levels.get(key).and_then(Value::as_i64).unwrap_or(default)
}

/// Whether the user's power level reaches the room's `redact` level.
fn may_redact_others(
    rooms: &crate::service::rooms::Rooms,
    room_id: &RoomId,
    user: &UserId,
) -> Result<bool> {
    let levels = rooms
        .state_content(room_id, "m.room.power_levels", "")?
        .unwrap_or_default();
    let create = rooms
        .state_content(room_id, "m.room.create", "")?
        .unwrap_or_default();
    let room = rooms
        .room(room_id)?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let rules = crate::service::rooms::Rooms::rules(&room.version)?;
    if rules.authorization.explicitly_privilege_room_creators {
        let creator_event = rooms
            .current_state(room_id)?
            .get(&("m.room.create".to_owned(), String::new()))
            .cloned();
        let creator = creator_event
            .and_then(|id| rooms.parsed_pdu(&id).ok().flatten())
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
    let (served, value) = services
        .rooms
        .visible_event(
            &sender.user_id,
            sender.device_id.as_deref(),
            &request.body.event_id,
            ClientFormat::Full,
        )?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    if served.stored.room_id != request.body.room_id {
        return Err(Error::not_found("Event not found"));
    }
    Ok(get_room_event::v3::Response::new(value.into_raw()))
}

/// # `GET /_matrix/client/v3/events/{eventId}` (deprecated)
///
/// As `/rooms/{roomId}/event/{eventId}`, the room being the event's.
async fn event_without_room(
    services: Arc<Services>,
    request: Ruma<single_event::Request>,
) -> Result<Value> {
    let sender = request.sender()?;
    let (_, value) = services
        .rooms
        .visible_event(
            &sender.user_id,
            sender.device_id.as_deref(),
            &request.body.event_id,
            ClientFormat::Full,
        )?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    Ok(value.into_value())
}

/// The most events `/context` returns around the event, whatever the client asks.
const MAX_CONTEXT_LIMIT: usize = 1000;

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
async fn context(
    services: Arc<Services>,
    request: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let rooms = &services.rooms;
    let mut viewer = Viewer::new(rooms, &sender.user_id, sender.device_id.as_deref());
    let (served, event) = viewer
        .event(&body.event_id, ClientFormat::Full)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let pdu = &served.stored;
    if pdu.room_id != body.room_id {
        return Err(Error::not_found("Event not found"));
    }
    let limit = usize::try_from(u64::from(body.limit))
        .unwrap_or(10)
        .min(MAX_CONTEXT_LIMIT);
    let half = limit / 2;
    let frontier = services.stream.frontier();
    let mut senders = BTreeSet::from([event.sender.clone()]);
    // The events of one side the viewer may see and the filter lets through, and the
    // position of the last one walked.
    let mut side = |events: Vec<(u64, OwnedEventId)>| -> Result<(Vec<_>, Option<u64>)> {
        let ids: Vec<&EventId> = events.iter().map(|(_, id)| &**id).collect();
        let mut kept = Vec::new();
        for (_, event) in viewer
            .events(&ids, ClientFormat::Full)?
            .into_iter()
            .flatten()
        {
            if filters::allows_event(&body.filter, &event) {
                senders.insert(event.sender.clone());
                kept.push(event.into_raw());
            }
        }
        Ok((kept, events.last().map(|(position, _)| *position)))
    };
    let (before, oldest) = side(rooms.timeline(&body.room_id, pdu.position, 0, false, half)?)?;
    let start = oldest.unwrap_or(pdu.position).saturating_sub(1);
    let (after, newest) =
        side(rooms.timeline(&body.room_id, pdu.position, frontier, true, limit - half)?)?;
    let end = newest.unwrap_or(pdu.position);
    let state = rooms.state.get(pdu.state_before)?;
    // With lazy-loaded members, only those of the events' senders.
    let lazy = !body.filter.lazy_load_options.is_disabled();
    let mut response = get_context::v3::Response::new();
    response.start = Some(start.to_string());
    response.end = Some(end.to_string());
    response.event = Some(event.into_raw());
    response.events_before = before;
    response.events_after = after;
    response.state = rooms
        .state_events(&state)?
        .into_iter()
        .filter(|(kind, state_key, _)| {
            !lazy || kind != "m.room.member" || senders.contains(state_key)
        })
        .map(|(_, _, event)| event.into_raw())
        .collect();
    Ok(response)
}
