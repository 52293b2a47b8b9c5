//! Membership: invite, join, leave, forget, kick, ban, unban.

use std::sync::Arc;

use axum::Router;
use ruma::events::room::{
    guest_access::{GuestAccess, RoomGuestAccessEventContent},
    member::MembershipState,
};
use ruma::{
    OwnedRoomId, RoomId, RoomOrAliasId, UserId,
    api::{
        IncomingRequest,
        client::{
            knock::knock_room,
            membership::{
                ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias,
                kick_user, leave_room, unban_user,
            },
        },
    },
};

use crate::service::users::Sender;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(invite)
        .ruma_route(join_by_id)
        .ruma_route(join_by_id_or_alias)
        .ruma_route(knock)
        .ruma_route(leave)
        .ruma_route(forget)
        .ruma_route(moderate::<kick_user::v3::Request>)
        .ruma_route(moderate::<ban_user::v3::Request>)
        .ruma_route(moderate::<unban_user::v3::Request>)
}

/// Joins a room: locally when this server is in it, else through one of `via` (or the
/// server of the room id) over federation.
async fn join(
    services: &Services,
    sender: &Sender,
    room_id: &ruma::RoomId,
    via: &[ruma::OwnedServerName],
    reason: Option<&str>,
) -> Result<()> {
    let user = &sender.user_id;
    services.message_limiter.check_sender(sender)?;
    if sender.guest && !guests_may_join(services, room_id)? {
        return Err(Error::new(
            ruma::api::error::ErrorKind::GuestAccessForbidden,
            "This room does not let guests join",
        ));
    }
    let profile = services.users.member_profile(user)?;
    if services.rooms.is_resident(room_id)? || !services.config.federation.enabled {
        match services.rooms.join(room_id, user, &profile, reason).await {
            // A restricted room this server cannot let the user into: another server
            // of the room may.
            Err(error)
                if services.config.federation.enabled
                    && matches!(
                        error.kind(),
                        Some(
                            ruma::api::error::ErrorKind::UnableToGrantJoin
                                | ruma::api::error::ErrorKind::UnableToAuthorizeJoin
                        )
                    ) =>
            {
                services
                    .federation
                    .memberships
                    .join_resident_through_others(user, room_id, via, &profile, reason)
                    .await?;
            }
            joined => {
                joined?;
            }
        }
    } else {
        // An invite names a server that is in the room: the inviter's.
        let mut via = via.to_vec();
        if let Some(server) = services.rooms.remote_membership_server(room_id, user)? {
            via.insert(0, server);
        }
        services
            .federation
            .memberships
            .join_remote(user, room_id, &via, &profile, reason)
            .await?;
    }
    // The join stands whatever happens to what follows the user from an old room.
    if let Err(error) = crate::service::upgrade_carry_over::carry_over(
        &services.rooms,
        &services.account_data,
        &services.push.rules,
        user,
        room_id,
    ) {
        tracing::warn!(%user, %room_id, %error, "tags and rules not carried into an upgraded room");
    }
    Ok(())
}

/// Whether guests may join: the room's `m.room.guest_access` is `can_join`. Only a room
/// this server is in can be told; guests do not join rooms elsewhere.
fn guests_may_join(services: &Services, room_id: &ruma::RoomId) -> Result<bool> {
    if !services.rooms.is_resident(room_id)? {
        return Ok(false);
    }
    Ok(services
        .rooms
        .state_content(room_id, "m.room.guest_access", "")?
        .and_then(|content| serde_json::from_value::<RoomGuestAccessEventContent>(content).ok())
        .is_some_and(|content| content.guest_access == GuestAccess::CanJoin))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
async fn invite(
    services: Arc<Services>,
    request: Ruma<invite_user::v3::Request>,
) -> Result<invite_user::v3::Response> {
    let sender = request.user_id()?;
    services.message_limiter.check_sender(request.sender()?)?;
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &request.body.recipient else {
        return Err(Error::new(
            ruma::api::error::ErrorKind::ThreepidDenied,
            "Third-party invites are not supported",
        ));
    };
    if recipient.user_id.server_name() == services.config.server_name
        && !super::appservice::local_user_exists(&services, &recipient.user_id).await?
    {
        return Err(Error::not_found("Unknown user"));
    }
    services
        .rooms
        .require_joined(&request.body.room_id, sender)?;
    if recipient.user_id.server_name() != services.config.server_name {
        if !services.config.federation.enabled {
            return Err(Error::forbidden("This server does not federate"));
        }
        if let Some(current) = services
            .rooms
            .member_state(&request.body.room_id, &recipient.user_id)?
            && matches!(current, MembershipState::Join | MembershipState::Ban)
        {
            return Err(Error::forbidden(format!(
                "The user's membership is {current}"
            )));
        }
        services
            .federation
            .memberships
            .invite_remote(
                &request.body.room_id,
                sender,
                &recipient.user_id,
                recipient.reason.as_deref(),
                false,
            )
            .await?;
        return Ok(invite_user::v3::Response::new());
    }
    services
        .rooms
        .invite(
            &request.body.room_id,
            sender,
            (
                &recipient.user_id,
                &services.users.member_profile(&recipient.user_id)?,
            ),
            recipient.reason.as_deref(),
            false,
        )
        .await?;
    Ok(invite_user::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
async fn join_by_id(
    services: Arc<Services>,
    request: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    join(
        &services,
        request.sender()?,
        &request.body.room_id,
        &[],
        request.body.reason.as_deref(),
    )
    .await?;
    Ok(join_room_by_id::v3::Response::new(
        request.body.room_id.clone(),
    ))
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
async fn join_by_id_or_alias(
    services: Arc<Services>,
    request: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let (room_id, mut via) = resolve(&services, &request.body.room_id_or_alias).await?;
    via.extend(request.body.via.iter().cloned());
    join(
        &services,
        request.sender()?,
        &room_id,
        &via,
        request.body.reason.as_deref(),
    )
    .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

/// # `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
async fn knock(
    services: Arc<Services>,
    request: Ruma<knock_room::v3::Request>,
) -> Result<knock_room::v3::Response> {
    let user = request.user_id()?;
    services.message_limiter.check_sender(request.sender()?)?;
    let (room_id, mut via) = resolve(&services, &request.body.room_id_or_alias).await?;
    via.extend(request.body.via.iter().cloned());
    let reason = request.body.reason.as_deref();
    if services.rooms.is_resident(&room_id)? || !services.config.federation.enabled {
        if !services.rooms.exists(&room_id)? {
            return Err(Error::not_found("Unknown room"));
        }
        let profile = services.users.member_profile(user)?;
        services
            .rooms
            .knock(&room_id, user, &profile, reason)
            .await?;
    } else {
        services
            .federation
            .memberships
            .knock_remote(user, &room_id, &via, reason)
            .await?;
    }
    Ok(knock_room::v3::Response::new(room_id))
}

/// A room id, or the room an alias names and the servers the alias's server knows in it.
pub(super) async fn resolve(
    services: &Services,
    target: &RoomOrAliasId,
) -> Result<(OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    match <&ruma::RoomId>::try_from(target) {
        Ok(room_id) => Ok((room_id.to_owned(), Vec::new())),
        Err(alias) if alias.server_name() == services.config.server_name => Ok((
            super::appservice::local_alias(services, alias)
                .await?
                .ok_or_else(|| Error::not_found("Unknown room alias"))?
                .room_id,
            Vec::new(),
        )),
        Err(_) if !services.config.federation.enabled => {
            Err(Error::not_found("Unknown room alias"))
        }
        Err(alias) => {
            services
                .federation
                .memberships
                .resolve_remote_alias(alias)
                .await
        }
    }
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
async fn leave(
    services: Arc<Services>,
    request: Ruma<leave_room::v3::Request>,
) -> Result<leave_room::v3::Response> {
    let (room_id, user) = (&request.body.room_id, request.user_id()?);
    // Declining an invite into (or retracting a knock on) a room this server is not in
    // goes through that room's servers.
    if let Some(server) = services.rooms.remote_membership_server(room_id, user)?
        && !services.rooms.is_resident(room_id)?
    {
        services
            .federation
            .memberships
            .decline_remote_invite(user, room_id, Some(&server), request.body.reason.as_deref())
            .await?;
        return Ok(leave_room::v3::Response::new());
    }
    services
        .rooms
        .leave(room_id, user, request.body.reason.as_deref())
        .await?;
    Ok(leave_room::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
async fn forget(
    services: Arc<Services>,
    request: Ruma<forget_room::v3::Request>,
) -> Result<forget_room::v3::Response> {
    services
        .rooms
        .forget(&request.body.room_id, request.user_id()?)?;
    Ok(forget_room::v3::Response::new())
}

/// What kick, ban and unban share: a member with the power sets another member's
/// membership.
trait Moderation: IncomingRequest {
    /// The membership the target is given.
    const MEMBERSHIP: MembershipState;
    /// Refuses a target whose current membership this action may not change.
    fn applies_to(current: Option<&MembershipState>) -> Result<()>;
    fn parts(&self) -> (&RoomId, &UserId, Option<&str>);
    fn response() -> Self::OutgoingResponse;
}

impl Moderation for kick_user::v3::Request {
    const MEMBERSHIP: MembershipState = MembershipState::Leave;
    /// A kick never lifts a ban, though the event would be the same as an unban's.
    fn applies_to(current: Option<&MembershipState>) -> Result<()> {
        match current {
            Some(MembershipState::Ban) => Err(Error::forbidden(
                "The user is banned: unban them to lift the ban",
            )),
            _ => Ok(()),
        }
    }
    fn parts(&self) -> (&RoomId, &UserId, Option<&str>) {
        (&self.room_id, &self.user_id, self.reason.as_deref())
    }
    fn response() -> Self::OutgoingResponse {
        kick_user::v3::Response::new()
    }
}

impl Moderation for ban_user::v3::Request {
    const MEMBERSHIP: MembershipState = MembershipState::Ban;
    fn applies_to(_: Option<&MembershipState>) -> Result<()> {
        Ok(())
    }
    fn parts(&self) -> (&RoomId, &UserId, Option<&str>) {
        (&self.room_id, &self.user_id, self.reason.as_deref())
    }
    fn response() -> Self::OutgoingResponse {
        ban_user::v3::Response::new()
    }
}

impl Moderation for unban_user::v3::Request {
    const MEMBERSHIP: MembershipState = MembershipState::Leave;
    fn applies_to(current: Option<&MembershipState>) -> Result<()> {
        match current {
            Some(MembershipState::Ban) => Ok(()),
            _ => Err(Error::forbidden("The user is not banned")),
        }
    }
    fn parts(&self) -> (&RoomId, &UserId, Option<&str>) {
        (&self.room_id, &self.user_id, self.reason.as_deref())
    }
    fn response() -> Self::OutgoingResponse {
        unban_user::v3::Response::new()
    }
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`, `…/ban` and `…/unban`
async fn moderate<R: Moderation>(
    services: Arc<Services>,
    request: Ruma<R>,
) -> Result<R::OutgoingResponse> {
    let (room_id, target, reason) = request.body.parts();
    R::applies_to(services.rooms.member_state(room_id, target)?.as_ref())?;
    services
        .rooms
        .set_membership_of(room_id, request.user_id()?, target, R::MEMBERSHIP, reason)
        .await?;
    Ok(R::response())
}
