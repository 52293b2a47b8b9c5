//! Building a local event: the PDU filled in on the room's head, hashed, signed, and
//! authorised against the room's state by ruma's implementation of the spec's rules.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, RoomVersionId, UserId,
    api::error::ErrorKind,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
};

use palisade_federation::KeyError;

use super::{Head, NewEvent, raw_json};
use crate::{
    Error, Result,
    service::{
        rooms::{
            Rooms,
            pdu::{MAX_PDU_BYTES, Pdu, SignedPdu},
            state::StateMap,
        },
        users::{now_ms, random_localpart},
    },
};

/// The largest integer canonical JSON allows (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// What a new PDU is built from.
pub(in crate::service::rooms) struct Draft<'a> {
    pub version: &'a RoomVersionId,
    pub rules: &'a RoomVersionRules,
    /// The state its auth events are chosen from.
    pub state: &'a StateMap,
    /// None for a create event whose id names the room (room version 12).
    pub room_id: Option<&'a RoomId>,
    pub prev_events: &'a [OwnedEventId],
    pub depth: u64,
    pub sender: &'a UserId,
    pub event: &'a NewEvent,
}

impl Rooms {
    /// Builds the next event of a room on top of its head and current state, and
    /// authorises it (a message, by what the state already allowed if it did).
    pub(in crate::service::rooms) fn build_on_head(
        &self,
        head: &Head,
        state: &StateMap,
        sender: &UserId,
        event: &NewEvent,
    ) -> Result<SignedPdu> {
        let (event_id, object) = self.build(Draft {
            version: &head.record.version,
            rules: &head.rules,
            state,
            room_id: Some(&head.room_id),
            prev_events: &head.record.extremities,
            depth: head.record.depth + 1,
            sender,
            event,
        })?;
        let (room_id, state_group) = (&head.room_id, head.record.state_group);
        if self.authorised.knows(room_id, state_group, sender, event) {
            let pdu = self.check_format(&head.rules, &event_id, &object)?;
            return Ok(SignedPdu {
                event_id,
                object,
                pdu,
            });
        }
        let signed = self.authorise(&head.rules, event_id, object, state)?;
        self.authorised.note(room_id, state_group, sender, event);
        Ok(signed)
    }

    /// Builds, hashes and signs a PDU.
    pub(super) fn build(&self, draft: Draft<'_>) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        let Draft {
            version,
            rules,
            event,
            ..
        } = draft;
        let mut json = serde_json::json!({
            "type": event.kind,
            "content": event.content,
            "sender": draft.sender,
            "origin_server_ts": event.origin_server_ts.unwrap_or_else(now_ms),
            "depth": draft.depth.min(MAX_SAFE_INTEGER),
            "prev_events": self.references(rules, draft.prev_events)?,
            "auth_events": self.references(rules, &auth_events(&draft)?)?,
        });
        let object = json.as_object_mut().expect("built as an object");
        if let Some(room_id) = draft.room_id {
            object.insert("room_id".to_owned(), room_id.as_str().into());
        }
        if let Some(state_key) = &event.state_key {
            object.insert("state_key".to_owned(), state_key.as_str().into());
        }
        if let Some(redacts) = &event.redacts {
            if !rules.redaction.content_field_redacts {
                object.insert("redacts".to_owned(), redacts.as_str().into());
            }
            if rules.redaction.content_field_redacts
                && let Some(content) = object.get_mut("content").and_then(|c| c.as_object_mut())
            {
                content.insert("redacts".to_owned(), redacts.as_str().into());
            }
        }
        if rules.event_id_format == EventIdFormatVersion::V1 {
            let id = format!("${}:{}", random_localpart(), self.server_name);
            object.insert("event_id".to_owned(), id.into());
        }
        if matches!(version, RoomVersionId::V1 | RoomVersionId::V2) {
            object.insert("origin".to_owned(), self.server_name.as_str().into());
        }
        self.sign(rules, json)
    }

    /// Signs a built event and names it: hashes and the server's signature, the event id
    /// (the reference hash from room version 3), and the spec's size limit.
    fn sign(
        &self,
        rules: &RoomVersionRules,
        json: serde_json::Value,
    ) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        let mut canonical = match CanonicalJsonValue::try_from(json) {
            Ok(CanonicalJsonValue::Object(object)) => object,
            Ok(_) => unreachable!("built as an object"),
            Err(error) => {
                return Err(Error::bad_json(format!(
                    "Content is not canonical JSON: {error}"
                )));
            }
        };
        self.signing_key
            .sign_event(&self.server_name, &mut canonical, &rules.redaction)
            .map_err(|error| match error {
                KeyError::TooLarge => too_large(),
                error => Error::internal(error),
            })?;
        let event_id = match canonical.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => {
                let hash =
                    ruma::signatures::reference_hash(&canonical, rules).map_err(|_| too_large())?;
                format!("${hash}")
            }
        };
        let size = serde_json::to_vec(&canonical)
            .map_err(Error::internal)?
            .len();
        if size > MAX_PDU_BYTES {
            return Err(too_large());
        }
        Ok((
            OwnedEventId::try_from(event_id).map_err(Error::internal)?,
            canonical,
        ))
    }

    /// Event references in the room version's format: ids, or `[id, hashes]` pairs.
    fn references(
        &self,
        rules: &RoomVersionRules,
        ids: &[OwnedEventId],
    ) -> Result<serde_json::Value> {
        if rules.events_reference_format != EventsReferenceFormatVersion::V1 {
            return Ok(serde_json::json!(ids));
        }
        let mut out = Vec::new();
        for id in ids {
            let hashes = self
                .pdu(id)?
                .and_then(|pdu| serde_json::from_str::<serde_json::Value>(pdu.pdu.get()).ok())
                .and_then(|value| value.get("hashes").cloned())
                .unwrap_or_else(|| serde_json::json!({}));
            out.push(serde_json::json!([id, hashes]));
        }
        Ok(serde_json::Value::Array(out))
    }

    /// Checks a built PDU's format and its authorisation against `state`.
    pub(super) fn authorise(
        &self,
        rules: &RoomVersionRules,
        event_id: OwnedEventId,
        object: CanonicalJsonObject,
        state: &StateMap,
    ) -> Result<SignedPdu> {
        let pdu = self.check_format(rules, &event_id, &object)?;
        self.check_auth(rules, &pdu, state)?;
        Ok(SignedPdu {
            event_id,
            object,
            pdu,
        })
    }

    /// Checks a built PDU's format, and parses it.
    fn check_format(
        &self,
        rules: &RoomVersionRules,
        event_id: &EventId,
        object: &CanonicalJsonObject,
    ) -> Result<Pdu> {
        ruma::state_res::check_pdu_format(object, &rules.event_format)
            .map_err(|error| Error::bad_json(format!("Invalid event: {error}")))?;
        let raw = raw_json(object)?;
        Pdu::parse(event_id.to_owned(), &raw).map_err(Error::internal)
    }

    /// The spec's authorisation rules for a parsed event (ruma's implementation): the
    /// state-independent ones, with its auth events, then those against `state`.
    pub(in crate::service::rooms) fn check_auth(
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
}

/// The auth events the spec selects for a draft from its state.
fn auth_events(draft: &Draft<'_>) -> Result<Vec<OwnedEventId>> {
    let event = draft.event;
    let kind = TimelineEventType::from(event.kind.as_str());
    let raw_content = serde_json::value::to_raw_value(&event.content).map_err(Error::internal)?;
    let auth_types = ruma::state_res::auth_types_for_event(
        &kind,
        draft.sender,
        event.state_key.as_deref(),
        &raw_content,
        &draft.rules.authorization,
    )
    .map_err(|error| Error::bad_json(format!("Invalid event content: {error}")))?;
    Ok(auth_types
        .iter()
        .filter_map(|(kind, state_key)| {
            draft
                .state
                .get(&(kind.to_string(), state_key.clone()))
                .cloned()
        })
        .collect())
}

/// The answer to an event over the spec's size limit, before anything is stored.
fn too_large() -> Error {
    Error::new(
        ErrorKind::TooLarge,
        "The event is larger than the 65536 bytes the spec allows",
    )
}
