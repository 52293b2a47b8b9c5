//! Joins, knocks and leaves of other servers' users: the templates (`make_join`,
//! `make_knock`, `make_leave`) and the signed events (`send_join`, `send_knock`,
//! `send_leave`); invites from other servers.

use std::sync::Arc;

use axum::Router;
use palisade_federation::v1;
use ruma::{
    RoomId, RoomVersionId, ServerName, UserId,
    api::{
        IncomingRequest,
        error::ErrorKind,
        federation::membership::{
            create_invite, create_join_event, create_knock_event, create_leave_event,
            prepare_join_event, prepare_knock_event, prepare_leave_event,
        },
    },
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::{json, value::RawValue};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        federation::pdu::verify_pdu,
        rooms::{
            RoomRecord, Rooms, incoming::Relay, membership::membership_in, pdu::SignedPdu,
            restricted::AUTHORISED_VIA, timeline::NewEvent,
        },
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(make_membership::<prepare_join_event::v1::Request>)
        .ruma_route(send_join)
        .ruma_route(send_join_v1)
        .ruma_route(make_membership::<prepare_leave_event::v1::Request>)
        .ruma_route(send_leave)
        .ruma_route(send_leave_v1)
        .ruma_route(invite)
        .ruma_route(invite_v1)
        .ruma_route(make_membership::<prepare_knock_event::v1::Request>)
        .ruma_route(send_knock)
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
    let origin = request.origin()?;
    let body = &request.body;
    let invite = Invite {
        room_id: &body.room_id,
        event_id: &body.event_id,
        version: &body.room_version,
        event: &body.event,
        stripped: &body.invite_room_state,
    };
    Ok(create_invite::v2::Response::new(
        countersign(&services, origin, invite).await?,
    ))
}

/// An invite of another server's, as either version of the endpoint carries it.
struct Invite<'a> {
    room_id: &'a RoomId,
    event_id: &'a ruma::EventId,
    version: &'a RoomVersionId,
    event: &'a RawValue,
    stripped: &'a [ruma::api::federation::membership::RawStrippedState],
}

/// Checks an invite for a local user, keeps it and returns it countersigned.
async fn countersign(
    services: &Services,
    origin: &ServerName,
    invite: Invite<'_>,
) -> Result<Box<RawValue>> {
    if services.rooms.exists(invite.room_id)? {
        super::require_allowed(&services.rooms, origin, invite.room_id)?;
    }
    let signed = services
        .federation
        .memberships
        .receive_invite(
            origin,
            invite.room_id,
            invite.version,
            invite.event,
            invite.stripped,
        )
        .await?;
    if crate::service::federation::pdu::event_id_of(&signed, invite.version)? != invite.event_id {
        return Err(Error::bad_json("The event id does not match the event"));
    }
    serde_json::value::to_raw_value(&signed).map_err(Error::internal)
}

/// # `PUT /_matrix/federation/v1/invite/{roomId}/{eventId}` (deprecated)
///
/// Only rooms of versions 1 and 2 use it, so the room is taken to be of version 1 (the
/// two differ only in state resolution); the room's stripped state comes in the event's
/// `unsigned`.
async fn invite_v1(
    services: Arc<Services>,
    request: Ruma<v1::invite::Request>,
) -> Result<v1::invite::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    #[derive(serde::Deserialize, Default)]
    struct Unsigned {
        #[serde(default)]
        invite_room_state: Vec<ruma::api::federation::membership::RawStrippedState>,
    }
    #[derive(serde::Deserialize)]
    struct WithUnsigned {
        #[serde(default)]
        unsigned: Unsigned,
    }
    let stripped = serde_json::from_str::<WithUnsigned>(body.pdu.get())
        .map_err(|error| Error::bad_json(format!("Not an invite event: {error}")))?
        .unsigned
        .invite_room_state;
    let invite = Invite {
        room_id: &body.room_id,
        event_id: &body.event_id,
        version: &RoomVersionId::V1,
        event: &body.pdu,
        stripped: &stripped,
    };
    Ok(v1::invite::Response::new(
        countersign(&services, origin, invite).await?,
    ))
}

fn require_user_of(origin: &ServerName, user: &UserId) -> Result<()> {
    if user.server_name() != origin {
        return Err(Error::forbidden("The user is not of the requesting server"));
    }
    Ok(())
}

/// The templates another server asks for its user's membership event.
trait TemplateRequest: IncomingRequest {
    const MEMBERSHIP: MembershipState;
    /// The room, the user, and the room versions the asking server supports, if it
    /// says.
    fn parts(&self) -> (&RoomId, &UserId, Option<&[RoomVersionId]>);
    fn response(version: RoomVersionId, event: Box<RawValue>) -> Self::OutgoingResponse;
}

impl TemplateRequest for prepare_join_event::v1::Request {
    const MEMBERSHIP: MembershipState = MembershipState::Join;
    fn parts(&self) -> (&RoomId, &UserId, Option<&[RoomVersionId]>) {
        (&self.room_id, &self.user_id, Some(&self.ver))
    }
    fn response(version: RoomVersionId, event: Box<RawValue>) -> Self::OutgoingResponse {
        let mut response = prepare_join_event::v1::Response::new(event);
        response.room_version = Some(version);
        response
    }
}

impl TemplateRequest for prepare_knock_event::v1::Request {
    const MEMBERSHIP: MembershipState = MembershipState::Knock;
    fn parts(&self) -> (&RoomId, &UserId, Option<&[RoomVersionId]>) {
        (&self.room_id, &self.user_id, Some(&self.ver))
    }
    fn response(version: RoomVersionId, event: Box<RawValue>) -> Self::OutgoingResponse {
        prepare_knock_event::v1::Response::new(version, event)
    }
}

impl TemplateRequest for prepare_leave_event::v1::Request {
    const MEMBERSHIP: MembershipState = MembershipState::Leave;
    fn parts(&self) -> (&RoomId, &UserId, Option<&[RoomVersionId]>) {
        (&self.room_id, &self.user_id, None)
    }
    fn response(version: RoomVersionId, event: Box<RawValue>) -> Self::OutgoingResponse {
        prepare_leave_event::v1::Response::new(Some(version), event)
    }
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`, `make_knock`, `make_leave`
///
/// A membership template for another server's user: the user is the origin's, the
/// origin is not denied, and the origin supports the room's version when it says which
/// it supports.
async fn make_membership<R: TemplateRequest>(
    services: Arc<Services>,
    request: Ruma<R>,
) -> Result<R::OutgoingResponse> {
    let origin = request.origin()?;
    let (room_id, user_id, supported) = request.body.parts();
    let membership = R::MEMBERSHIP;
    require_user_of(origin, user_id)?;
    let room = resident_room(&services.rooms, room_id)?;
    super::require_allowed(&services.rooms, origin, room_id)?;
    if supported.is_some_and(|supported| !supported.contains(&room.version)) {
        return Err(Error::new(
            ErrorKind::IncompatibleRoomVersion(
                ruma::api::error::IncompatibleRoomVersionErrorData::new(room.version.clone()),
            ),
            "Your server does not support this room's version",
        ));
    }
    let mut content = json!({ "membership": membership.as_str() });
    if membership == MembershipState::Join
        && let Some(voucher) = services.rooms.join_voucher(room_id, user_id)?
    {
        content[AUTHORISED_VIA] = voucher.as_str().into();
    }
    let event = NewEvent::state("m.room.member", user_id.as_str(), content);
    let (version, object) = services.rooms.template(room_id, user_id, event)?;
    let raw = serde_json::value::to_raw_value(&object).map_err(Error::internal)?;
    Ok(R::response(version, raw))
}

/// A room this server is in: one it has left (or never knew) is not one it can help
/// another server join, leave or knock on.
fn resident_room(rooms: &Rooms, room_id: &RoomId) -> Result<RoomRecord> {
    match rooms.room(room_id)? {
        Some(room) if rooms.is_resident(room_id)? => Ok(room),
        _ => Err(Error::not_found("This server is not in the room")),
    }
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
    let room = resident_room(&services.rooms, room_id)?;
    super::require_allowed(&services.rooms, origin, room_id)?;
    let mut vouched = None;
    if membership == MembershipState::Join {
        let mut object: ruma::CanonicalJsonObject = serde_json::from_str(raw.get())
            .map_err(|error| Error::bad_json(format!("PDU is not canonical JSON: {error}")))?;
        if services
            .rooms
            .vouch_for(room_id, &room.version, &mut object)?
        {
            vouched = Some(Rooms::raw_object(&object)?);
        }
    }
    let raw = vouched.as_deref().unwrap_or(raw);
    let event = verify_pdu(&services.server_keys, &room.version, raw).await?;
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
    let joined = join(&services, &origin, &body.room_id, &body.event_id, &body.pdu).await?;
    let mut room_state = create_join_event::v2::RoomState::new();
    room_state.state = joined.state;
    room_state.auth_chain = joined.auth_chain;
    room_state.event = Some(joined.event);
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

/// # `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}` (deprecated)
async fn send_join_v1(
    services: Arc<Services>,
    request: Ruma<v1::send_join::Request>,
) -> Result<v1::send_join::Response> {
    let origin = request.origin()?.to_owned();
    let body = request.body;
    let joined = join(&services, &origin, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(v1::send_join::Response::new(v1::send_join::RoomState {
        origin: services.config.server_name.to_string(),
        state: joined.state,
        auth_chain: joined.auth_chain,
    }))
}

/// What a join answers with: the state before the join and its auth chain, and the
/// join as this server signed it too when one of its users vouched for it.
struct Joined {
    state: Vec<Box<RawValue>>,
    auth_chain: Vec<Box<RawValue>>,
    event: Box<RawValue>,
}

async fn join(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &ruma::EventId,
    pdu: &RawValue,
) -> Result<Joined> {
    let event = accept_membership(
        services,
        origin,
        room_id,
        event_id,
        pdu,
        MembershipState::Join,
    )
    .await?;
    let (state, auth_chain) = services
        .rooms
        .state_and_auth_chain_before(&event.event_id)?;
    let raws = |ids: &mut dyn Iterator<Item = &ruma::OwnedEventId>| -> Result<Vec<Box<RawValue>>> {
        let mut out = Vec::new();
        for id in ids {
            out.extend(services.rooms.raw_pdu(id)?);
        }
        Ok(out)
    };
    Ok(Joined {
        state: raws(&mut state.values())?,
        auth_chain: raws(&mut auth_chain.iter())?,
        event: Rooms::raw_object(&event.object)?,
    })
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

/// # `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}` (deprecated)
async fn send_leave_v1(
    services: Arc<Services>,
    request: Ruma<v1::send_leave::Request>,
) -> Result<v1::send_leave::Response> {
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
    Ok(v1::send_leave::Response::new())
}
