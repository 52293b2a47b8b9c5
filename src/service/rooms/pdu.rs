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
    /// Past its room's retention lifetime (`m.room.retention`): `pdu` holds the redacted
    /// form, and clients are never served it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
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
    /// About the bytes it holds in memory, once parsed.
    pub fn weight(&self) -> usize {
        self.content.get().len()
            + 64 * (self.prev_events.len() + self.auth_events.len())
            + self
                .unsigned
                .as_ref()
                .map_or(0, |unsigned| unsigned.get().len())
            + 256
    }

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

/// How an event is shown to a client.
#[derive(Clone, Copy)]
pub enum ClientFormat {
    /// With `room_id` (`/messages`, `/event`, `/context`, `/state`).
    Full,
    /// Without `room_id` (`/sync`).
    Sync,
}

/// An event in the client-server format, written once as JSON, with the fields filters,
/// ignore lists and lazy-loaded members look at.
#[derive(Clone, Debug)]
pub struct ClientEvent {
    pub json: Box<RawValue>,
    pub kind: String,
    pub sender: String,
    pub state_key: Option<String>,
}

impl ClientEvent {
    /// The event as ruma's `Raw` of any event type.
    pub fn into_raw<T>(self) -> ruma::serde::Raw<T> {
        ruma::serde::Raw::from_json(self.json)
    }

    /// The event as a JSON tree, for the few callers that edit or embed it.
    pub fn into_value(self) -> serde_json::Value {
        serde_json::from_str(self.json.get()).unwrap_or_default()
    }

    /// The event's `content`, as written.
    pub fn content(&self) -> Option<Box<RawValue>> {
        #[derive(Deserialize)]
        struct Content<'a> {
            #[serde(borrow)]
            content: &'a RawValue,
        }
        serde_json::from_str::<Content<'_>>(self.json.get())
            .ok()
            .map(|found| found.content.to_owned())
    }
}

/// The fields of a stored PDU that clients see, read from its JSON once; the rest
/// (`auth_events`, `prev_events`, `hashes`, `signatures`, `depth`...) is skipped unread.
#[derive(Debug, Deserialize)]
struct ClientFields {
    content: Box<RawValue>,
    origin_server_ts: Box<RawValue>,
    sender: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: Option<String>,
    #[serde(default)]
    redacts: Option<OwnedEventId>,
    #[serde(default)]
    unsigned: Option<Box<RawValue>>,
}

/// What the client format of an event is made of, but for what depends on the viewer
/// and the moment (`age`, `transaction_id`, `prev_content`, `room_id`).
#[derive(Debug)]
struct ClientTemplate {
    /// Its fields, `redacts` also for a redaction that carries it in its content (room
    /// version 11 moved it there; clients written before it still read the top-level
    /// key, so both are served), `unsigned` taken out into the map below.
    fields: ClientFields,
    ts: u64,
    /// What the PDU's own `unsigned` held (an invite's stripped room state, for one),
    /// less the keys this server sets.
    unsigned: serde_json::Map<String, serde_json::Value>,
}

impl ClientTemplate {
    fn of(pdu: &StoredPdu) -> Self {
        let mut fields: ClientFields =
            serde_json::from_str(pdu.pdu.get()).unwrap_or_else(|_| ClientFields {
                // Every stored PDU passed these checks when it was received.
                content: empty_object().to_owned(),
                origin_server_ts: zero().to_owned(),
                sender: String::new(),
                kind: String::new(),
                state_key: None,
                redacts: None,
                unsigned: None,
            });
        if fields.redacts.is_none() && fields.kind == "m.room.redaction" {
            #[derive(Deserialize)]
            struct Redacts {
                redacts: Option<OwnedEventId>,
            }
            fields.redacts = serde_json::from_str::<Redacts>(fields.content.get())
                .ok()
                .and_then(|content| content.redacts);
        }
        let mut unsigned: serde_json::Map<String, serde_json::Value> = fields
            .unsigned
            .take()
            .and_then(|unsigned| serde_json::from_str(unsigned.get()).ok())
            .unwrap_or_default();
        for key in OWN_UNSIGNED_KEYS {
            unsigned.remove(*key);
        }
        Self {
            ts: fields.origin_server_ts.get().parse().unwrap_or(0),
            fields,
            unsigned,
        }
    }

    fn render(
        &self,
        pdu: &StoredPdu,
        event_id: &ruma::EventId,
        format: ClientFormat,
        viewer: Option<(&UserId, &ruma::DeviceId)>,
        prev_content: Option<&RawValue>,
    ) -> ClientEvent {
        let fields = &self.fields;
        let transaction_id = match (viewer, &pdu.txn) {
            (Some((user, device)), Some((txn_device, txn_id)))
                if fields.sender == user.as_str() && txn_device == device.as_str() =>
            {
                Some(txn_id.as_str())
            }
            _ => None,
        };
        let json = ClientJson {
            content: &fields.content,
            event_id,
            origin_server_ts: &fields.origin_server_ts,
            redacts: fields.redacts.as_deref(),
            room_id: match format {
                ClientFormat::Full => Some(&pdu.room_id),
                ClientFormat::Sync => None,
            },
            sender: &fields.sender,
            state_key: fields.state_key.as_deref(),
            kind: &fields.kind,
            unsigned: Unsigned {
                stored: &self.unsigned,
                age: crate::service::users::now_ms().saturating_sub(self.ts),
                transaction_id,
                redacted_because: pdu.redacted_by.as_deref().map(|event_id| RedactedBecause {
                    event_id,
                    kind: "m.room.redaction",
                }),
                prev_content,
                replaces_state: pdu.replaces_state.as_deref(),
            },
        };
        ClientEvent {
            json: serde_json::value::to_raw_value(&json)
                .unwrap_or_else(|_| empty_object().to_owned()),
            kind: fields.kind.clone(),
            sender: fields.sender.clone(),
            state_key: fields.state_key.clone(),
        }
    }
}

/// A stored event ready to be served: the stored PDU and its client format's fields,
/// read from it once (kept in memory for the events clients read most).
#[derive(Debug)]
pub struct Served {
    pub stored: StoredPdu,
    template: ClientTemplate,
}

impl Served {
    pub fn new(stored: StoredPdu) -> Self {
        Self {
            template: ClientTemplate::of(&stored),
            stored,
        }
    }

    /// About the bytes it holds in memory: the PDU, the content copied out of it and
    /// the rest.
    pub fn weight(&self) -> usize {
        self.stored.pdu.get().len() + self.template.fields.content.get().len() + 256
    }

    /// The state key, for a state event.
    pub fn state_key(&self) -> Option<&str> {
        self.template.fields.state_key.as_deref()
    }

    /// As [`StoredPdu::to_client`].
    pub fn to_client(
        &self,
        event_id: &ruma::EventId,
        format: ClientFormat,
        viewer: Option<(&UserId, &ruma::DeviceId)>,
        prev_content: Option<&RawValue>,
    ) -> ClientEvent {
        self.template
            .render(&self.stored, event_id, format, viewer, prev_content)
    }
}

/// The client format as written out.
#[derive(Serialize)]
struct ClientJson<'a> {
    content: &'a RawValue,
    event_id: &'a ruma::EventId,
    origin_server_ts: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a ruma::EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a RoomId>,
    sender: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    unsigned: Unsigned<'a>,
}

#[derive(Serialize)]
struct Unsigned<'a> {
    /// What the PDU's own `unsigned` held (an invite's stripped room state, for one),
    /// less the keys set below.
    #[serde(flatten)]
    stored: &'a serde_json::Map<String, serde_json::Value>,
    age: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacted_because: Option<RedactedBecause<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_content: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces_state: Option<&'a ruma::EventId>,
}

#[derive(Serialize)]
struct RedactedBecause<'a> {
    event_id: &'a ruma::EventId,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The keys of `unsigned` this server sets itself.
const OWN_UNSIGNED_KEYS: &[&str] = &[
    "age",
    "transaction_id",
    "redacted_because",
    "prev_content",
    "replaces_state",
];

impl StoredPdu {
    /// Whether the state before and after it is known (timeline and soft-failed events).
    pub fn has_state(&self) -> bool {
        !self.outlier || self.soft_failed
    }

    /// The event in the client-server format, with `unsigned` filled in for `viewer`'s
    /// device (`transaction_id` goes only to the device that sent it) and
    /// `prev_content`, the content of the state event it replaced. The content is copied
    /// as stored, never parsed.
    pub fn to_client(
        &self,
        event_id: &ruma::EventId,
        format: ClientFormat,
        viewer: Option<(&UserId, &ruma::DeviceId)>,
        prev_content: Option<&RawValue>,
    ) -> ClientEvent {
        ClientTemplate::of(self).render(self, event_id, format, viewer, prev_content)
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

fn empty_object() -> &'static RawValue {
    serde_json::from_str("{}").expect("an empty object is JSON")
}

fn zero() -> &'static RawValue {
    serde_json::from_str("0").expect("zero is JSON")
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, event_id, owned_event_id, owned_room_id, user_id};
    use serde_json::{Value, json};

    use super::*;

    fn stored(pdu: Value) -> StoredPdu {
        StoredPdu {
            room_id: owned_room_id!("!room:example.org"),
            position: 7,
            state_before: 1,
            state_after: 1,
            redacted_by: None,
            txn: Some(("PHONE".to_owned(), "txn-1".to_owned())),
            outlier: false,
            soft_failed: false,
            replaces_state: None,
            expired: false,
            pdu: serde_json::value::to_raw_value(&pdu).unwrap(),
        }
    }

    fn message() -> Value {
        json!({
            "auth_events": ["$create"],
            "prev_events": ["$prev"],
            "depth": 12,
            "hashes": {"sha256": "abc"},
            "signatures": {"example.org": {"ed25519:a": "sig"}},
            "origin": "example.org",
            "room_id": "!room:example.org",
            "sender": "@alice:example.org",
            "origin_server_ts": 1_000,
            "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": "hi \"there\" \u{e9}"},
        })
    }

    fn shown(event: ClientEvent) -> Value {
        serde_json::from_str(event.json.get()).unwrap()
    }

    #[test]
    fn the_client_format_keeps_what_clients_see_and_the_content_as_written() {
        let pdu = stored(message());
        let id = event_id!("$message");
        let event = pdu.to_client(id, ClientFormat::Full, None, None);
        assert_eq!(event.kind, "m.room.message");
        assert_eq!(event.sender, "@alice:example.org");
        assert_eq!(event.state_key, None);
        let value = shown(event);
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "content",
                "event_id",
                "origin_server_ts",
                "room_id",
                "sender",
                "type",
                "unsigned"
            ]
        );
        assert_eq!(value["content"], message()["content"]);
        assert_eq!(value["event_id"], "$message");
        assert_eq!(value["origin_server_ts"], 1_000);
        assert!(value["unsigned"]["age"].as_u64().unwrap() > 0);
        assert!(value["unsigned"].get("transaction_id").is_none());

        let synced = shown(pdu.to_client(id, ClientFormat::Sync, None, None));
        assert!(synced.get("room_id").is_none());
    }

    #[test]
    fn the_transaction_id_goes_only_to_the_sending_device() {
        let pdu = stored(message());
        let id = event_id!("$message");
        let alice = user_id!("@alice:example.org");
        let own = shown(pdu.to_client(
            id,
            ClientFormat::Sync,
            Some((alice, device_id!("PHONE"))),
            None,
        ));
        assert_eq!(own["unsigned"]["transaction_id"], "txn-1");
        let other_device = shown(pdu.to_client(
            id,
            ClientFormat::Sync,
            Some((alice, device_id!("LAPTOP"))),
            None,
        ));
        assert!(other_device["unsigned"].get("transaction_id").is_none());
        let bob = user_id!("@bob:example.org");
        let other_user = shown(pdu.to_client(
            id,
            ClientFormat::Sync,
            Some((bob, device_id!("PHONE"))),
            None,
        ));
        assert!(other_user["unsigned"].get("transaction_id").is_none());
    }

    #[test]
    fn unsigned_keeps_what_the_pdu_carried_and_adds_what_this_server_knows() {
        let mut member = message();
        member["type"] = "m.room.member".into();
        member["state_key"] = "@alice:example.org".into();
        member["content"] = json!({"membership": "join"});
        member["unsigned"] = json!({"invite_room_state": [], "age": 9_999_999_999_999_u64});
        let mut pdu = stored(member);
        pdu.state_after = 2;
        pdu.redacted_by = Some(owned_event_id!("$redaction"));
        pdu.replaces_state = Some(owned_event_id!("$invite"));
        let previous = serde_json::value::to_raw_value(&json!({"membership": "invite"})).unwrap();
        let event = pdu.to_client(
            event_id!("$join"),
            ClientFormat::Sync,
            None,
            Some(&previous),
        );
        assert_eq!(event.state_key.as_deref(), Some("@alice:example.org"));
        let unsigned = shown(event)["unsigned"].clone();
        assert_eq!(unsigned["invite_room_state"], json!([]));
        assert!(
            unsigned["age"].as_u64().unwrap() < 9_999_999_999_999,
            "age is this server's"
        );
        assert_eq!(unsigned["prev_content"], json!({"membership": "invite"}));
        assert_eq!(unsigned["replaces_state"], "$invite");
        assert_eq!(
            unsigned["redacted_because"],
            json!({"event_id": "$redaction", "type": "m.room.redaction"})
        );
    }

    #[test]
    fn a_redaction_names_its_target_at_the_top_level_in_every_room_version() {
        let mut redaction = message();
        redaction["type"] = "m.room.redaction".into();
        redaction["content"] = json!({"redacts": "$target"});
        let value = shown(stored(redaction).to_client(
            event_id!("$redaction"),
            ClientFormat::Full,
            None,
            None,
        ));
        assert_eq!(value["redacts"], "$target");
        assert_eq!(value["content"]["redacts"], "$target");
    }
}
