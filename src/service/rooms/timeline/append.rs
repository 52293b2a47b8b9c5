//! Staging an event into a storage batch: the PDU and its timeline entry, the state
//! group it makes, the memberships it changes, the room's head moved onto it, its stream
//! position and the federation queue. Nothing here writes: `effects.rs` does, once.

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedServerName, OwnedUserId, RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
    room_version_rules::RoomVersionRules,
};
use serde_json::value::RawValue;

use super::{Ahead, Head, Placed, Txn, txn_key};
use crate::{
    Error, Result,
    service::{
        federation::queue::Outgoing,
        rooms::{
            Audience, Membership, Rooms,
            pdu::{Pdu, SignedPdu, StoredPdu},
        },
        stream::Permit,
    },
    storage::{
        Batch, Keyspace,
        codec::{Key, decode_membership, encode_membership},
    },
};

/// Where a PDU is kept.
#[derive(Clone, Copy, Debug)]
pub(in crate::service::rooms) enum Place {
    /// In the timeline at a stream position, with the state groups before and after it.
    Timeline {
        position: u64,
        state_before: u64,
        state_after: u64,
    },
    /// Known, but not in the timeline: an auth or state event, or an invite into a room
    /// this server is not in.
    Outlier,
    /// Authorised by its past but not by the room as it is now: stored, never served to
    /// clients, never built upon.
    SoftFailed { state_before: u64, state_after: u64 },
    /// History from before this server joined, at `seq` of the room's history, seen
    /// with the state group `state` (see `rooms/history.rs`).
    History { seq: u64, state: u64 },
    /// Refused by the checks: kept, so it is not fetched again, and never served.
    Rejected,
}

/// A PDU to write, with the local transaction that sent it.
pub(in crate::service::rooms) struct PduWrite<'a> {
    pub event: SignedPdu,
    pub txn: Option<(&'a UserId, Txn<'a>)>,
    pub place: Place,
}

/// An event entering the timeline, with the state groups before and after it.
pub(in crate::service::rooms) struct Entry<'a> {
    pub event: SignedPdu,
    pub txn: Option<(&'a UserId, Txn<'a>)>,
    pub state_before: u64,
    pub state_after: u64,
    /// What the indexes worked out for it before it was built.
    pub ahead: Ahead,
}

impl Rooms {
    /// Stages an authorised local event on top of the room's head, at the next stream
    /// position. `audience` are the users whose syncs the event concerns and the servers
    /// it goes to (the room's members); a member event adds its target to it, and an
    /// event of another server's user goes to no server. `ahead` is what the indexes
    /// worked out for it before it was built. Returns the position's permit.
    pub(super) fn stage(
        &self,
        batch: &mut Batch,
        head: &mut Head,
        event: SignedPdu,
        txn: Option<(&UserId, Txn<'_>)>,
        audience: &mut Audience,
        ahead: Ahead,
    ) -> Result<Permit> {
        let state_before = head.record.state_group;
        let state_after = self.state_after(batch, state_before, &event.pdu)?;
        let permit = self.stream.next();
        if let Some((target, membership)) = member_change(&event.pdu) {
            let (room_id, event_id) = (&head.room_id, &event.event_id);
            let position = permit.position();
            self.index_membership(batch, room_id, &target, &membership, event_id, position)?;
            if target.server_name() != self.server_name
                && !audience.servers.iter().any(|s| s == target.server_name())
            {
                audience.servers.push(target.server_name().to_owned());
            }
            if !audience.users.contains(&target) {
                audience.users.push(target);
            }
        }
        if event.pdu.sender.server_name() != self.server_name {
            audience.servers.clear();
        }
        head.record.state_group = state_after;
        head.record.extremities = vec![event.event_id.clone()];
        head.record.depth = event.pdu.depth;
        let entry = Entry {
            event,
            txn,
            state_before,
            state_after,
            ahead,
        };
        self.place(batch, head, entry, &permit, &audience.servers)?;
        Ok(permit)
    }

    /// The staging every event entering a timeline ends with, local or not: the PDU at
    /// the permit's position, the room's head (its state group, extremities and depth
    /// already moved by the caller) at that position, the event queued for `servers`,
    /// and the position kept.
    pub(in crate::service::rooms) fn place(
        &self,
        batch: &mut Batch,
        head: &mut Head,
        entry: Entry<'_>,
        permit: &Permit,
        servers: &[OwnedServerName],
    ) -> Result<()> {
        let position = permit.position();
        let event_id = entry.event.event_id.clone();
        self.queue.enqueue(batch, servers, &Outgoing::Pdu(event_id));
        if super::super::bumps(&entry.event.pdu.kind, &entry.event.pdu.content) {
            head.record.bump_position = position;
            self.note_bump(&head.room_id, position);
        }
        self.stream.note_room(&head.room_id, position);
        let json = raw_json(&entry.event.object)?;
        {
            let placed = Placed {
                room_id: &head.room_id,
                event_id: &entry.event.event_id,
                pdu: &entry.event.pdu,
                json: &json,
                position,
                state_before: entry.state_before,
                ahead: &entry.ahead,
            };
            for index in self.indexes.iter() {
                // An index is kept beside the timeline: one that cannot take an event
                // (other than for a storage failure, which spoils the batch) misses it,
                // and the event is still written.
                match index.stage(self, batch, &placed) {
                    Err(Error::Storage(error)) => return Err(Error::Storage(error)),
                    Err(error) => tracing::warn!(
                        %error,
                        event_id = %placed.event_id,
                        "an index skipped an event"
                    ),
                    Ok(()) => {}
                }
            }
        }
        let write = PduWrite {
            event: entry.event,
            txn: entry.txn,
            place: Place::Timeline {
                position,
                state_before: entry.state_before,
                state_after: entry.state_after,
            },
        };
        self.stage_pdu_json(batch, &head.room_id, &head.rules, write, json)?;
        head.record.last_position = position;
        batch.put_json(
            Keyspace::Rooms,
            head.room_id.as_str().as_bytes().to_vec(),
            &head.record,
        );
        permit.persist_in(batch);
        Ok(())
    }

    /// The state group after an event: a new group for a state event, else the one
    /// before it.
    pub(in crate::service::rooms) fn state_after(
        &self,
        batch: &mut Batch,
        state_before: u64,
        pdu: &Pdu,
    ) -> Result<u64> {
        match &pdu.state_key {
            Some(state_key) => self.state.create(
                batch,
                state_before,
                vec![(
                    pdu.kind.to_string(),
                    state_key.clone(),
                    pdu.event_id.clone(),
                )],
            ),
            None => Ok(state_before),
        }
    }

    /// Indexes a membership as the room's current one: the room's member list, and for a
    /// local user their rooms and membership stream.
    pub(in crate::service::rooms) fn index_membership(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        target: &UserId,
        membership: &MembershipState,
        event_id: &EventId,
        position: u64,
    ) -> Result<()> {
        let member_key = Key::new().str(room_id.as_str()).str(target.as_str());
        let was_joined = self
            .db
            .get(Keyspace::RoomMembers, member_key.bytes())?
            .is_some_and(|value| decode_membership(&value) == MembershipState::Join);
        let joined = *membership == MembershipState::Join;
        if was_joined != joined {
            batch.put(
                Keyspace::RoomMembersStream,
                Key::new().str(room_id.as_str()).u64(position),
                target.as_str().as_bytes().to_vec(),
            );
            let joined_key = Key::new().str(target.as_str()).str(room_id.as_str());
            if joined {
                batch.put(Keyspace::JoinedRooms, joined_key, Vec::new());
            } else {
                batch.delete(Keyspace::JoinedRooms, joined_key);
            }
            if target.server_name() != self.server_name {
                // Another server's user's cached keys are kept fresh by its device-list
                // updates only while a room is shared: a join may end a gap.
                batch.delete(Keyspace::RemoteDevices, target.as_bytes().to_vec());
            }
        }
        if matches!(
            membership,
            MembershipState::Join | MembershipState::Invite | MembershipState::Knock
        ) {
            batch.put(
                Keyspace::RoomMembers,
                member_key,
                encode_membership(membership),
            );
        } else {
            batch.delete(Keyspace::RoomMembers, member_key);
        }
        if target.server_name() == self.server_name {
            self.index_local_membership(batch, room_id, target, membership, event_id, position)?;
        }
        Ok(())
    }

    /// A local user's rooms and membership stream. A member event that keeps the
    /// membership (a profile change) is not a membership change: the position stays the
    /// one of the transition, so sync does not treat the room as newly joined.
    fn index_local_membership(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        target: &UserId,
        membership: &MembershipState,
        event_id: &EventId,
        position: u64,
    ) -> Result<()> {
        let previous = self.membership(room_id, target)?;
        let unchanged = previous
            .as_ref()
            .is_some_and(|p| p.membership == *membership);
        let since = match &previous {
            Some(previous) if unchanged => previous.position,
            _ => position,
        };
        batch.put_json(
            Keyspace::UserRooms,
            Key::new().str(target.as_str()).str(room_id.as_str()),
            &Membership {
                membership: membership.clone(),
                event_id: event_id.to_owned(),
                position: since,
            },
        );
        if !unchanged {
            batch.put(
                Keyspace::UserRoomsStream,
                Key::new().str(target.as_str()).u64(position),
                room_id.as_str().as_bytes().to_vec(),
            );
        }
        Ok(())
    }

    /// Writes the PDU and, in the timeline, its entry there, its transaction id and what
    /// a redaction changes.
    pub(in crate::service::rooms) fn stage_pdu(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        write: PduWrite<'_>,
    ) -> Result<()> {
        let json = raw_json(&write.event.object)?;
        self.stage_pdu_json(batch, room_id, rules, write, json)
    }

    /// [`stage_pdu`](Self::stage_pdu) with the PDU already serialised.
    fn stage_pdu_json(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        write: PduWrite<'_>,
        json: Box<RawValue>,
    ) -> Result<()> {
        let PduWrite { event, txn, place } = write;
        let (position, (state_before, state_after)) = match place {
            Place::Timeline {
                position,
                state_before,
                state_after,
            } => (Some(position), (state_before, state_after)),
            Place::Outlier | Place::Rejected => (None, (0, 0)),
            Place::SoftFailed {
                state_before,
                state_after,
            } => (None, (state_before, state_after)),
            Place::History { seq, state } => {
                batch.put(
                    Keyspace::History,
                    Key::new().str(room_id.as_str()).u64(seq),
                    event.event_id.as_str().as_bytes().to_vec(),
                );
                (None, (state, state))
            }
        };
        if let Some(position) = position {
            if event.pdu.kind == TimelineEventType::RoomRedaction
                && let Some(target_id) = &event.pdu.redacts
            {
                self.apply_redaction(batch, room_id, rules, target_id, &event.event_id)?;
            }
            batch.put(
                Keyspace::Timeline,
                Key::new().str(room_id.as_str()).u64(position),
                event.event_id.as_str().as_bytes().to_vec(),
            );
        }
        let txn_record = txn.as_ref().map(|(sender, txn)| {
            batch.put(
                Keyspace::TxnIds,
                txn_key(sender, txn),
                event.event_id.as_str().as_bytes().to_vec(),
            );
            (txn.device_id.to_string(), txn.txn_id.to_owned())
        });
        // The state before may be a group this very batch creates (a join through
        // another server, state learnt from one): then it cannot be read yet, and the
        // event goes without `replaces_state`.
        let replaces_state = match (&position, &event.pdu.state_key) {
            (Some(_), Some(state_key)) => self.state.get(state_before).ok().and_then(|state| {
                state
                    .get(&(event.pdu.kind.to_string(), state_key.clone()))
                    .cloned()
            }),
            _ => None,
        };
        let stored = StoredPdu {
            replaces_state,
            room_id: room_id.to_owned(),
            position: position.unwrap_or(0),
            state_before,
            state_after,
            redacted_by: None,
            expired: false,
            txn: txn_record,
            outlier: matches!(place, Place::Outlier | Place::Rejected),
            soft_failed: matches!(place, Place::SoftFailed { .. } | Place::Rejected),
            pdu: json,
        };
        batch.put_json(
            Keyspace::Pdus,
            event.event_id.as_str().as_bytes().to_vec(),
            &stored,
        );
        Ok(())
    }

    /// Replaces the stored target with its redacted form, keeping its signatures valid.
    fn apply_redaction(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        target_id: &EventId,
        redaction_id: &EventId,
    ) -> Result<()> {
        let Some(mut target) = self.pdu(target_id)? else {
            return Ok(());
        };
        if target.room_id != room_id || target.redacted_by.is_some() {
            return Ok(());
        }
        let object: CanonicalJsonObject =
            serde_json::from_str(target.pdu.get()).map_err(Error::internal)?;
        let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(Error::internal)?;
        target.pdu = raw_json(&redacted)?;
        target.redacted_by = Some(redaction_id.to_owned());
        batch.put_json(
            Keyspace::Pdus,
            target_id.as_str().as_bytes().to_vec(),
            &target,
        );
        Ok(())
    }
}

/// The event a redaction rewrites, if the event is a redaction.
pub fn redacted_by(pdu: &Pdu) -> Option<OwnedEventId> {
    (pdu.kind == TimelineEventType::RoomRedaction)
        .then(|| pdu.redacts.clone())
        .flatten()
}

/// The member whose membership a member event sets, and to what.
pub fn member_change(pdu: &Pdu) -> Option<(OwnedUserId, MembershipState)> {
    if pdu.kind != TimelineEventType::RoomMember {
        return None;
    }
    let target = pdu
        .state_key
        .as_deref()
        .and_then(|key| UserId::parse(key).ok())?;
    let membership = serde_json::from_str::<serde_json::Value>(pdu.content.get())
        .ok()
        .and_then(|content| crate::service::rooms::membership::membership_in(&content))
        .unwrap_or(MembershipState::Leave);
    Some((target, membership))
}

pub(in crate::service::rooms) fn raw_json(object: &CanonicalJsonObject) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(object).map_err(Error::internal)
}
