//! Who may do what in a room now: the power levels of its current state, with the room
//! version's rules (creators of room version 12 rooms outrank everyone).

use ruma::{
    OwnedUserId, RoomId, UserId,
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
};
use serde_json::Value;

use super::{Rooms, state::StateMap};
use crate::{Error, Result};

impl Rooms {
    /// The room's power levels now.
    pub fn power_levels(&self, room_id: &RoomId) -> Result<RoomPowerLevels> {
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = Self::rules(&room.version)?;
        let creators = self.creators_in(&*self.current_state(room_id)?)?;
        let source = match self.state_content(room_id, "m.room.power_levels", "")? {
            Some(content) => serde_json::from_value::<RoomPowerLevelsEventContent>(content)
                .map(RoomPowerLevelsSource::Original)
                .unwrap_or_default(),
            None => RoomPowerLevelsSource::None,
        };
        Ok(RoomPowerLevels::new(source, &rules.authorization, creators))
    }

    /// Whether `user` may send the state event `kind` in the room now.
    pub fn may_send_state(&self, room_id: &RoomId, user: &UserId, kind: &str) -> Result<bool> {
        Ok(self
            .power_levels(room_id)?
            .user_can_send_state(user, StateEventType::from(kind)))
    }

    /// The creators named by the create event of `state`: its sender and its
    /// `additional_creators`.
    pub fn creators_in(&self, state: &StateMap) -> Result<Vec<OwnedUserId>> {
        let Some(create_id) = state.get(&("m.room.create".to_owned(), String::new())) else {
            return Ok(Vec::new());
        };
        let Some(create) = self.state_event(create_id)? else {
            return Ok(Vec::new());
        };
        let content: Value = serde_json::from_str(create.content.get()).unwrap_or_default();
        let additional = content
            .get("additional_creators")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().and_then(|id| OwnedUserId::try_from(id).ok()));
        Ok(std::iter::once(create.sender.clone())
            .chain(additional)
            .collect())
    }
}
