//! Delayed events (MSC4140), as matrix-js-sdk and Element Call use them: a send or a
//! state change with `?org.matrix.msc4140.delay=` (ms) answers a `delay_id` instead of
//! an event id, and the event waits in `service/delayed_events.rs`; the endpoints below
//! list the waiting ones and cancel, restart or send one now, with the caller's token
//! or (the form with the action in the path) with none, the delay id being the secret.

use std::sync::Arc;

use axum::Router;
use ruma::{
    UserId,
    api::client::delayed_events::{
        get_all_delayed_events, get_delayed_event,
        update_delayed_event::{self, UpdateAction},
    },
};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        delayed_events::{Action, Delayed},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(list)
        .ruma_route_json(one)
        .ruma_route_json(update)
        .ruma_route_json(update_by_path)
}

/// The delay a send asks for (`org.matrix.msc4140.delay`, in ms), if it asks for one.
/// Delays grouped under a parent (`org.matrix.msc4140.parent_delay_id`) are not served.
pub(super) fn asked_delay(uri: &http::Uri) -> Result<Option<u64>> {
    let mut delay = None;
    for (key, value) in crate::api::ruma::form_pairs(uri.query().unwrap_or_default()) {
        match key.as_str() {
            "org.matrix.msc4140.delay" => {
                delay = Some(value.parse::<u64>().map_err(|_| {
                    Error::invalid_param("org.matrix.msc4140.delay must be a whole number of ms")
                })?);
            }
            "org.matrix.msc4140.parent_delay_id" => {
                return Err(Error::invalid_param(
                    "Delayed events sent with their parent are not supported",
                ));
            }
            _ => {}
        }
    }
    Ok(delay)
}

/// Schedules a send of the caller's: `{"delay_id"}`. `txn` is the transaction of a
/// message send (scope and id), so that a retry gets the same delay id.
pub(super) fn schedule(
    services: &Services,
    user_id: &UserId,
    room_id: &ruma::RoomId,
    event: (&str, Option<&str>),
    content: Value,
    (delay_ms, txn): (u64, Option<String>),
) -> Result<Value> {
    services.rooms.require_joined(room_id, user_id)?;
    let delay_id = services
        .delayed_events
        .schedule(user_id, room_id, event, content, delay_ms, txn)?;
    Ok(json!({ "delay_id": delay_id }))
}

fn describe(delayed: &Delayed) -> Value {
    let mut out = json!({
        "delay_id": delayed.delay_id,
        "room_id": delayed.room_id,
        "type": delayed.kind,
        "content": delayed.content,
        "delay": delayed.delay_ms,
        "running_since": delayed.running_since_ms,
    });
    if let Some(key) = &delayed.state_key {
        out["state_key"] = key.as_str().into();
    }
    out
}

fn action(action: &UpdateAction) -> Result<Action> {
    match action {
        UpdateAction::Cancel => Ok(Action::Cancel),
        UpdateAction::Restart => Ok(Action::Restart),
        UpdateAction::Send => Ok(Action::Send),
        other => Err(Error::invalid_param(format!(
            "Unknown action {}: cancel, restart or send",
            other.as_str()
        ))),
    }
}

/// # `GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events`
async fn list(
    services: Arc<Services>,
    request: Ruma<get_all_delayed_events::unstable::Request>,
) -> Result<Value> {
    let waiting = services.delayed_events.list(request.user_id()?);
    Ok(json!({ "delayed_events": waiting.iter().map(describe).collect::<Vec<_>>() }))
}

/// # `GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}`
async fn one(
    services: Arc<Services>,
    request: Ruma<get_delayed_event::unstable::Request>,
) -> Result<Value> {
    let delayed = services
        .delayed_events
        .get(&request.body.delay_id, Some(request.user_id()?))
        .ok_or_else(|| Error::not_found("No delayed event has this id"))?;
    Ok(describe(&delayed))
}

/// # `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}`
///
/// The action in the body, with the caller's token: only the caller's own events.
async fn update(
    services: Arc<Services>,
    request: Ruma<update_delayed_event::unstable_v1::Request>,
) -> Result<Value> {
    let body = &request.body;
    services
        .delayed_events
        .update(
            &body.delay_id,
            action(&body.action)?,
            Some(request.user_id()?),
        )
        .await?;
    Ok(json!({}))
}

/// # `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/{action}`
///
/// No token: whoever holds the delay id (a call's focus service, for one) may act on it.
async fn update_by_path(
    services: Arc<Services>,
    request: Ruma<update_delayed_event::unstable_v2::Request>,
) -> Result<Value> {
    let body = &request.body;
    services
        .delayed_events
        .update(&body.delay_id, action(&body.action)?, None)
        .await?;
    Ok(json!({}))
}
