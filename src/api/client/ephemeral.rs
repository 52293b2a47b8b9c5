//! Typing notifications, read receipts and read markers.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::events::room::member::MembershipState;
use ruma::{
    EventId, RoomId, UserId,
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
        typing::create_typing_event::{self, v3::Typing},
    },
    events::receipt::ReceiptThread,
};
use serde_json::{Map, Value};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

/// The longest a client may claim to be typing at once.
const MAX_TYPING: Duration = Duration::from_secs(120);

/// How long a client is typing when it does not say (as on Synapse).
const DEFAULT_TYPING: Duration = Duration::from_secs(30);

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_prepared(typing, default_timeout)
        .ruma_route(receipt)
        .ruma_route(read_markers)
}

/// The spec requires only `typing`; ruma also wants a `timeout` when it is `true`.
fn default_timeout(body: &mut Map<String, Value>, _: &[&str]) -> Result<()> {
    if body.get("typing") == Some(&Value::Bool(true)) {
        body.entry("timeout")
            .or_insert_with(|| (DEFAULT_TYPING.as_millis() as u64).into());
    }
    Ok(())
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
async fn typing(
    services: Arc<Services>,
    request: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response> {
    let user = request.user_id()?;
    if user != request.body.user_id {
        return Err(Error::forbidden("You can only set your own typing state"));
    }
    services.rooms.require_joined(&request.body.room_id, user)?;
    let timeout = match &request.body.state {
        Typing::Yes(info) => Some(info.timeout.min(MAX_TYPING)),
        _ => None,
    };
    let members = services
        .rooms
        .members_with(&request.body.room_id, MembershipState::Join)?;
    services
        .typing
        .set(&request.body.room_id, user, timeout, members);
    let servers = services.rooms.remote_servers(&request.body.room_id)?;
    services.outgoing.send_edu(
        &servers,
        &serde_json::json!({
            "edu_type": "m.typing",
            "content": {
                "room_id": request.body.room_id,
                "user_id": user,
                "typing": timeout.is_some(),
            },
        }),
    )?;
    Ok(create_typing_event::v3::Response::new())
}

/// Records a receipt, waking the room (or only the user, for private ones and markers).
fn record(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
    receipt_type: &str,
    event_id: &EventId,
    thread: Option<String>,
) -> Result<()> {
    let pdu = services
        .rooms
        .pdu(event_id)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    if pdu.room_id != room_id {
        return Err(Error::not_found("Event not found"));
    }
    if receipt_type == "m.fully_read" {
        return services.account_data.set(
            user,
            Some(room_id),
            "m.fully_read",
            serde_json::json!({ "event_id": event_id }),
        );
    }
    let notify = if receipt_type == "m.read" {
        services
            .rooms
            .members_with(room_id, MembershipState::Join)?
    } else {
        vec![user.to_owned()]
    };
    services.receipts.set(
        room_id,
        user,
        receipt_type,
        event_id,
        thread.clone(),
        &notify,
    )?;
    if receipt_type == "m.read" {
        let mut data = serde_json::json!({ "ts": crate::service::users::now_ms() });
        if let Some(thread) = thread {
            data["thread_id"] = thread.into();
        }
        let servers = services.rooms.remote_servers(room_id)?;
        services.outgoing.send_edu(
            &servers,
            &serde_json::json!({
                "edu_type": "m.receipt",
                "content": {
                    room_id.as_str(): {
                        "m.read": {
                            user.as_str(): { "event_ids": [event_id], "data": data },
                        },
                    },
                },
            }),
        )?;
    }
    Ok(())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
async fn receipt(
    services: Arc<Services>,
    request: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response> {
    let user = request.user_id()?;
    let body = &request.body;
    services.rooms.require_joined(&body.room_id, user)?;
    let receipt_type = match &body.receipt_type {
        ReceiptType::Read => "m.read",
        ReceiptType::ReadPrivate => "m.read.private",
        ReceiptType::FullyRead => "m.fully_read",
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {}",
                other.as_str()
            )));
        }
    };
    let thread = match &body.thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(root) => Some(root.to_string()),
        _ => return Err(Error::invalid_param("Unknown thread id")),
    };
    if receipt_type == "m.fully_read" && thread.is_some() {
        return Err(Error::invalid_param("m.fully_read cannot be threaded"));
    }
    record(
        &services,
        &body.room_id,
        user,
        receipt_type,
        &body.event_id,
        thread,
    )?;
    services.federation.presence.was_active(user);
    Ok(create_receipt::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
async fn read_markers(
    services: Arc<Services>,
    request: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let user = request.user_id()?;
    let body = &request.body;
    services.rooms.require_joined(&body.room_id, user)?;
    if let Some(event_id) = &body.fully_read {
        record(
            &services,
            &body.room_id,
            user,
            "m.fully_read",
            event_id,
            None,
        )?;
    }
    if let Some(event_id) = &body.read_receipt {
        record(&services, &body.room_id, user, "m.read", event_id, None)?;
    }
    if let Some(event_id) = &body.private_read_receipt {
        record(
            &services,
            &body.room_id,
            user,
            "m.read.private",
            event_id,
            None,
        )?;
    }
    services.federation.presence.was_active(user);
    Ok(set_read_marker::v3::Response::new())
}
