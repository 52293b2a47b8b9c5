//! The state of a room where its DAG forks: the state before an event from the states
//! after its parents, several states merged with state resolution v2 (ruma's), and the
//! auth chains both need.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{EventId, OwnedEventId, events::StateEventType, room_version_rules::RoomVersionRules};

use super::{Rooms, pdu::Pdu, state::StateMap};
use crate::{Error, Result, storage::Batch};

impl Rooms {
    /// The room's current state once `event` joins its forward extremities (it is the
    /// last of them): the state after the event when it is the only one, else the
    /// resolution of the states after each extremity (the event's is `after`). The event
    /// is not written yet; the resolution sees it all the same.
    pub(super) fn state_of_extremities(
        &self,
        batch: &mut Batch,
        rules: &RoomVersionRules,
        (extremities, event): (&[OwnedEventId], &Pdu),
        after: (u64, Arc<StateMap>),
    ) -> Result<(u64, Arc<StateMap>)> {
        if extremities.len() == 1 {
            return Ok(after);
        }
        let mut states = vec![after];
        for id in &extremities[..extremities.len() - 1] {
            if let Some(stored) = self.pdu(id)? {
                states.push((stored.state_after, self.state.get(stored.state_after)?));
            }
        }
        let events = Known {
            rooms: self,
            staged: Some(Arc::new(event.clone())),
        };
        self.resolve_states(batch, rules, states, &events)
    }

    /// The state before an event: the state after its one prev event, or the resolution
    /// of the states after each.
    pub(super) fn state_before_event(
        &self,
        batch: &mut Batch,
        rules: &RoomVersionRules,
        pdu: &Pdu,
    ) -> Result<(u64, Arc<StateMap>)> {
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
            [] => Ok((0, Arc::default())),
            [group] => Ok((*group, self.state.get(*group)?)),
            _ => {
                let states = groups
                    .iter()
                    .map(|group| Ok((*group, self.state.get(*group)?)))
                    .collect::<Result<Vec<_>>>()?;
                let events = Known {
                    rooms: self,
                    staged: None,
                };
                self.resolve_states(batch, rules, states, &events)
            }
        }
    }

    /// Resolves several states (group, map) into one with state resolution v2 (ruma's)
    /// and writes it as a new state group, unless they are all the same. `events` finds
    /// the events the states name.
    fn resolve_states(
        &self,
        batch: &mut Batch,
        rules: &RoomVersionRules,
        groups: Vec<(u64, Arc<StateMap>)>,
        events: &Known<'_>,
    ) -> Result<(u64, Arc<StateMap>)> {
        if groups.windows(2).all(|pair| pair[0].1 == pair[1].1) {
            return Ok(groups[0].clone());
        }
        let states: Vec<Arc<StateMap>> = groups.into_iter().map(|(_, state)| state).collect();
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
            let chain = events.auth_chain(state.values().cloned())?;
            auth_chains.push(chain.into_iter().collect());
        }
        let fetch = |id: &EventId| events.get(id).ok().flatten().map(|e| (*e).clone());
        let subgraph = |conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>| {
            events
                .conflicted_subgraph(conflicted.values().flatten().cloned().collect())
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
        Ok((group, Arc::new(map)))
    }

    /// Every event in the auth chains of the given events (not the events themselves).
    pub fn auth_chain(
        &self,
        start: impl IntoIterator<Item = OwnedEventId>,
    ) -> Result<HashSet<OwnedEventId>> {
        Known {
            rooms: self,
            staged: None,
        }
        .auth_chain(start)
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
}

/// The events a resolution reads: the stored ones, and the event being staged (not
/// written yet when its arrival forks the room's state).
struct Known<'a> {
    rooms: &'a Rooms,
    staged: Option<Arc<Pdu>>,
}

impl Known<'_> {
    fn get(&self, event_id: &EventId) -> Result<Option<Arc<Pdu>>> {
        match &self.staged {
            Some(staged) if staged.event_id == event_id => Ok(Some(staged.clone())),
            _ => self.rooms.state_event(event_id),
        }
    }

    /// Every event in the auth chains of the given events (not the events themselves).
    fn auth_chain(
        &self,
        start: impl IntoIterator<Item = OwnedEventId>,
    ) -> Result<HashSet<OwnedEventId>> {
        let mut seen = HashSet::new();
        let mut todo: Vec<OwnedEventId> = Vec::new();
        for id in start {
            if let Some(event) = self.get(&id)? {
                todo.extend(event.auth_events.iter().cloned());
            }
        }
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(event) = self.get(&id)? {
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
            events: &Known<'_>,
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
                && let Ok(Some(event)) = events.get(id)
            {
                for auth in &event.auth_events {
                    if conflicted.contains(auth)
                        | walk(events, auth, conflicted, reaches, depth + 1)
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
}
