//! Membership changes: join, invite, leave, kick, ban, unban, forget.
//!
//! Each is one `m.room.member` event; whether it is allowed is decided by the room's
//! authorisation rules when it is appended, not here.

use ruma::{OwnedEventId, RoomId, UserId, events::room::member::MembershipState};
use serde_json::{Value, json};

use super::{Rooms, timeline::NewEvent};
use crate::{
    Error, Result,
    storage::{Keyspace, codec::Key},
};

/// A user's display name and avatar, copied into their member events.
pub type Profile = (Option<String>, Option<String>);

/// The membership an `m.room.member` event's content sets, if it names one.
pub fn membership_in(content: &Value) -> Option<MembershipState> {
    content
        .get("membership")
        .and_then(Value::as_str)
        .map(MembershipState::from)
}

/// The display name and avatar a member event's content shows (`None` when unset or
/// not a string).
pub fn member_profile_in(content: &Value) -> (Option<String>, Option<ruma::OwnedMxcUri>) {
    let field = |name: &str| content.get(name).and_then(Value::as_str);
    (
        field("displayname").map(str::to_owned),
        field("avatar_url").map(Into::into),
    )
}

fn member_content(membership: MembershipState, profile: &Profile, reason: Option<&str>) -> Value {
    let mut content = json!({ "membership": membership.as_str() });
    if let Some(name) = &profile.0 {
        content["displayname"] = name.as_str().into();
    }
    if let Some(url) = &profile.1 {
        content["avatar_url"] = url.as_str().into();
    }
    if let Some(reason) = reason {
        content["reason"] = reason.into();
    }
    content
}

impl Rooms {
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: &Profile,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        if !self.exists(room_id)? {
            return Err(Error::not_found("No known servers for this room"));
        }
        if let Some(current) = self.membership(room_id, user)?
            && current.membership == MembershipState::Join
        {
            return Ok(current.event_id);
        }
        let mut content = member_content(MembershipState::Join, profile, reason);
        if let Some(voucher) = self.join_voucher(room_id, user)? {
            content[super::restricted::AUTHORISED_VIA] = voucher.as_str().into();
        }
        self.append(
            room_id,
            user,
            NewEvent::state("m.room.member", user.as_str(), content),
            None,
        )
        .await
    }

    /// Invites a local user; the event carries their profile, so the inviter's client
    /// can name a direct chat after them.
    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        (target, profile): (&UserId, &Profile),
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<OwnedEventId> {
        match self.member_state(room_id, target)? {
            Some(MembershipState::Join) => {
                return Err(Error::forbidden("The user is already in the room"));
            }
            Some(MembershipState::Ban) => {
                return Err(Error::forbidden("The user is banned from the room"));
            }
            _ => {}
        }
        let mut content = member_content(MembershipState::Invite, profile, reason);
        if is_direct {
            content["is_direct"] = true.into();
        }
        self.append(
            room_id,
            sender,
            NewEvent::state("m.room.member", target.as_str(), content),
            None,
        )
        .await
    }

    /// Knocks on a room this server is in.
    pub async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: &Profile,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        if let Some(current) = self.membership(room_id, user)?
            && current.membership == MembershipState::Knock
        {
            return Ok(current.event_id);
        }
        let content = member_content(MembershipState::Knock, profile, reason);
        self.append(
            room_id,
            user,
            NewEvent::state("m.room.member", user.as_str(), content),
            None,
        )
        .await
    }

    /// Leaves a room, or rejects an invite.
    pub async fn leave(&self, room_id: &RoomId, user: &UserId, reason: Option<&str>) -> Result<()> {
        let current = self.membership(room_id, user)?;
        match current.map(|m| m.membership) {
            None if !self.exists(room_id)? => return Err(Error::not_found("Unknown room")),
            None | Some(MembershipState::Leave) => return Ok(()),
            Some(MembershipState::Ban) => {
                return Err(Error::forbidden("You are banned from this room"));
            }
            _ => {}
        }
        let content = member_content(MembershipState::Leave, &(None, None), reason);
        self.append(
            room_id,
            user,
            NewEvent::state("m.room.member", user.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// Kicks, bans or unbans `target` (`membership` is leave or ban).
    pub async fn set_membership_of(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        membership: MembershipState,
        reason: Option<&str>,
    ) -> Result<()> {
        if !self.is_joined(room_id, sender)? {
            return Err(Error::forbidden("You are not in this room"));
        }
        let current = self.member_state(room_id, target)?;
        if membership == MembershipState::Leave
            && !matches!(
                current,
                Some(
                    MembershipState::Ban
                        | MembershipState::Join
                        | MembershipState::Invite
                        | MembershipState::Knock
                )
            )
        {
            return Err(Error::forbidden("The user is not in the room"));
        }
        let content = member_content(membership, &(None, None), reason);
        self.append(
            room_id,
            sender,
            NewEvent::state("m.room.member", target.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// Forgets a room the user has left: it no longer appears in their sync.
    pub fn forget(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        match self.membership(room_id, user)? {
            Some(current)
                if matches!(
                    current.membership,
                    MembershipState::Join | MembershipState::Invite | MembershipState::Knock
                ) =>
            {
                Err(Error::new(
                    ruma::api::error::ErrorKind::Unknown,
                    "Leave the room before forgetting it",
                )
                .with_status(http::StatusCode::BAD_REQUEST))
            }
            Some(_) => {
                let mut batch = self.db.batch();
                batch.delete(
                    Keyspace::UserRooms,
                    Key::new().str(user.as_str()).str(room_id.as_str()),
                );
                self.db.write(batch)?;
                Ok(())
            }
            None => Ok(()),
        }
    }
}
