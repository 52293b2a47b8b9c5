//! Who may see which event: the spec's history visibility rules.

use ruma::{EventId, UserId};

use super::{Rooms, pdu::StoredPdu};
use crate::Result;

impl Rooms {
    /// Whether `user` may see `pdu`, judged by the history visibility and the user's
    /// membership in the state just before it.
    pub fn can_see_event(
        &self,
        user: &UserId,
        event_id: &EventId,
        pdu: &StoredPdu,
    ) -> Result<bool> {
        let state = self.state.get(pdu.state_before)?;
        let visibility = self
            .content_in(&state, "m.room.history_visibility", "")?
            .and_then(|c| {
                c.get("history_visibility")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "shared".to_owned());
        if visibility == "world_readable" {
            return Ok(true);
        }
        let membership_then = self
            .content_in(&state, "m.room.member", user.as_str())?
            .and_then(|c| {
                c.get("membership")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            });
        match membership_then.as_deref() {
            Some("join") => return Ok(true),
            Some("invite") if visibility == "invited" || visibility == "shared" => {
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
        if visibility == "shared" && self.is_joined(&pdu.room_id, user)? {
            return Ok(true);
        }
        Ok(false)
    }
}
