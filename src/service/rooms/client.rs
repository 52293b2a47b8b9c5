//! Events as clients see them: visibility applied, `unsigned` filled in.

use ruma::{DeviceId, EventId, UserId};
use serde_json::Value;

use super::{
    Rooms,
    pdu::{ClientFormat, StoredPdu},
    state::StateMap,
};
use crate::{Error, Result};

impl Rooms {
    /// An event as `user` may see it, or `None`.
    pub fn visible_event(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        event_id: &EventId,
        format: ClientFormat,
    ) -> Result<Option<(StoredPdu, Value)>> {
        let Some(pdu) = self.pdu(event_id)? else {
            return Ok(None);
        };
        if pdu.soft_failed || !self.can_see_event(user, event_id, &pdu)? {
            return Ok(None);
        }
        let viewer = device.map(|device| (user, device));
        let value = pdu.to_client(event_id, format, viewer, self.prev_content(&pdu)?);
        Ok(Some((pdu, value)))
    }

    /// The previous content of the state this event replaced, for `unsigned.prev_content`.
    pub fn prev_content(&self, pdu: &StoredPdu) -> Result<Option<Value>> {
        if pdu.state_before == pdu.state_after {
            return Ok(None);
        }
        // The replaced event, when it was noted at write time; else found in the state
        // before (events stored without it).
        if let Some(replaced) = &pdu.replaces_state {
            return match self.state_event(replaced)? {
                Some(event) => Ok(Some(
                    serde_json::from_str(event.content.get()).map_err(Error::internal)?,
                )),
                None => Ok(None),
            };
        }
        let parsed: Value = serde_json::from_str(pdu.pdu.get()).map_err(Error::internal)?;
        let (Some(kind), Some(state_key)) = (
            parsed.get("type").and_then(Value::as_str),
            parsed.get("state_key").and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        let before = self.state.get(pdu.state_before)?;
        self.content_in(&before, kind, state_key)
    }

    /// A state map's events in the client format, with their type and state key.
    pub fn state_events(&self, state: &StateMap) -> Result<Vec<(String, String, Value)>> {
        let mut out = Vec::new();
        for ((kind, state_key), event_id) in state {
            if let Some(pdu) = self.pdu(event_id)? {
                let value = pdu.to_client(event_id, ClientFormat::Full, None, None);
                out.push((kind.clone(), state_key.clone(), value));
            }
        }
        Ok(out)
    }
}
