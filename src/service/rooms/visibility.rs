//! Who may see which event: the spec's history visibility rules.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    DeviceId, EventId, OwnedRoomId, RoomId, UserId,
    events::room::{history_visibility::HistoryVisibility, member::MembershipState},
};

use super::{
    Rooms,
    membership::membership_in,
    pdu::{ClientEvent, ClientFormat, Served},
    state::StateMap,
};
use crate::Result;

impl Rooms {
    /// A room's history visibility in `state` (`shared` when unset or unreadable).
    pub fn history_visibility_in(&self, state: &StateMap) -> Result<HistoryVisibility> {
        Ok(self
            .content_in(state, "m.room.history_visibility", "")?
            .and_then(|content| {
                content
                    .get("history_visibility")
                    .and_then(|v| v.as_str())
                    .map(HistoryVisibility::from)
            })
            .unwrap_or(HistoryVisibility::Shared))
    }

    /// A room's current history visibility.
    pub fn history_visibility(&self, room_id: &RoomId) -> Result<HistoryVisibility> {
        let state = self.current_state(room_id)?;
        self.history_visibility_in(&state)
    }

    /// An event as `user` may see it, or `None`.
    pub fn visible_event(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        event_id: &EventId,
        format: ClientFormat,
    ) -> Result<Option<Shown>> {
        Viewer::new(self, user, device).event(event_id, format)
    }
}

/// An event a viewer may see: as stored, and as shown to them.
pub type Shown = (Arc<Served>, ClientEvent);

/// A user (and device) reading events, with what was worked out for each state group
/// on the way: the events of a page mostly share the state before them, so a page of a
/// thousand messages reads the history visibility and the membership once.
pub struct Viewer<'a> {
    rooms: &'a Rooms,
    user: &'a UserId,
    device: Option<&'a DeviceId>,
    /// By state group: the history visibility and the user's membership then.
    then: HashMap<u64, (HistoryVisibility, Option<MembershipState>)>,
    /// By room: whether the user is joined now.
    joined_now: HashMap<OwnedRoomId, bool>,
    /// By room: its messages' lifetime (`m.room.retention`).
    lifetimes: HashMap<OwnedRoomId, Option<u64>>,
}

impl<'a> Viewer<'a> {
    pub fn new(rooms: &'a Rooms, user: &'a UserId, device: Option<&'a DeviceId>) -> Self {
        Self {
            rooms,
            user,
            device,
            then: HashMap::new(),
            joined_now: HashMap::new(),
            lifetimes: HashMap::new(),
        }
    }

    /// An event as the viewer may see it (soft-failed events never), or `None`.
    pub fn event(&mut self, event_id: &EventId, format: ClientFormat) -> Result<Option<Shown>> {
        Ok(self.events(&[event_id], format)?.pop().flatten())
    }

    /// [`Viewer::event`] for many events (a page of a timeline), read together, with
    /// their bundled aggregations (`aggregations.rs`).
    pub fn events(
        &mut self,
        event_ids: &[&EventId],
        format: ClientFormat,
    ) -> Result<Vec<Option<Shown>>> {
        let mut shown = self.events_unbundled(event_ids, format)?;
        self.bundle(event_ids, &mut shown, format)?;
        Ok(shown)
    }

    pub fn user(&self) -> &UserId {
        self.user
    }

    pub fn rooms(&self) -> &Rooms {
        self.rooms
    }

    /// [`Viewer::events`] without the bundled aggregations.
    pub(super) fn events_unbundled(
        &mut self,
        event_ids: &[&EventId],
        format: ClientFormat,
    ) -> Result<Vec<Option<Shown>>> {
        let served = self.rooms.served(event_ids)?;
        let mut out = Vec::with_capacity(served.len());
        for (event_id, served) in event_ids.iter().zip(served) {
            out.push(match served {
                Some(served) if !served.stored.soft_failed => {
                    if self.can_see(&served)? {
                        let event = self.show(event_id, &served, format)?;
                        Some((served, event))
                    } else {
                        None
                    }
                }
                _ => None,
            });
        }
        Ok(out)
    }

    /// An event in the client format, for this viewer's device.
    pub fn show(
        &self,
        event_id: &EventId,
        served: &Served,
        format: ClientFormat,
    ) -> Result<ClientEvent> {
        let viewer = self.device.map(|device| (self.user, device));
        let prev_content = self.rooms.prev_content(&served.stored)?;
        Ok(served.to_client(event_id, format, viewer, prev_content.as_deref()))
    }

    /// Whether the viewer may see `pdu`, judged by the history visibility and their
    /// membership in the state just before it. A message past its room's retention
    /// lifetime is seen by no one.
    pub fn can_see(&mut self, served: &Served) -> Result<bool> {
        let pdu = &served.stored;
        let lifetime = match self.lifetimes.get(&pdu.room_id) {
            Some(lifetime) => *lifetime,
            None => {
                let lifetime = self.rooms.max_lifetime(&pdu.room_id)?;
                self.lifetimes.insert(pdu.room_id.clone(), lifetime);
                lifetime
            }
        };
        if Rooms::is_past_lifetime(pdu, lifetime) {
            return Ok(false);
        }
        let (visibility, membership_then) = match self.then.get(&pdu.state_before) {
            Some(then) => then.clone(),
            None => {
                let state = self.rooms.state.get(pdu.state_before)?;
                let then = (
                    self.rooms.history_visibility_in(&state)?,
                    self.rooms
                        .content_in(&state, "m.room.member", self.user.as_str())?
                        .and_then(|content| membership_in(&content)),
                );
                self.then.insert(pdu.state_before, then.clone());
                then
            }
        };
        if visibility == HistoryVisibility::WorldReadable {
            return Ok(true);
        }
        match membership_then {
            Some(MembershipState::Join) => return Ok(true),
            Some(MembershipState::Invite)
                if matches!(
                    visibility,
                    HistoryVisibility::Invited | HistoryVisibility::Shared
                ) =>
            {
                return Ok(true);
            }
            _ => {}
        }
        // A user always sees the event that changed their own membership.
        if served.state_key() == Some(self.user.as_str()) {
            return Ok(true);
        }
        Ok(visibility == HistoryVisibility::Shared && self.joined_now(&pdu.room_id)?)
    }

    fn joined_now(&mut self, room_id: &RoomId) -> Result<bool> {
        if let Some(joined) = self.joined_now.get(room_id) {
            return Ok(*joined);
        }
        let joined = self.rooms.is_joined(room_id, self.user)?;
        self.joined_now.insert(room_id.to_owned(), joined);
        Ok(joined)
    }
}
