//! Invites (and knocks) that cross servers. Sending: the invite is built and signed here but written
//! only once the invitee's server has countersigned it. Receiving: an invite into a room
//! this server is not in is kept as an outlier with the stripped state the inviter sent,
//! so the invitee's sync can show the room.

use ruma::{OwnedUserId, RoomId, RoomVersionId, UserId, events::room::member::MembershipState};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{
    Audience, Rooms,
    pdu::SignedPdu,
    timeline::{NewEvent, PduWrite, Pending, Place},
};
use crate::{
    Result,
    storage::{Keyspace, codec::Key},
};

/// The state types an invite shows of the room.
pub const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

impl Rooms {
    /// Builds, signs and authorises the room's next event without writing it (for an
    /// invite another server must countersign first).
    pub fn prepare_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
    ) -> Result<(RoomVersionId, SignedPdu)> {
        let head = self
            .head(room_id)?
            .ok_or_else(|| crate::Error::forbidden("You are not in this room"))?;
        let state = self.state.get(head.record.state_group)?;
        let event = self.build_on_head(&head, &state, sender, &event)?;
        Ok((head.record.version, event))
    }

    /// The room's current state events an invite carries (full PDUs, as the spec asks
    /// since 1.16), with the inviter's member event.
    pub fn invite_state(&self, room_id: &RoomId, inviter: &UserId) -> Result<Vec<Box<RawValue>>> {
        let state = self.current_state(room_id)?;
        let mut wanted: Vec<(String, String)> = STRIPPED_STATE_TYPES
            .iter()
            .map(|kind| ((*kind).to_owned(), String::new()))
            .collect();
        wanted.push(("m.room.member".to_owned(), inviter.to_string()));
        let mut out = Vec::new();
        for key in wanted {
            if let Some(id) = state.get(&key)
                && let Some(raw) = self.raw_pdu(id)?
            {
                out.push(raw);
            }
        }
        Ok(out)
    }

    /// Keeps an invite of a local user into a room of another server, or a local user's
    /// knock on one (`membership`): the event as an outlier, the user's membership, and
    /// what the room looks like; wakes the user.
    pub async fn store_remote_membership(
        &self,
        room_id: &RoomId,
        invitee: &UserId,
        membership: MembershipState,
        invite: SignedPdu,
        stripped: Vec<Value>,
    ) -> Result<()> {
        let guard = self.lock(room_id).lock_owned().await;
        let version = match self.room(room_id)? {
            Some(room) => room.version,
            None => RoomVersionId::V11,
        };
        let rules = Self::rules(&version)?;
        let mut batch = self.db.batch();
        let permit = self.stream.next();
        let event_id = invite.event_id.clone();
        if !self.knows(&event_id)? {
            let write = PduWrite {
                event: invite,
                txn: None,
                place: Place::Outlier,
            };
            self.stage_pdu(&mut batch, room_id, &rules, write)?;
        }
        self.index_membership(
            &mut batch,
            room_id,
            invitee,
            &membership,
            &event_id,
            permit.position(),
        )?;
        batch.put_json(
            Keyspace::InviteStates,
            Key::new().str(invitee.as_str()).str(room_id.as_str()),
            &stripped,
        );
        permit.persist_in(&mut batch);
        let pending = Pending {
            batch,
            permits: vec![permit],
            woken: Audience {
                users: vec![invitee.to_owned()],
                servers: Vec::new(),
            },
            redacted: None,
        };
        self.commit(pending, guard).await
    }

    /// The stripped state an invite from another server showed (empty if none).
    pub fn remote_invite_state(&self, invitee: &UserId, room_id: &RoomId) -> Result<Vec<Value>> {
        Ok(self
            .db
            .get_json(
                Keyspace::InviteStates,
                Key::new()
                    .str(invitee.as_str())
                    .str(room_id.as_str())
                    .bytes(),
            )?
            .unwrap_or_default())
    }

    /// For a user's pending invite into (or knock on) a room this server is not in, the
    /// server to go through: the inviter's, or for a knock the room's.
    pub fn remote_membership_server(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<ruma::OwnedServerName>> {
        let Some(membership) = self.membership(room_id, user)? else {
            return Ok(None);
        };
        let Some(event) = self.pdu(&membership.event_id)? else {
            return Ok(None);
        };
        if !event.outlier {
            return Ok(None);
        }
        let server = match membership.membership {
            MembershipState::Invite => {
                let value: serde_json::Value =
                    serde_json::from_str(event.pdu.get()).map_err(crate::Error::internal)?;
                sender_of(&value).map(|sender| sender.server_name().to_owned())
            }
            MembershipState::Knock => room_id.server_name().map(ToOwned::to_owned),
            _ => None,
        };
        Ok(server.filter(|server| *server != self.server_name))
    }

    /// Marks a local user's invite into (or knock on) a room of another server as over
    /// (when that server could not be told).
    pub async fn forget_remote_invite(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        let guard = self.lock(room_id).lock_owned().await;
        let Some(current) = self.membership(room_id, user)? else {
            return Ok(());
        };
        let mut batch = self.db.batch();
        let permit = self.stream.next();
        self.index_membership(
            &mut batch,
            room_id,
            user,
            &MembershipState::Leave,
            &current.event_id,
            permit.position(),
        )?;
        permit.persist_in(&mut batch);
        let pending = Pending {
            batch,
            permits: vec![permit],
            woken: Audience {
                users: vec![user.to_owned()],
                servers: Vec::new(),
            },
            redacted: None,
        };
        self.commit(pending, guard).await
    }
}

/// A state event in the stripped form an invite shows: type, state key, content, sender.
pub fn strip(event: &Value) -> Value {
    json!({
        "type": event.get("type"),
        "state_key": event.get("state_key"),
        "content": event.get("content"),
        "sender": event.get("sender"),
    })
}

/// The inviter of an invite, from its JSON.
pub fn sender_of(event: &Value) -> Option<OwnedUserId> {
    event
        .get("sender")
        .and_then(Value::as_str)
        .and_then(|sender| OwnedUserId::try_from(sender).ok())
}
