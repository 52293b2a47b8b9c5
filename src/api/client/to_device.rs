//! Sending to-device messages.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::api::client::to_device::send_event_to_device;
use serde_json::Value;

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{Services, to_device},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(send)
}

/// # `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
///
/// A transaction id already used by this device for this event type answers at once
/// without sending again.
async fn send(
    services: Arc<Services>,
    request: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let event_type = body.event_type.to_string();
    let txn = to_device::txn_key(
        &sender.user_id,
        &sender.txn_scope(),
        &event_type,
        body.txn_id.as_str(),
    );
    if services.to_device.seen(&txn)? {
        return Ok(send_event_to_device::v3::Response::new());
    }
    let mut messages = BTreeMap::new();
    for (user, devices) in &body.messages {
        let mut contents = BTreeMap::new();
        for (device, raw) in devices {
            let content: Value = raw
                .deserialize_as_unchecked()
                .map_err(|error| Error::bad_json(format!("Invalid message content: {error}")))?;
            if !content.is_object() {
                return Err(Error::bad_json("A message's content must be an object"));
            }
            contents.insert(device.clone(), content);
        }
        messages.insert(user.clone(), contents);
    }
    services
        .federation
        .to_device
        .send(&sender.user_id, &event_type, messages, txn)?;
    Ok(send_event_to_device::v3::Response::new())
}
