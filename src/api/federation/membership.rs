//! Joins and leaves of other servers' users: the templates (`make_join`, `make_leave`)
//! and the signed events (`send_join`, `send_leave`).

use std::sync::Arc;

use axum::Router;
use ruma::{
    RoomId, ServerName, UserId,
    api::{
        error::ErrorKind,
        federation::membership::{
            create_invite, create_join_event, create_knock_event, create_leave_event,
            prepare_join_event, prepare_knock_event, prepare_leave_event,
        },
    },
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::json;

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        federation::pdu::verify_pdu,
        rooms::{incoming::Relay, membership::membership_in, pdu::SignedPdu, timeline::NewEvent},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(make_join)
        .ruma_route(send_join)
        .ruma_route(make_leave)
        .ruma_route(send_leave)
        .ruma_route(invite)
        .ruma_route(make_knock)
        .ruma_route(send_knock)
}

/// # `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
async fn make_knock(
    services: Arc<Services>,
    request: Ruma<prepare_knock_event::v1::Request>,
) -> Result<prepare_knock_event::v1::Response> {
    let body = &request.body;
    let (version, raw) = membership_template(
        &services,
        request.origin()?,
        &body.room_id,
        &body.user_id,
        Some(&body.ver),
        MembershipState::Knock,
    )?;
    Ok(prepare_knock_event::v1::Response::new(version, raw))
}

/// # `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
async fn send_knock(
    services: Arc<Services>,
    request: Ruma<create_knock_event::v1::Request>,
) -> Result<create_knock_event::v1::Response> {
    let origin = request.origin()?.to_owned();
    let body = request.body;
    let knock = accept_membership(
        &services,
        &origin,
        &body.room_id,
        &body.event_id,
        &body.pdu,
        MembershipState::Knock,
    )
    .await?;
    let state = services
        .rooms
        .invite_state(&body.room_id, &knock.pdu.sender)?
        .into_iter()
        .map(ruma::api::federation::membership::RawStrippedState::Pdu)
        .collect();
    Ok(create_knock_event::v1::Response::new(state))
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
async fn invite(
    services: Arc<Services>,
    request: Ruma<create_invite::v2::Request>,
) -> Result<create_invite::v2::Response> {
    let origin = request.origin()?.to_owned();
    let body = request.body;
    if services.rooms.exists(&body.room_id)? {
        super::require_allowed(&services, &origin, &body.room_id)?;
    }
    let signed = crate::service::federation::invite::receive_invite(
        &services,
        &origin,
        &body.room_id,
        &body.room_version,
        &body.event,
        &body.invite_room_state,
    )
    .await?;
    if crate::service::federation::pdu::event_id_of(&signed, &body.room_version)? != body.event_id {
        return Err(Error::bad_json("The event id does not match the event"));
    }
    let raw = serde_json::value::to_raw_value(&signed).map_err(Error::internal)?;
    Ok(create_invite::v2::Response::new(raw))
}

fn require_user_of(origin: &ServerName, user: &UserId) -> Result<()> {
    if user.server_name() != origin {
        return Err(Error::forbidden("The user is not of the requesting server"));
    }
    Ok(())
}

/// A membership template for another server's user (`make_join`, `make_knock`,
/// `make_leave`): the user is the origin's, the origin is not denied, and the origin
/// supports the room's version when it says which it supports.
fn membership_template(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    supported: Option<&[ruma::RoomVersionId]>,
    membership: MembershipState,
) -> Result<(ruma::RoomVersionId, Box<serde_json::value::RawValue>)> {
    require_user_of(origin, user_id)?;
    super::require_allowed(services, origin, room_id)?;
    let room = services
        .rooms
        .room(room_id)?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    if supported.is_some_and(|supported| !supported.contains(&room.version)) {
        return Err(Error::new(
            ErrorKind::IncompatibleRoomVersion(
                ruma::api::error::IncompatibleRoomVersionErrorData::new(room.version.clone()),
            ),
            "Your server does not support this room's version",
        ));
    }
    let event = NewEvent::state(
        "m.room.member",
        user_id.as_str(),
        json!({ "membership": membership.as_str() }),
    );
    let (version, object) = services.rooms.template(room_id, user_id, event)?;
    let raw = serde_json::value::to_raw_value(&object).map_err(Error::internal)?;
    Ok((version, raw))
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn make_join(
    services: Arc<Services>,
    request: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    let body = &request.body;
    let (version, raw) = membership_template(
        &services,
        request.origin()?,
        &body.room_id,
        &body.user_id,
        Some(&body.ver),
        MembershipState::Join,
    )?;
    let mut response = prepare_join_event::v1::Response::new(raw);
    response.room_version = Some(version);
    Ok(response)
}

/// Checks a signed membership event sent back after a template and appends it,
/// forwarding it to the room's other servers.
async fn accept_membership(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &ruma::EventId,
    raw: &serde_json::value::RawValue,
    membership: MembershipState,
) -> Result<SignedPdu> {
    let room = services
        .rooms
        .room(room_id)?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    super::require_allowed(services, origin, room_id)?;
    let event = verify_pdu(services, &room.version, raw).await?;
    if event.event_id != event_id {
        return Err(Error::bad_json("The event id does not match the event"));
    }
    let state_key = event.pdu.state_key.as_deref().unwrap_or_default();
    let content: serde_json::Value =
        serde_json::from_str(event.pdu.content.get()).map_err(Error::internal)?;
    if event.pdu.kind != TimelineEventType::RoomMember
        || event.pdu.room_id.as_deref() != Some(room_id)
        || state_key != event.pdu.sender.as_str()
        || membership_in(&content).as_ref() != Some(&membership)
    {
        return Err(Error::bad_json(format!(
            "Not a {} event of its sender in this room",
            membership.as_str()
        )));
    }
    require_user_of(origin, &event.pdu.sender)?;
    services
        .rooms
        .append_remote(room_id, event.clone(), Relay::AllBut(origin.to_owned()))
        .await?;
    Ok(event)
}

/// # `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn send_join(
    services: Arc<Services>,
    request: Ruma<create_join_event::v2::Request>,
) -> Result<create_join_event::v2::Response> {
    let origin = request.origin()?.to_owned();
    let body = request.body;
    let event = accept_membership(
        &services,
        &origin,
        &body.room_id,
        &body.event_id,
        &body.pdu,
        MembershipState::Join,
    )
    .await?;
    let (state, auth_chain) = services
        .rooms
        .state_and_auth_chain_before(&event.event_id)?;
    let mut room_state = create_join_event::v2::RoomState::new();
    for id in state.values() {
        if let Some(raw) = services.rooms.raw_pdu(id)? {
            room_state.state.push(raw);
        }
    }
    for id in &auth_chain {
        if let Some(raw) = services.rooms.raw_pdu(id)? {
            room_state.auth_chain.push(raw);
        }
    }
    let mut servers: Vec<String> = services
        .rooms
        .remote_servers(&body.room_id)?
        .into_iter()
        .map(|server| server.to_string())
        .collect();
    servers.push(services.config.server_name.to_string());
    room_state.servers_in_room = Some(servers);
    Ok(create_join_event::v2::Response::new(room_state))
}

/// # `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
async fn make_leave(
    services: Arc<Services>,
    request: Ruma<prepare_leave_event::v1::Request>,
) -> Result<prepare_leave_event::v1::Response> {
    let body = &request.body;
    let (version, raw) = membership_template(
        &services,
        request.origin()?,
        &body.room_id,
        &body.user_id,
        None,
        MembershipState::Leave,
    )?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), raw))
}

/// # `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
async fn send_leave(
    services: Arc<Services>,
    request: Ruma<create_leave_event::v2::Request>,
) -> Result<create_leave_event::v2::Response> {
    let origin = request.origin()?.to_owned();
    let body = request.body;
    accept_membership(
        &services,
        &origin,
        &body.room_id,
        &body.event_id,
        &body.pdu,
        MembershipState::Leave,
    )
    .await?;
    Ok(create_leave_event::v2::Response::new())
}
