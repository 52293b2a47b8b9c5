//! Events from other servers entering a room's DAG. Their signatures and hashes are
//! checked before they get here (`service/federation/receive.rs`); here they are
//! authorised against their auth events and the state before them, soft-failed against
//! the current state, and written with the state they produce. A room with several
//! forward extremities has its current state resolved with state resolution v2.

use std::{collections::HashSet, sync::Arc};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedServerName, RoomId, RoomVersionId,
    room_version_rules::RoomVersionRules,
};

use super::{
    Audience, RoomRecord, Rooms,
    pdu::{Pdu, SignedPdu},
    state::StateMap,
    timeline::{Entry, Head, PduWrite, Pending, Place, member_change, raw_json, redacted_by},
};
use crate::{
    Error, Result,
    service::stream::Permit,
    storage::{Batch, Keyspace},
};

/// The state after an event, given the state before it.
fn map_after(before: &StateMap, pdu: &Pdu) -> StateMap {
    let mut after = before.clone();
    if let Some(state_key) = &pdu.state_key {
        after.insert(
            (pdu.kind.to_string(), state_key.clone()),
            pdu.event_id.clone(),
        );
    }
    after
}

/// Which other servers an appended event is sent on to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relay {
    /// None: its origin sends it to every server itself.
    None,
    /// All but one: a join this server witnessed through `send_join`.
    AllBut(OwnedServerName),
    /// All, including a member event's target: an invite of this server's user,
    /// countersigned by the invitee's server.
    All,
}

/// What became of an incoming event.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// In the timeline.
    Timeline,
    /// Stored, but it fails against the current state: not in the timeline, not served
    /// to clients, not built upon.
    SoftFailed,
    /// Known already.
    Known,
}

impl Rooms {
    /// Whether an event is stored (in the timeline or as an outlier).
    pub fn knows(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.db.contains(Keyspace::Pdus, event_id.as_bytes())?)
    }

    /// Authorises an event against its own auth events (the state-independent rules and
    /// the rules against the state its auth events make).
    pub fn authorise_by_auth_events(
        &self,
        rules: &RoomVersionRules,
        event: &SignedPdu,
    ) -> Result<()> {
        let mut state = StateMap::new();
        for id in &event.pdu.auth_events {
            let auth = self
                .state_event(id)?
                .ok_or_else(|| Error::forbidden(format!("auth event {id} is unknown")))?;
            if auth.room_id != event.pdu.room_id && auth.kind.to_string() != "m.room.create" {
                return Err(Error::forbidden("auth event of another room"));
            }
            if let Some(state_key) = &auth.state_key {
                state.insert((auth.kind.to_string(), state_key.clone()), id.clone());
            }
        }
        // From room version 12 the create event is not listed: the room id names it.
        if rules.authorization.room_create_event_id_as_room_id
            && let Some(room_id) = &event.pdu.room_id
            && let Ok(create_id) = OwnedEventId::try_from(format!("${}", &room_id.as_str()[1..]))
        {
            state
                .entry(("m.room.create".to_owned(), String::new()))
                .or_insert(create_id);
        }
        self.check_auth(rules, &event.pdu, &state)
    }

    /// Stores auth-chain and state events of a room as outliers, oldest first, each
    /// authorised against its auth events. Events that fail are left out.
    pub fn store_outliers(
        &self,
        rules: &RoomVersionRules,
        room_id: &RoomId,
        mut events: Vec<SignedPdu>,
    ) -> Result<()> {
        // Events of another room have no place here (a room version 12 create event
        // carries no room id: its id is the room's).
        events.retain(|event| event.pdu.room_id.as_deref().is_none_or(|id| id == room_id));
        events.sort_by_key(|event| event.pdu.depth);
        let mut pending: Vec<SignedPdu> = events;
        // Auth events may come after the events they authorise: retry until no progress.
        loop {
            let mut progress = false;
            let mut left = Vec::new();
            for event in pending {
                if self.knows(&event.event_id)? {
                    continue;
                }
                let auth_known = event
                    .pdu
                    .auth_events
                    .iter()
                    .all(|id| self.knows(id).unwrap_or(false));
                if !auth_known {
                    left.push(event);
                    continue;
                }
                match self.authorise_by_auth_events(rules, &event) {
                    Ok(()) => {
                        // Written one at a time, as the next event's checks read this
                        // one; unsynced, and synced once at the end (`Db::write_unsynced`).
                        let mut single = self.db.batch();
                        let write = PduWrite {
                            event,
                            txn: None,
                            place: Place::Outlier,
                        };
                        self.stage_pdu(&mut single, room_id, rules, write)?;
                        self.db.write_unsynced(single)?;
                        progress = true;
                    }
                    Err(error) => {
                        tracing::debug!(event_id = %event.event_id, %error, "outlier rejected");
                    }
                }
            }
            if left.is_empty() || !progress {
                self.db.sync()?;
                return Ok(());
            }
            pending = left;
        }
    }

    /// Starts a room this server joins through another one: the room's state before the
    /// join (its events already stored as outliers), then the join event on top of it.
    pub async fn create_joined(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        state: StateMap,
        join: SignedPdu,
    ) -> Result<()> {
        let rules = Self::rules(version)?;
        let guard = self.lock(room_id).lock_owned().await;
        if self.exists(room_id)? {
            // Still in the room (another local user): an ordinary remote event.
            drop(guard);
            self.append_remote(room_id, join, Relay::None).await?;
            return Ok(());
        }
        self.check_auth(&rules, &join.pdu, &state)?;
        let mut batch = self.db.batch();
        let state_before = self.state.create_snapshot(&mut batch, &state)?;
        let mut head = Head {
            room_id: room_id.to_owned(),
            rules,
            record: RoomRecord {
                version: version.clone(),
                state_group: state_before,
                extremities: Vec::new(),
                depth: 0,
                last_position: 0,
                bump_position: 0,
            },
        };
        // The members already there are indexed as of now.
        let permit = self.stream.next();
        let position = permit.position();
        let mut audience = Audience::default();
        for ((kind, _), event_id) in &state {
            if kind != "m.room.member" {
                continue;
            }
            if let Some(event) = self.state_event(event_id)?
                && let Some((target, membership)) = member_change(&event)
            {
                self.index_membership(
                    &mut batch,
                    room_id,
                    &target,
                    &membership,
                    event_id,
                    position,
                )?;
                audience.users.push(target);
            }
        }
        let redacted = redacted_by(&join.pdu);
        let before = (state_before, Arc::new(state));
        self.stage_remote(&mut batch, &mut head, join, before, &permit, &mut audience)?;
        let pending = Pending {
            batch,
            permits: vec![permit],
            woken: audience,
            redacted,
        };
        self.commit(pending, guard).await
    }

    /// Whether an event is in a room's timeline (not only known as an outlier).
    pub fn in_timeline(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.pdu(event_id)?.is_some_and(|stored| !stored.outlier))
    }

    /// Appends an event whose prev events are all known, with the state before it
    /// computed from theirs, and relays it to other servers as `relay` says.
    pub async fn append_remote(
        &self,
        room_id: &RoomId,
        event: SignedPdu,
        relay: Relay,
    ) -> Result<Accepted> {
        self.append_incoming(room_id, event, None, relay).await
    }

    /// Appends an event whose state before it was learnt from another server (its prev
    /// events are not all known).
    pub async fn append_remote_with_state(
        &self,
        room_id: &RoomId,
        event: SignedPdu,
        state: StateMap,
    ) -> Result<Accepted> {
        self.append_incoming(room_id, event, Some(state), Relay::None)
            .await
    }

    /// Authorises an event against the state before it (`state`, or else computed from
    /// its prev events) and appends it, or keeps it soft-failed when the room's current
    /// state refuses it.
    async fn append_incoming(
        &self,
        room_id: &RoomId,
        event: SignedPdu,
        state: Option<StateMap>,
        relay: Relay,
    ) -> Result<Accepted> {
        let guard = self.lock(room_id).lock_owned().await;
        if self.in_timeline(&event.event_id)? {
            return Ok(Accepted::Known);
        }
        let mut head = self
            .head(room_id)?
            .ok_or_else(|| Error::not_found("This server is not in the room"))?;
        let mut batch = self.db.batch();
        let before = match state {
            None => self.state_before_event(&mut batch, &head.rules, &event.pdu)?,
            Some(state) => (
                self.state.create_snapshot(&mut batch, &state)?,
                Arc::new(state),
            ),
        };
        self.check_auth(&head.rules, &event.pdu, &before.1)?;
        // Soft failure: authorised by its past, but not by the room as it is now.
        let current = self.state.get(head.record.state_group)?;
        if let Err(error) = self.check_auth(&head.rules, &event.pdu, &current) {
            tracing::info!(event_id = %event.event_id, %error, "soft-failed");
            let state_before = before.0;
            let state_after = self.state_after(&mut batch, state_before, &event.pdu)?;
            let place = Place::SoftFailed {
                state_before,
                state_after,
            };
            let write = PduWrite {
                event,
                txn: None,
                place,
            };
            self.stage_pdu(&mut batch, room_id, &head.rules, write)?;
            self.db.write(batch)?;
            return Ok(Accepted::SoftFailed);
        }
        let permit = self.stream.next();
        let mut audience = self.relayed_audience(room_id, &event, &relay)?;
        let redacted = redacted_by(&event.pdu);
        self.stage_remote(&mut batch, &mut head, event, before, &permit, &mut audience)?;
        let pending = Pending {
            batch,
            permits: vec![permit],
            woken: audience,
            redacted,
        };
        self.commit(pending, guard).await?;
        Ok(Accepted::Timeline)
    }

    /// Who hears of an incoming event: the room's local members, and the servers
    /// `relay` names.
    fn relayed_audience(
        &self,
        room_id: &RoomId,
        event: &SignedPdu,
        relay: &Relay,
    ) -> Result<Audience> {
        let mut audience = self.audience(room_id)?;
        match relay {
            Relay::None => audience.servers.clear(),
            Relay::AllBut(origin) => audience.servers.retain(|server| server != origin),
            Relay::All => {
                if let Some((target, _)) = member_change(&event.pdu)
                    && target.server_name() != self.server_name
                    && !audience.servers.iter().any(|s| s == target.server_name())
                {
                    audience.servers.push(target.server_name().to_owned());
                }
            }
        }
        Ok(audience)
    }

    /// Stages a remote event into the timeline: the PDU, the room's new extremities and
    /// current state (resolved when they fork), and the membership changes that brings;
    /// the local users those concern join `audience`, whose servers it is sent on to.
    fn stage_remote(
        &self,
        batch: &mut Batch,
        head: &mut Head,
        event: SignedPdu,
        (state_before, before): (u64, Arc<StateMap>),
        permit: &Permit,
        audience: &mut Audience,
    ) -> Result<()> {
        let position = permit.position();
        let state_after = self.state_after(batch, state_before, &event.pdu)?;
        let after = Arc::new(map_after(&before, &event.pdu));
        let prev: HashSet<&OwnedEventId> = event.pdu.prev_events.iter().collect();
        let mut extremities: Vec<OwnedEventId> = head
            .record
            .extremities
            .iter()
            .filter(|id| !prev.contains(id))
            .cloned()
            .collect();
        extremities.push(event.event_id.clone());
        let old_state = if head.record.state_group == state_before {
            before
        } else {
            self.state.get(head.record.state_group)?
        };
        let (new_group, new_state) = self.state_of_extremities(
            batch,
            &head.rules,
            (&extremities, &event.pdu),
            (state_after, after),
        )?;
        // Memberships follow the current state.
        for ((kind, state_key), id) in new_state.iter() {
            if kind != "m.room.member"
                || old_state.get(&(kind.clone(), state_key.clone())) == Some(id)
            {
                continue;
            }
            let member_event = if *id == event.event_id {
                Some(Arc::new(event.pdu.clone()))
            } else {
                self.state_event(id)?
            };
            if let Some(member_event) = member_event
                && let Some((target, membership)) = member_change(&member_event)
            {
                let room_id = &head.room_id;
                self.index_membership(batch, room_id, &target, &membership, id, position)?;
                if !audience.users.contains(&target) {
                    audience.users.push(target);
                }
            }
        }
        head.record.depth = head.record.depth.max(event.pdu.depth);
        head.record.state_group = new_group;
        head.record.extremities = extremities;
        let entry = Entry {
            event,
            txn: None,
            state_before,
            state_after,
            ahead: Default::default(),
        };
        self.place(batch, head, entry, permit, &audience.servers)
    }

    /// The raw PDU as stored, for serving over federation.
    pub fn raw_pdu(&self, event_id: &EventId) -> Result<Option<Box<serde_json::value::RawValue>>> {
        Ok(self.pdu(event_id)?.map(|stored| stored.pdu))
    }

    /// Stages `object` as canonical JSON (used when this server signs a remote event).
    pub fn raw_object(object: &CanonicalJsonObject) -> Result<Box<serde_json::value::RawValue>> {
        raw_json(object)
    }
}

impl Rooms {
    /// An event template for another server's user (`make_join`, `make_leave`): built on
    /// the room's head, authorised against its current state, not signed.
    pub fn template(
        &self,
        room_id: &RoomId,
        sender: &ruma::UserId,
        event: super::timeline::NewEvent,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let head = self
            .head(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let state = self.state.get(head.record.state_group)?;
        let mut object = self.build_on_head(&head, &state, sender, &event)?.object;
        object.remove("signatures");
        object.remove("hashes");
        if head.rules.event_id_format != ruma::room_version_rules::EventIdFormatVersion::V1 {
            object.remove("event_id");
        }
        Ok((head.record.version, object))
    }
}
