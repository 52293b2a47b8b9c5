//! The PDU: a room event as servers sign, store and exchange it, and its client views.

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::TimelineEventType,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// The largest PDU the spec allows: its canonical JSON with signatures, in bytes.
pub const MAX_PDU_BYTES: usize = 65_536;

/// A stored PDU with what this server knows about it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredPdu {
    pub room_id: OwnedRoomId,
    /// Its position in the global stream (and so in the room's timeline).
    pub position: u64,
    /// The state group of the room's state just before this event.
    pub state_before: u64,
    /// The state group just after it (different only for state events).
    pub state_after: u64,
    /// The event that redacted this one; `pdu` then holds the redacted form.
    pub redacted_by: Option<OwnedEventId>,
    /// The device transaction id it was sent with, shown only to that device.
    pub txn: Option<(String, String)>,
    /// Known but not in the timeline: an auth or state event fetched from another
    /// server, or a soft-failed event. Its position is 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outlier: bool,
    /// Authorised by its past but not by the room's current state when it arrived: kept
    /// (with its state) but never served to clients nor built upon.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft_failed: bool,
    /// For a state event in the timeline, the state event it replaced (served as
    /// `unsigned.replaces_state`, from which clients tell a name change from a join).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_state: Option<OwnedEventId>,
    /// The PDU, as signed canonical JSON.
    pub pdu: Box<RawValue>,
}

/// The fields of a PDU that authorisation and serving need, parsed from its JSON.
#[derive(Clone, Debug, Deserialize)]
pub struct Pdu {
    #[serde(skip_deserializing, default = "unset_event_id")]
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    #[serde(deserialize_with = "event_references")]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(deserialize_with = "event_references")]
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    #[serde(default)]
    pub unsigned: Option<Box<RawValue>>,
}

/// Stands in for the id until [`Pdu::parse`] sets it.
fn unset_event_id() -> OwnedEventId {
    OwnedEventId::try_from("$unset").expect("a valid event id")
}

/// Event references are ids (room version 3 on) or `[id, hashes]` pairs (versions 1, 2).
fn event_references<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<OwnedEventId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Reference {
        Id(OwnedEventId),
        Pair(OwnedEventId, serde::de::IgnoredAny),
    }
    let references = Vec::<Reference>::deserialize(deserializer)?;
    Ok(references
        .into_iter()
        .map(|reference| match reference {
            Reference::Id(id) | Reference::Pair(id, _) => id,
        })
        .collect())
}

impl Pdu {
    /// Parses a PDU's JSON; `event_id` is given because room versions 3 and later do not
    /// carry it.
    pub fn parse(event_id: OwnedEventId, json: &RawValue) -> serde_json::Result<Self> {
        let mut pdu: Pdu = serde_json::from_str(json.get())?;
        pdu.event_id = event_id;
        if pdu.redacts.is_none() && pdu.kind == TimelineEventType::RoomRedaction {
            #[derive(Deserialize)]
            struct Redacts {
                redacts: Option<OwnedEventId>,
            }
            if let Ok(content) = serde_json::from_str::<Redacts>(pdu.content.get()) {
                pdu.redacts = content.redacts;
            }
        }
        Ok(pdu)
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}

/// The fields servers keep to themselves; clients never see them.
const FEDERATION_ONLY_FIELDS: &[&str] = &[
    "auth_events",
    "prev_events",
    "depth",
    "hashes",
    "signatures",
    "origin",
    "membership",
    "prev_state",
];

/// How an event is shown to a client.
pub enum ClientFormat {
    /// With `room_id` (`/messages`, `/event`, `/context`, `/state`).
    Full,
    /// Without `room_id` (`/sync`).
    Sync,
}

impl StoredPdu {
    /// Whether the state before and after it is known (timeline and soft-failed events).
    pub fn has_state(&self) -> bool {
        !self.outlier || self.soft_failed
    }

    /// The event in the client-server format, with `unsigned` filled in for `viewer`'s
    /// device (`transaction_id` goes only to the device that sent it).
    pub fn to_client(
        &self,
        event_id: &ruma::EventId,
        format: ClientFormat,
        viewer: Option<(&UserId, &ruma::DeviceId)>,
        prev_content: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(self.pdu.get()).unwrap_or_default();
        for field in FEDERATION_ONLY_FIELDS {
            value.remove(*field);
        }
        value.insert("event_id".to_owned(), event_id.as_str().into());
        // Room version 11 moved `redacts` into the content; clients written before it
        // still read the top-level key, so both are served.
        if value.get("type").and_then(serde_json::Value::as_str) == Some("m.room.redaction")
            && !value.contains_key("redacts")
            && let Some(redacts) = value
                .get("content")
                .and_then(|content| content.get("redacts"))
                .cloned()
        {
            value.insert("redacts".to_owned(), redacts);
        }
        match format {
            ClientFormat::Full => {
                value.insert("room_id".to_owned(), self.room_id.as_str().into());
            }
            ClientFormat::Sync => {
                value.remove("room_id");
            }
        }
        let mut unsigned = match value.remove("unsigned") {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let ts = value
            .get("origin_server_ts")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let now = crate::service::users::now_ms();
        unsigned.insert("age".to_owned(), now.saturating_sub(ts).into());
        if let (Some((user, device)), Some((txn_device, txn_id))) = (viewer, &self.txn) {
            let sender = value.get("sender").and_then(serde_json::Value::as_str);
            if sender == Some(user.as_str()) && txn_device == device.as_str() {
                unsigned.insert("transaction_id".to_owned(), txn_id.as_str().into());
            }
        }
        if let Some(redacted_by) = &self.redacted_by {
            unsigned.insert(
                "redacted_because".to_owned(),
                serde_json::json!({ "event_id": redacted_by, "type": "m.room.redaction" }),
            );
        }
        if let Some(prev_content) = prev_content {
            unsigned.insert("prev_content".to_owned(), prev_content);
        }
        if let Some(replaced) = &self.replaces_state {
            unsigned.insert("replaces_state".to_owned(), replaced.as_str().into());
        }
        value.insert("unsigned".to_owned(), unsigned.into());
        value.into()
    }

    pub fn parse(&self, event_id: OwnedEventId) -> serde_json::Result<Pdu> {
        Pdu::parse(event_id, &self.pdu)
    }
}

/// A signed PDU: its id, its canonical JSON and its parsed form. Built and signed here,
/// or received from another server with hashes and signatures checked (on a hash
/// mismatch, its redacted form).
#[derive(Clone, Debug)]
pub struct SignedPdu {
    pub event_id: OwnedEventId,
    pub object: ruma::CanonicalJsonObject,
    pub pdu: Pdu,
}
