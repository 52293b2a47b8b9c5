//! Who may see which event: the spec's history visibility rules.

use ruma::{
    EventId, RoomId, UserId,
    events::room::{history_visibility::HistoryVisibility, member::MembershipState},
};

use super::{Rooms, membership::membership_in, pdu::StoredPdu, state::StateMap};
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

    /// Whether `user` may see `pdu`, judged by the history visibility and the user's
    /// membership in the state just before it.
    pub fn can_see_event(
        &self,
        user: &UserId,
        event_id: &EventId,
        pdu: &StoredPdu,
    ) -> Result<bool> {
        let state = self.state.get(pdu.state_before)?;
        let visibility = self.history_visibility_in(&state)?;
        if visibility == HistoryVisibility::WorldReadable {
            return Ok(true);
        }
        let membership_then = self
            .content_in(&state, "m.room.member", user.as_str())?
            .and_then(|content| membership_in(&content));
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
        let parsed = pdu.parse(event_id.to_owned()).ok();
        if parsed
            .as_ref()
            .is_some_and(|p| p.state_key.as_deref() == Some(user.as_str()))
        {
            return Ok(true);
        }
        if visibility == HistoryVisibility::Shared && self.is_joined(&pdu.room_id, user)? {
            return Ok(true);
        }
        Ok(false)
    }
}
