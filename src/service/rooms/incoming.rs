//! Events from other servers entering a room's DAG. Their signatures and hashes are
//! checked before they get here (`service/federation/receive.rs`); here they are
//! authorised against their auth events and the state before them, soft-failed against
//! the current state, and written with the state they produce. A room with several
//! forward extremities has its current state resolved with state resolution v2.

use std::collections::{HashMap, HashSet};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedServerName, RoomId, RoomVersionId,
    events::StateEventType, room_version_rules::RoomVersionRules,
};

use super::{
    Audience, RoomRecord, Rooms,
    pdu::Pdu,
    state::StateMap,
    timeline::{Pending, member_change, raw_json},
};
use crate::{Error, Result, service::federation::queue::Outgoing, storage::Keyspace};

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

/// A PDU from another server whose hashes and signatures checked out (or, on a hash
/// mismatch, its redacted form).
#[derive(Clone, Debug)]
pub struct IncomingPdu {
    pub event_id: OwnedEventId,
    pub object: CanonicalJsonObject,
    pub pdu: Pdu,
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
        event: &IncomingPdu,
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
        self.authorise_parsed(rules, &event.pdu, &state)
    }

    /// The state-independent rules and the rules against `state`.
    fn authorise_parsed(
        &self,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        state: &StateMap,
    ) -> Result<()> {
        let fetch_event = |id: &EventId| self.state_event(id).ok().flatten();
        ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)
            .map_err(|reason| Error::forbidden(format!("Event not authorised: {reason}")))?;
        let fetch_state = |kind: &StateEventType, state_key: &str| {
            state
                .get(&(kind.to_string(), state_key.to_owned()))
                .and_then(|id| self.state_event(id).ok().flatten())
        };
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
            .map_err(|reason| Error::forbidden(format!("Event not authorised: {reason}")))
    }

    /// Stores auth-chain and state events of a room as outliers, oldest first, each
    /// authorised against its auth events. Events that fail are left out.
    pub fn store_outliers(
        &self,
        rules: &RoomVersionRules,
        room_id: &RoomId,
        mut events: Vec<IncomingPdu>,
    ) -> Result<()> {
        // Events of another room have no place here (a room version 12 create event
        // carries no room id: its id is the room's).
        events.retain(|event| event.pdu.room_id.as_deref().is_none_or(|id| id == room_id));
        events.sort_by_key(|event| event.pdu.depth);
        let mut pending: Vec<IncomingPdu> = events;
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
                        self.stage_pdu(
                            &mut single,
                            room_id,
                            rules,
                            event.pdu,
                            event.object,
                            None,
                            None,
                            0,
                            0,
                        )?;
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
        join: IncomingPdu,
    ) -> Result<()> {
        let rules = Self::rules(version)?;
        let guard = self.lock(room_id).lock_owned().await;
        if self.exists(room_id)? {
            // Still in the room (another local user): an ordinary remote event.
            drop(guard);
            self.append_remote(room_id, join, Relay::None).await?;
            return Ok(());
        }
        self.authorise_parsed(&rules, &join.pdu, &state)?;
        let mut batch = self.db.batch();
        let state_before = self.state.create_snapshot(&mut batch, &state)?;
        let before = std::sync::Arc::new(state.clone());
        let mut room = RoomRecord {
            version: version.clone(),
            state_group: state_before,
            extremities: Vec::new(),
            depth: 0,
            last_position: 0,
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
        let pending = self.stage_remote(
            &mut batch,
            room_id,
            &mut room,
            &rules,
            join,
            (state_before, before),
            permit,
            audience,
            Relay::None,
        )?;
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
        event: IncomingPdu,
        relay: Relay,
    ) -> Result<Accepted> {
        self.append_incoming(room_id, event, None, relay).await
    }

    /// Appends an event whose state before it was learnt from another server (its prev
    /// events are not all known).
    pub async fn append_remote_with_state(
        &self,
        room_id: &RoomId,
        event: IncomingPdu,
        state: StateMap,
    ) -> Result<Accepted> {
        self.append_incoming(room_id, event, Some(state), Relay::None)
            .await
    }

    async fn append_incoming(
        &self,
        room_id: &RoomId,
        event: IncomingPdu,
        state: Option<StateMap>,
        relay: Relay,
    ) -> Result<Accepted> {
        let guard = self.lock(room_id).lock_owned().await;
        if self.in_timeline(&event.event_id)? {
            return Ok(Accepted::Known);
        }
        let mut room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("This server is not in the room"))?;
        let rules = Self::rules(&room.version)?;
        let mut batch = self.db.batch();
        let before = match state {
            None => self.state_before_event(&mut batch, &rules, &event.pdu)?,
            Some(state) => (
                self.state.create_snapshot(&mut batch, &state)?,
                std::sync::Arc::new(state),
            ),
        };
        self.append_with_state(
            guard, batch, room_id, &mut room, &rules, event, before, relay,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn append_with_state(
        &self,
        guard: tokio::sync::OwnedMutexGuard<()>,
        mut batch: crate::storage::Batch,
        room_id: &RoomId,
        room: &mut RoomRecord,
        rules: &RoomVersionRules,
        event: IncomingPdu,
        before: (u64, std::sync::Arc<StateMap>),
        relay: Relay,
    ) -> Result<Accepted> {
        let state_before = before.0;
        self.authorise_parsed(rules, &event.pdu, &before.1)?;
        // Soft failure: authorised by its past, but not by the room as it is now.
        let current = self.state.get(room.state_group)?;
        if let Err(error) = self.authorise_parsed(rules, &event.pdu, &current) {
            tracing::info!(event_id = %event.event_id, %error, "soft-failed");
            let state_after = self.state_after(&mut batch, state_before, &event.pdu)?;
            self.stage_stored(
                &mut batch,
                room_id,
                rules,
                event.pdu,
                event.object,
                None,
                None,
                (state_before, state_after),
                true,
            )?;
            self.db.write(batch)?;
            drop(guard);
            return Ok(Accepted::SoftFailed);
        }
        let permit = self.stream.next();
        let mut audience = self.audience(room_id)?;
        match &relay {
            Relay::None => audience.servers.clear(),
            Relay::AllBut(origin) => audience.servers.retain(|server| server != origin),
            Relay::All => {}
        }
        let pending = self.stage_remote(
            &mut batch, room_id, room, rules, event, before, permit, audience, relay,
        )?;
        self.commit(pending, guard).await?;
        Ok(Accepted::Timeline)
    }

    /// Stages a remote event into the timeline: the PDU, the room's new extremities and
    /// current state (resolved when they fork), and the membership changes that brings.
    #[allow(clippy::too_many_arguments)]
    fn stage_remote(
        &self,
        batch: &mut crate::storage::Batch,
        room_id: &RoomId,
        room: &mut RoomRecord,
        rules: &RoomVersionRules,
        event: IncomingPdu,
        (state_before, before): (u64, std::sync::Arc<StateMap>),
        permit: crate::service::stream::Permit,
        mut audience: Audience,
        relay: Relay,
    ) -> Result<Pending> {
        let position = permit.position();
        let state_after = self.state_after(batch, state_before, &event.pdu)?;
        let after = std::sync::Arc::new(map_after(&before, &event.pdu));
        let event_id = event.event_id.clone();
        let prev: HashSet<&OwnedEventId> = event.pdu.prev_events.iter().collect();
        let mut extremities: Vec<OwnedEventId> = room
            .extremities
            .iter()
            .filter(|id| !prev.contains(id))
            .cloned()
            .collect();
        extremities.push(event_id.clone());
        let old_state = if room.state_group == state_before {
            before.clone()
        } else {
            self.state.get(room.state_group)?
        };
        let (new_group, new_state) = if extremities.len() == 1 {
            (state_after, after)
        } else {
            let mut states = vec![(state_after, after)];
            for id in &extremities[..extremities.len() - 1] {
                if let Some(stored) = self.pdu(id)? {
                    states.push((stored.state_after, self.state.get(stored.state_after)?));
                }
            }
            self.resolve_states(batch, rules, states)?
        };
        // Memberships follow the current state.
        for ((kind, state_key), id) in new_state.iter() {
            if kind != "m.room.member"
                || old_state.get(&(kind.clone(), state_key.clone())) == Some(id)
            {
                continue;
            }
            let member_event = if *id == event_id {
                Some(std::sync::Arc::new(event.pdu.clone()))
            } else {
                self.state_event(id)?
            };
            if let Some(member_event) = member_event
                && let Some((target, membership)) = member_change(&member_event)
            {
                self.index_membership(batch, room_id, &target, &membership, id, position)?;
                if !audience.users.contains(&target) {
                    audience.users.push(target);
                }
            }
        }
        let redacted = (event.pdu.kind == ruma::events::TimelineEventType::RoomRedaction)
            .then(|| event.pdu.redacts.clone())
            .flatten();
        if relay == Relay::All
            && let Some((target, _)) = member_change(&event.pdu)
            && target.server_name() != self.server_name
            && !audience.servers.iter().any(|s| s == target.server_name())
        {
            audience.servers.push(target.server_name().to_owned());
        }
        if relay != Relay::None {
            self.queue
                .enqueue(batch, &audience.servers, &Outgoing::Pdu(event_id.clone()));
        }
        room.depth = room.depth.max(event.pdu.depth);
        self.stage_pdu(
            batch,
            room_id,
            rules,
            event.pdu,
            event.object,
            None,
            Some(position),
            state_before,
            state_after,
        )?;
        room.state_group = new_group;
        room.extremities = extremities;
        room.last_position = position;
        batch.put_json(
            Keyspace::Rooms,
            room_id.as_str().as_bytes().to_vec(),
            &*room,
        );
        permit.persist_in(batch);
        Ok(Pending {
            batch: std::mem::replace(batch, self.db.batch()),
            permit,
            woken: audience,
            redacted,
        })
    }

    /// The state before an event: the state after its one prev event, or the resolution
    /// of the states after each.
    fn state_before_event(
        &self,
        batch: &mut crate::storage::Batch,
        rules: &RoomVersionRules,
        pdu: &Pdu,
    ) -> Result<(u64, std::sync::Arc<StateMap>)> {
        let mut groups = Vec::new();
        for id in &pdu.prev_events {
            let stored = self
                .pdu(id)?
                .ok_or_else(|| Error::internal(format!("prev event {id} is unknown")))?;
            if stored.outlier && stored.state_after == 0 {
                return Err(Error::internal(format!(
                    "prev event {id} has no known state"
                )));
            }
            if !groups.contains(&stored.state_after) {
                groups.push(stored.state_after);
            }
        }
        match groups.as_slice() {
            [] => Ok((0, std::sync::Arc::default())),
            [group] => Ok((*group, self.state.get(*group)?)),
            _ => {
                let states = groups
                    .iter()
                    .map(|group| Ok((*group, self.state.get(*group)?)))
                    .collect::<Result<Vec<_>>>()?;
                self.resolve_states(batch, rules, states)
            }
        }
    }

    /// Resolves several states (group, map) into one with state resolution v2 (ruma's)
    /// and writes it as a new state group, unless they are all the same.
    fn resolve_states(
        &self,
        batch: &mut crate::storage::Batch,
        rules: &RoomVersionRules,
        groups: Vec<(u64, std::sync::Arc<StateMap>)>,
    ) -> Result<(u64, std::sync::Arc<StateMap>)> {
        if groups.windows(2).all(|pair| pair[0].1 == pair[1].1) {
            return Ok(groups[0].clone());
        }
        let states: Vec<std::sync::Arc<StateMap>> =
            groups.into_iter().map(|(_, state)| state).collect();
        let Some(v2) = rules.state_res.v2_rules() else {
            return Err(Error::internal("room versions 1 and 2 cannot be resolved"));
        };
        let maps: Vec<ruma::state_res::StateMap<OwnedEventId>> = states
            .iter()
            .map(|state| {
                state
                    .iter()
                    .map(|((kind, key), id)| {
                        (
                            (StateEventType::from(kind.as_str()), key.clone()),
                            id.clone(),
                        )
                    })
                    .collect()
            })
            .collect();
        let mut auth_chains = Vec::new();
        for state in &states {
            let chain = self.auth_chain(state.values().cloned())?;
            auth_chains.push(chain.into_iter().collect());
        }
        let fetch = |id: &EventId| self.state_event(id).ok().flatten().map(|e| (*e).clone());
        let subgraph = |conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>| {
            self.conflicted_subgraph(conflicted.values().flatten().cloned().collect())
                .ok()
                .map(|set| set.into_iter().collect())
        };
        let resolved = ruma::state_res::resolve(
            &rules.authorization,
            v2,
            maps.iter(),
            auth_chains,
            fetch,
            subgraph,
        )
        .map_err(|error| Error::internal(format!("state resolution failed: {error}")))?;
        let map: StateMap = resolved
            .into_iter()
            .map(|((kind, key), id)| ((kind.to_string(), key), id))
            .collect();
        let group = self.state.create_snapshot(batch, &map)?;
        Ok((group, std::sync::Arc::new(map)))
    }

    /// Every event in the auth chains of the given events (not the events themselves).
    pub fn auth_chain(
        &self,
        start: impl IntoIterator<Item = OwnedEventId>,
    ) -> Result<HashSet<OwnedEventId>> {
        let mut seen = HashSet::new();
        let mut todo: Vec<OwnedEventId> = Vec::new();
        for id in start {
            if let Some(event) = self.state_event(&id)? {
                todo.extend(event.auth_events.iter().cloned());
            }
        }
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(event) = self.state_event(&id)? {
                todo.extend(
                    event
                        .auth_events
                        .iter()
                        .filter(|a| !seen.contains(*a))
                        .cloned(),
                );
            }
        }
        Ok(seen)
    }

    /// The conflicted state subgraph (room version 12): the events on auth-event paths
    /// between two conflicted events, the conflicted events included.
    fn conflicted_subgraph(
        &self,
        conflicted: HashSet<OwnedEventId>,
    ) -> Result<HashSet<OwnedEventId>> {
        let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
        fn walk(
            rooms: &Rooms,
            id: &OwnedEventId,
            conflicted: &HashSet<OwnedEventId>,
            reaches: &mut HashMap<OwnedEventId, bool>,
            depth: usize,
        ) -> bool {
            if let Some(known) = reaches.get(id) {
                return *known;
            }
            reaches.insert(id.clone(), false);
            let mut found = false;
            if depth < 10_000
                && let Ok(Some(event)) = rooms.state_event(id)
            {
                for auth in &event.auth_events {
                    if conflicted.contains(auth) | walk(rooms, auth, conflicted, reaches, depth + 1)
                    {
                        found = true;
                    }
                }
            }
            reaches.insert(id.clone(), found);
            found
        }
        let mut out: HashSet<OwnedEventId> = conflicted.clone();
        for id in &conflicted {
            walk(self, id, &conflicted, &mut reaches, 0);
        }
        for (id, reaches_conflicted) in reaches {
            if reaches_conflicted {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// The state before an event as a map, and the auth chain of that state (for
    /// `/state` and `send_join`).
    pub fn state_and_auth_chain_before(
        &self,
        event_id: &EventId,
    ) -> Result<(StateMap, Vec<OwnedEventId>)> {
        let stored = self
            .pdu(event_id)?
            .ok_or_else(|| Error::not_found("Unknown event"))?;
        let state = (*self.state.get(stored.state_before)?).clone();
        let chain = self.auth_chain(state.values().cloned())?;
        Ok((state, chain.into_iter().collect()))
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
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = Self::rules(&room.version)?;
        let state = self.state.get(room.state_group)?;
        let (_, mut object, _) =
            self.build_on_head(room_id, &room, &rules, &state, sender, &event)?;
        object.remove("signatures");
        object.remove("hashes");
        if rules.event_id_format != ruma::room_version_rules::EventIdFormatVersion::V1 {
            object.remove("event_id");
        }
        Ok((room.version, object))
    }
}
