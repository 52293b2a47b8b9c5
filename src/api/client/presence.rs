//! Presence: a user's online state and status message.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        presence::{ONLINE, PresenceRecord},
        users::now_ms,
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(set).ruma_route(get)
}

/// # `PUT /_matrix/client/v3/presence/{userId}/status`
async fn set(
    services: Arc<Services>,
    request: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response> {
    let user = request.user_id()?;
    if user != request.body.user_id {
        return Err(Error::forbidden("You can only set your own presence"));
    }
    let presence = request.body.presence.as_str();
    let now = now_ms();
    let last_active_ts = match services.presence.get(user)? {
        // Only coming online is activity.
        Some(current) if presence != ONLINE => current.last_active_ts,
        _ => now,
    };
    services.federation.presence.publish(
        user,
        PresenceRecord {
            presence: presence.to_owned(),
            status_msg: request.body.status_msg.clone(),
            last_active_ts,
            updated_ts: now,
        },
    )?;
    Ok(set_presence::v3::Response::new())
}

/// # `GET /_matrix/client/v3/presence/{userId}/status`
async fn get(
    services: Arc<Services>,
    request: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response> {
    let user = &request.body.user_id;
    let Some(record) = services.presence.get(user)? else {
        // Someone who never set a presence is offline, as far as anyone knows.
        if user.server_name() == services.config.server_name && !services.users.exists(user)? {
            return Err(Error::not_found("No such user"));
        }
        return Ok(get_presence::v3::Response::new(PresenceState::Offline));
    };
    let mut response = get_presence::v3::Response::new(record.presence.as_str().into());
    response.status_msg = record.status_msg.clone();
    response.currently_active = Some(record.currently_active());
    response.last_active_ago = Some(Duration::from_millis(record.last_active_ago()));
    Ok(response)
}
