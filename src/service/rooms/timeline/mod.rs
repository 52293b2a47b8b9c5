//! Writing events into a room's timeline. A local user's event takes these steps:
//!
//! 1. `api/client/message.rs` `send_message` (or `state.rs`, `membership.rs`, …): the
//!    request checked (transaction seen before, rate limit, membership), then
//!    [`Rooms::append`].
//! 2. [`Rooms::append`] (here): a message waits for its room's next batch (`queue.rs`),
//!    what the indexes can work out without the room lock worked out first;
//!    a state event or a redaction is written on its own, under the room lock.
//! 3. `build.rs` [`Rooms::build_on_head`]: the PDU filled in on the room's head (parents,
//!    depth, auth events), hashed, signed, and authorised against the room's state.
//! 4. `append.rs` [`Rooms::stage`]: everything the event changes, into one storage batch:
//!    the PDU and its timeline entry, the new state group, memberships, the room's head,
//!    the stream position and the federation queue (`place`, shared with every event
//!    that enters a timeline).
//! 5. `effects.rs` [`Rooms::commit`]: the batch written with its log synced (the one
//!    durability point), the room unlocked for its next batch, then its effects: the
//!    members' syncs woken, the federation sender woken.
//!
//! Events from other servers, invites and joins (`incoming.rs`, `remote_invite.rs`)
//! compute their state differently, then take the same `place` and `commit`.

mod append;
mod authorised;
mod build;
mod effects;
mod queue;

use ruma::{
    DeviceId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, UserId,
    room_version_rules::RoomVersionRules,
};

pub(super) use self::{
    append::{Entry, PduWrite, Place, raw_json},
    authorised::Authorised,
    build::Draft,
    effects::{Ahead, Pending},
    queue::Queued,
};
pub use self::{
    append::{member_change, redacted_by},
    effects::{Placed, TimelineIndex, Upcoming},
};
use super::{Audience, RoomRecord, Rooms, state::StateMap};
use crate::{
    Error, Result,
    storage::{Keyspace, codec::Key},
};

/// An event a local user wants to send.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: String,
    pub content: serde_json::Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
    /// When the server took it (ms); `None`: when it is built.
    pub origin_server_ts: Option<u64>,
}

impl NewEvent {
    pub fn state(kind: &str, state_key: &str, content: serde_json::Value) -> Self {
        Self {
            kind: kind.to_owned(),
            content,
            state_key: Some(state_key.to_owned()),
            redacts: None,
            origin_server_ts: None,
        }
    }

    /// A redaction of `target` (`content` may give a reason).
    pub fn redaction(target: OwnedEventId, content: serde_json::Value) -> Self {
        Self {
            kind: "m.room.redaction".to_owned(),
            content,
            state_key: None,
            redacts: Some(target),
            origin_server_ts: None,
        }
    }

    pub fn message(kind: &str, content: serde_json::Value) -> Self {
        Self {
            kind: kind.to_owned(),
            content,
            state_key: None,
            redacts: None,
            origin_server_ts: None,
        }
    }
}

/// The device transaction an event was sent in, for idempotency.
pub struct Txn<'a> {
    pub device_id: &'a DeviceId,
    pub txn_id: &'a str,
}

fn txn_key(sender: &UserId, txn: &Txn<'_>) -> Key {
    Key::new()
        .str(sender.as_str())
        .str(txn.device_id.as_str())
        .str(txn.txn_id)
}

/// A room as its next event sees it: its id, its version's rules and its head (state
/// group, forward extremities, depth, last stream position).
pub(super) struct Head {
    pub(super) room_id: OwnedRoomId,
    pub(super) rules: RoomVersionRules,
    pub(super) record: RoomRecord,
}

impl Rooms {
    /// The event id an earlier request with this transaction id produced.
    pub fn txn_event(&self, sender: &UserId, txn: &Txn<'_>) -> Result<Option<OwnedEventId>> {
        let value = self
            .db
            .get(Keyspace::TxnIds, txn_key(sender, txn).bytes())?;
        Ok(value
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|id| id.try_into().ok()))
    }

    /// The room's head, if this server is in the room.
    pub(super) fn head(&self, room_id: &RoomId) -> Result<Option<Head>> {
        let Some(record) = self.room(room_id)? else {
            return Ok(None);
        };
        Ok(Some(Head {
            room_id: room_id.to_owned(),
            rules: Self::rules(&record.version)?,
            record,
        }))
    }

    /// Sends an event into an existing room as a local user.
    ///
    /// Messages queue for their room: whoever holds the room lock next writes every
    /// queued message in one batch with one synced write, so many senders in one room
    /// share the cost of the sync. State events and redactions change what later events
    /// are checked against, and are written one at a time.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        if event.state_key.is_some() || event.redacts.is_some() || event.kind == "m.room.redaction"
        {
            return self.append_alone(room_id, sender, event, txn).await;
        }
        self.append_queued(room_id, sender, event, txn).await
    }

    /// Sends one event on its own under the room lock.
    async fn append_alone(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        let guard = self.lock(room_id).lock_owned().await;
        if let Some(txn) = &txn
            && let Some(event_id) = self.txn_event(sender, txn)?
        {
            return Ok(event_id);
        }
        let mut head = self
            .head(room_id)?
            .ok_or_else(|| Error::forbidden("You are not in this room"))?;
        let state = self.state.get(head.record.state_group)?;
        let event = self.build_on_head(&head, &state, sender, &event)?;
        let event_id = event.event_id.clone();
        let redacted = redacted_by(&event.pdu);
        let mut batch = self.db.batch();
        let mut woken = self.audience(room_id)?;
        let txn = txn.map(|txn| (sender, txn));
        let permit = self.stage(
            &mut batch,
            &mut head,
            event,
            txn,
            &mut woken,
            Ahead::default(),
        )?;
        let pending = Pending {
            batch,
            permits: vec![permit],
            woken,
            redacted,
        };
        self.commit(pending, guard).await?;
        Ok(event_id)
    }

    /// Creates a room with its `m.room.create` event; returns the room id.
    pub async fn append_create(
        &self,
        version: &RoomVersionId,
        sender: &UserId,
        content: serde_json::Value,
    ) -> Result<OwnedRoomId> {
        let rules = Self::rules(version)?;
        let event = NewEvent::state("m.room.create", "", content);
        let state = StateMap::new();
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            let localpart = crate::service::users::random_localpart();
            Some(
                OwnedRoomId::try_from(format!("!{localpart}:{}", self.server_name))
                    .map_err(Error::internal)?,
            )
        };
        let (event_id, object) = self.build(Draft {
            version,
            rules: &rules,
            state: &state,
            room_id: room_id.as_deref(),
            prev_events: &[],
            depth: 1,
            sender,
            event: &event,
        })?;
        let room_id = match room_id {
            Some(room_id) => room_id,
            None => OwnedRoomId::try_from(format!("!{}", &event_id.as_str()[1..]))
                .map_err(Error::internal)?,
        };
        let guard = self.lock(&room_id).lock_owned().await;
        let event = self.authorise(&rules, event_id, object, &state)?;
        let mut head = Head {
            room_id: room_id.clone(),
            rules,
            record: RoomRecord {
                version: version.clone(),
                state_group: 0,
                extremities: Vec::new(),
                depth: 0,
                last_position: 0,
                bump_position: 0,
            },
        };
        let mut batch = self.db.batch();
        let mut woken = Audience {
            users: vec![sender.to_owned()],
            servers: Vec::new(),
        };
        let permit = self.stage(
            &mut batch,
            &mut head,
            event,
            None,
            &mut woken,
            Ahead::default(),
        )?;
        let pending = Pending {
            batch,
            permits: vec![permit],
            woken,
            redacted: None,
        };
        self.commit(pending, guard).await?;
        Ok(room_id)
    }
}
