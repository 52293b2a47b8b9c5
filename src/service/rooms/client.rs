//! Events as clients see them: `unsigned.prev_content`, state in the client format.

use serde_json::value::RawValue;

use super::{
    Rooms,
    pdu::{ClientEvent, ClientFormat, StoredPdu},
    state::StateMap,
};
use crate::Result;

impl Rooms {
    /// The content of the state this event replaced, for `unsigned.prev_content`.
    pub fn prev_content(&self, pdu: &StoredPdu) -> Result<Option<Box<RawValue>>> {
        if pdu.state_before == pdu.state_after {
            return Ok(None);
        }
        // The replaced event, when it was noted at write time; else found in the state
        // before (events stored without it).
        let replaced = match &pdu.replaces_state {
            Some(replaced) => Some(replaced.clone()),
            None => {
                #[derive(serde::Deserialize)]
                struct Slot {
                    #[serde(rename = "type")]
                    kind: String,
                    state_key: Option<String>,
                }
                let Ok(Slot {
                    kind,
                    state_key: Some(state_key),
                }) = serde_json::from_str(pdu.pdu.get())
                else {
                    return Ok(None);
                };
                let before = self.state.get(pdu.state_before)?;
                before.get(&(kind, state_key)).cloned()
            }
        };
        match replaced {
            Some(replaced) => Ok(self
                .state_event(&replaced)?
                .map(|event| event.content.clone())),
            None => Ok(None),
        }
    }

    /// A state map's events in the client format, with their type and state key.
    pub fn state_events(&self, state: &StateMap) -> Result<Vec<(String, String, ClientEvent)>> {
        let mut out = Vec::new();
        for ((kind, state_key), event_id) in state {
            if let Some(pdu) = self.pdu(event_id)? {
                let event = pdu.to_client(event_id, ClientFormat::Full, None, None);
                out.push((kind.clone(), state_key.clone(), event));
            }
        }
        Ok(out)
    }
}
