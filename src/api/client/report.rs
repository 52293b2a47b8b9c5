//! Reporting abuse to this server's administrators: an event, a room or a user.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{Services, reports::Reported, rooms::pdu::ClientFormat},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(report_event)
        .ruma_route(report_a_room)
        .ruma_route(report_a_user)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
///
/// Only an event of a room the reporter is joined to, which they may see; any other is
/// not found.
async fn report_event(
    services: Arc<Services>,
    request: Ruma<report_content::v3::Request>,
) -> Result<report_content::v3::Response> {
    let user = request.user_id()?;
    services.message_limiter.check_sender(request.sender()?)?;
    let body = &request.body;
    let not_found =
        || Error::not_found("The event was not found or you are not joined to the room");
    if !services.rooms.is_joined(&body.room_id, user)? {
        return Err(not_found());
    }
    let visible = services
        .rooms
        .visible_event(user, None, &body.event_id, ClientFormat::Full)?;
    if visible.is_none_or(|(served, _)| served.stored.room_id != body.room_id) {
        return Err(not_found());
    }
    let reported = Reported::Event {
        room_id: body.room_id.clone(),
        event_id: body.event_id.clone(),
    };
    services
        .reports
        .file(user, reported, body.reason.as_deref())?;
    Ok(report_content::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report`
///
/// Any room this server knows; the reporter need not be in it.
async fn report_a_room(
    services: Arc<Services>,
    request: Ruma<report_room::v3::Request>,
) -> Result<report_room::v3::Response> {
    let user = request.user_id()?;
    services.message_limiter.check_sender(request.sender()?)?;
    let body = &request.body;
    if !services.rooms.exists(&body.room_id)? {
        return Err(Error::not_found("The room was not found on this server"));
    }
    let reported = Reported::Room {
        room_id: body.room_id.clone(),
    };
    services.reports.file(user, reported, Some(&body.reason))?;
    Ok(report_room::v3::Response::new())
}

/// # `POST /_matrix/client/v3/users/{userId}/report`
///
/// A local user must exist; another server's user is taken on trust (this server
/// cannot tell, and the report is for its administrators all the same).
async fn report_a_user(
    services: Arc<Services>,
    request: Ruma<report_user::v3::Request>,
) -> Result<report_user::v3::Response> {
    let user = request.user_id()?;
    services.message_limiter.check_sender(request.sender()?)?;
    let body = &request.body;
    if body.user_id.server_name() == services.config.server_name
        && !services.users.exists(&body.user_id)?
    {
        return Err(Error::not_found("The user was not found"));
    }
    let reported = Reported::User {
        user_id: body.user_id.clone(),
    };
    services.reports.file(user, reported, Some(&body.reason))?;
    Ok(report_user::v3::Response::new())
}
