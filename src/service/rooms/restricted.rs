//! Restricted joins: a room whose join rule is `restricted` (or `knock_restricted`) lets
//! in the members of the rooms its allow list names, without an invite. A resident
//! server vouches for each such join: it names one of its users who may invite in the
//! join event's `join_authorised_via_users_server`, and signs the event.

use ruma::{
    CanonicalJsonValue, OwnedUserId, RoomId, UserId,
    api::error::ErrorKind,
    canonical_json::CanonicalJsonObject,
    events::room::member::MembershipState,
    room::{AllowRule, JoinRule},
};

use super::Rooms;
use crate::{Error, Result};

/// The content key naming the user who vouches for a restricted join.
pub const AUTHORISED_VIA: &str = "join_authorised_via_users_server";

impl Rooms {
    /// The local user who vouches for `user` joining the room, when the room is
    /// restricted and `user` is neither invited nor joined; `None` when no one needs to.
    ///
    /// Fails with `M_UNABLE_TO_AUTHORISE_JOIN` when this server is in none of the allowed
    /// rooms (it cannot tell), `M_FORBIDDEN` when the user is in none of them, and
    /// `M_UNABLE_TO_GRANT_JOIN` when no local member may invite (another server may).
    pub fn join_voucher(&self, room_id: &RoomId, user: &UserId) -> Result<Option<OwnedUserId>> {
        let state = self.current_state(room_id)?;
        let Some(rules) = self.content_in(&state, "m.room.join_rules", "")? else {
            return Ok(None);
        };
        let allow = match serde_json::from_value::<JoinRule>(rules) {
            Ok(JoinRule::Restricted(restricted) | JoinRule::KnockRestricted(restricted)) => {
                restricted.allow
            }
            _ => return Ok(None),
        };
        let current = self
            .content_in(&state, "m.room.member", user.as_str())?
            .as_ref()
            .and_then(super::membership::membership_in);
        if matches!(
            current,
            Some(MembershipState::Join | MembershipState::Invite)
        ) {
            return Ok(None);
        }
        let mut known_any = false;
        let mut member = false;
        for rule in &allow {
            let AllowRule::RoomMembership(rule) = rule else {
                continue;
            };
            if !self.is_resident(&rule.room_id)? {
                continue;
            }
            known_any = true;
            let allowed_state = self.current_state(&rule.room_id)?;
            let membership = self
                .content_in(&allowed_state, "m.room.member", user.as_str())?
                .as_ref()
                .and_then(super::membership::membership_in);
            if membership == Some(MembershipState::Join) {
                member = true;
                break;
            }
        }
        if !known_any {
            return Err(Error::new(
                ErrorKind::UnableToAuthorizeJoin,
                "This server is in none of the rooms that allow joining this one",
            ));
        }
        if !member {
            return Err(Error::forbidden(
                "You are not invited and in none of the rooms that allow joining this one",
            ));
        }
        let levels = self.power_levels(room_id)?;
        let voucher = self
            .members_with(room_id, MembershipState::Join)?
            .into_iter()
            .filter(|member| member.server_name() == self.server_name)
            .filter(|member| levels.user_can_invite(member))
            .max_by(|a, b| {
                levels
                    .for_user(a)
                    .cmp(&levels.for_user(b))
                    .then_with(|| b.cmp(a))
            });
        voucher.map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::UnableToGrantJoin,
                "No user of this server may let you in; try another server of the room",
            )
        })
    }

    /// Adds this server's signature to a join another server's user sent back after a
    /// restricted template, when one of this server's users vouches for it and the
    /// allow list lets the user in. Whether the voucher may invite, the room's
    /// authorisation rules decide when the event is appended.
    pub fn vouch_for(
        &self,
        room_id: &RoomId,
        version: &ruma::RoomVersionId,
        object: &mut CanonicalJsonObject,
    ) -> Result<bool> {
        let text = |value: Option<&CanonicalJsonValue>| match value {
            Some(CanonicalJsonValue::String(text)) => UserId::parse(text.as_str()).ok(),
            _ => None,
        };
        let voucher = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => text(content.get(AUTHORISED_VIA)),
            _ => None,
        };
        if voucher.is_none_or(|voucher| voucher.server_name() != self.server_name) {
            return Ok(false);
        }
        let sender = text(object.get("sender"))
            .ok_or_else(|| Error::bad_json("The join has no valid sender"))?;
        self.join_voucher(room_id, &sender)?;
        let rules = Self::rules(version)?;
        self.signing_key
            .countersign_event(&self.server_name, object, &rules.redaction)
            .map_err(Error::internal)?;
        Ok(true)
    }
}
