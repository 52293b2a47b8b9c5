//! Invites across servers (`/_matrix/federation/v2/invite`): this server's users
//! inviting users of other servers, and invites of this server's users arriving.

use ruma::{
    CanonicalJsonObject, RoomId, RoomVersionId, ServerName, UserId,
    api::federation::{
        membership::{RawStrippedState, create_invite},
        query::get_profile_information,
    },
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::{Value, json};

use super::{join::Memberships, pdu::verify_pdu};
use crate::{
    Error, Result,
    service::rooms::{
        Rooms, incoming::Relay, membership::membership_in, pdu::SignedPdu, remote_invite::strip,
        timeline::NewEvent,
    },
};

/// How long an invite waits for the invitee's profile from their server.
const PROFILE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Memberships {
    /// Another server's user's display name and avatar, asked of their server; nothing
    /// if it does not answer within [`PROFILE_WAIT`] (the invite goes out regardless).
    async fn invitee_profile(&self, user: &UserId) -> Vec<(&'static str, String)> {
        let request = get_profile_information::v1::Request::new(user.to_owned());
        let answer =
            tokio::time::timeout(PROFILE_WAIT, self.client.send(user.server_name(), request)).await;
        let Ok(Ok(answer)) = answer else {
            return Vec::new();
        };
        let mut fields = Vec::new();
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = answer.data.get(field).and_then(|value| value.as_str()) {
                fields.push((field, value.to_owned()));
            }
        }
        fields
    }

    /// Invites a user of another server: the invite goes to their server to be
    /// countersigned, then into the room and to the room's other servers.
    pub async fn invite_remote(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<()> {
        if !self.enabled {
            return Err(Error::forbidden("This server does not federate"));
        }
        let mut content = json!({ "membership": MembershipState::Invite.as_str() });
        // The invitee's profile, as their server gives it, so the inviter's client can
        // name the room after them (a new direct chat).
        for (field, value) in self.invitee_profile(target).await {
            content[field] = value.into();
        }
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        if is_direct {
            content["is_direct"] = true.into();
        }
        let (version, invite) = self.rooms.prepare_event(
            room_id,
            sender,
            NewEvent::state("m.room.member", target.as_str(), content),
        )?;
        let raw = Rooms::raw_object(&invite.object)?;
        let stripped = self
            .rooms
            .invite_state(room_id, sender)?
            .into_iter()
            .map(RawStrippedState::Pdu)
            .collect();
        let request = create_invite::v2::Request::new(
            room_id.to_owned(),
            invite.event_id.clone(),
            version.clone(),
            raw,
            stripped,
        );
        let response = self
            .client
            .send(target.server_name(), request)
            .await
            .map_err(|error| match error.status() {
                Some(http::StatusCode::FORBIDDEN) => {
                    Error::forbidden(format!("The invitee's server refused the invite: {error}"))
                }
                _ => Error::forbidden(format!(
                    "The invitee's server could not be reached: {error}"
                )),
            })?;
        let signed = verify_pdu(&self.keys, &version, &response.event).await?;
        if signed.event_id != invite.event_id {
            return Err(Error::forbidden("The invitee's server changed the invite"));
        }
        self.rooms
            .append_remote(room_id, signed, Relay::All)
            .await?;
        Ok(())
    }

    /// An invite of one of this server's users from `origin`: checked, countersigned, kept
    /// for the invitee; the countersigned event is the answer.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        raw: &serde_json::value::RawValue,
        invite_room_state: &[RawStrippedState],
    ) -> Result<CanonicalJsonObject> {
        if !crate::service::rooms::ROOM_VERSIONS.contains(version) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                    ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
                ),
                "This server does not support the room's version",
            ));
        }
        let invite: SignedPdu = verify_pdu(&self.keys, version, raw).await?;
        let content: Value =
            serde_json::from_str(invite.pdu.content.get()).map_err(Error::internal)?;
        let invitee = invite
            .pdu
            .state_key
            .as_deref()
            .and_then(|key| UserId::parse(key).ok())
            .ok_or_else(|| Error::bad_json("An invite names its invitee in its state key"))?;
        if invite.pdu.kind != TimelineEventType::RoomMember
            || membership_in(&content) != Some(MembershipState::Invite)
            || invite
                .pdu
                .room_id
                .as_deref()
                .is_some_and(|id| id != room_id)
        {
            return Err(Error::bad_json("Not an invite into this room"));
        }
        if invite.pdu.sender.server_name() != origin {
            return Err(Error::forbidden(
                "The inviter is not of the requesting server",
            ));
        }
        if invitee.server_name() != self.server_name || !self.users.exists(&invitee)? {
            return Err(Error::not_found("Unknown user"));
        }
        let rules = Rooms::rules(version)?;
        let mut object = invite.object.clone();
        self.signing_key
            .countersign_event(&self.server_name, &mut object, &rules.redaction)
            .map_err(Error::internal)?;
        let countersigned = SignedPdu {
            object: object.clone(),
            ..invite
        };
        let stripped = stripped_state(invite_room_state, &object)?;
        self.rooms
            .store_remote_membership(
                room_id,
                &invitee,
                MembershipState::Invite,
                countersigned,
                stripped,
            )
            .await?;
        Ok(object)
    }
}

/// What an invite or knock shows a user of a room this server is not in: the room's
/// state events the other server sent (full PDUs, or stripped ones from servers before
/// Matrix 1.16), stripped, and the user's own membership event.
pub fn stripped_state(
    room_state: &[RawStrippedState],
    membership_event: &CanonicalJsonObject,
) -> Result<Vec<Value>> {
    let mut stripped: Vec<Value> = room_state
        .iter()
        .filter_map(|state| {
            let raw = match state {
                RawStrippedState::Pdu(raw) => raw.get(),
                #[allow(deprecated)]
                RawStrippedState::Stripped(raw) => raw.json().get(),
                _ => return None,
            };
            serde_json::from_str::<Value>(raw)
                .ok()
                .map(|event| strip(&event))
        })
        .collect();
    stripped.push(strip(
        &serde_json::to_value(membership_event).map_err(Error::internal)?,
    ));
    Ok(stripped)
}
