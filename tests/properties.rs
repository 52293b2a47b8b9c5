//! Property tests: canonical JSON, event ids, tokens and storage key encodings hold
//! their invariants for arbitrary inputs, not just the examples the other tests use.

use std::sync::Arc;

use palisade::{
    Error,
    config::Config,
    service::{Services, rooms::timeline::NewEvent, sync::token::SyncToken},
    storage::codec::{Key, KeyReader},
};
use proptest::prelude::*;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{Map, Value, json};

/// The largest integer canonical JSON allows (2^53 - 1).
const MAX_SAFE: i64 = (1 << 53) - 1;

/// Any JSON value canonical JSON can hold: no floats, integers within ±(2^53 - 1).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-MAX_SAFE..=MAX_SAFE).prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(any::<String>(), json_value(), 0..6)
        .prop_map(|map| map.into_iter().collect())
}

/// Canonical JSON written straight from the spec's definition: keys sorted by code
/// point, no insignificant whitespace, shortest escapes.
fn reference_canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(key).unwrap(),
                        reference_canonical(&map[key])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(reference_canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => serde_json::to_string(other).unwrap(),
    }
}

/// Reverses the order of every object's keys, as another implementation might send them.
fn reversed(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| format!("{} : {}", serde_json::to_string(k).unwrap(), reversed(v)))
                .collect();
            format!("{{ {} }}", fields.join(" , "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(reversed).collect();
            format!("[ {} ]", items.join(" , "))
        }
        other => serde_json::to_string(other).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_json_matches_the_spec_whatever_the_input_order(object in json_object()) {
        let value = Value::Object(object);
        let parsed: CanonicalJsonObject = serde_json::from_str(&reversed(&value)).unwrap();
        let canonical = CanonicalJsonValue::Object(parsed).to_string();
        prop_assert_eq!(&canonical, &reference_canonical(&value));
        // Canonical JSON read back and written again is byte for byte the same.
        let again: CanonicalJsonObject = serde_json::from_str(&canonical).unwrap();
        prop_assert_eq!(CanonicalJsonValue::Object(again).to_string(), canonical);
    }

    #[test]
    fn integers_outside_the_safe_range_are_not_canonical(n in prop_oneof![
        (MAX_SAFE + 1)..=i64::MAX,
        i64::MIN..=(-MAX_SAFE - 1),
    ]) {
        let object = json!({ "n": n });
        prop_assert!(serde_json::from_value::<CanonicalJsonObject>(object).is_err());
    }

    #[test]
    fn sync_tokens_have_one_spelling(
        position in any::<u64>(),
        typing in any::<u64>(),
        to_device in proptest::option::of(any::<u64>()),
    ) {
        let token = SyncToken { position, typing, to_device };
        prop_assert_eq!(token.to_string().parse::<SyncToken>(), Ok(token));
    }

    #[test]
    fn any_text_parses_to_a_token_only_in_its_own_spelling(text in "\\PC{0,24}|s[+0-9]{0,21}_[+0-9]{0,21}(_[+0-9]{0,21})?") {
        if let Ok(token) = text.parse::<SyncToken>() {
            prop_assert_eq!(token.to_string(), text.clone());
        }
        if let Ok(position) = palisade::api::client::events::parse_token(&text) {
            prop_assert!(text.trim_start_matches('s').starts_with(&position.to_string()));
        }
    }

    #[test]
    fn keys_decode_to_their_parts(parts in prop::collection::vec(key_part(), 0..8)) {
        let key = encode(&parts);
        let mut reader = KeyReader::new(key.bytes());
        for part in &parts {
            match part {
                Part::Str(s) => prop_assert_eq!(reader.str().unwrap(), s.as_str()),
                Part::U64(n) => prop_assert_eq!(reader.u64().unwrap(), *n),
            }
        }
        // A prefix of the parts is a prefix of the bytes (what prefix scans rely on).
        for cut in 0..parts.len() {
            prop_assert!(key.bytes().starts_with(encode(&parts[..cut]).bytes()));
        }
    }

    #[test]
    fn integer_parts_sort_numerically(
        prefix in prop::collection::vec(key_part(), 0..4),
        a in any::<u64>(),
        b in any::<u64>(),
        suffix_a in prop::collection::vec(key_part(), 0..3),
        suffix_b in prop::collection::vec(key_part(), 0..3),
    ) {
        let with = |n: u64, suffix: &[Part]| {
            let mut parts = prefix.clone();
            parts.push(Part::U64(n));
            parts.extend_from_slice(suffix);
            encode(&parts).bytes().to_vec()
        };
        if a < b {
            prop_assert!(with(a, &suffix_a) < with(b, &suffix_b));
        }
    }

    #[test]
    fn distinct_string_parts_never_collide(a in any::<String>(), b in any::<String>(), c in any::<String>()) {
        // (a, b) and (a + b, c) differ whenever the parts differ.
        let left = Key::new().str(&a).str(&b);
        let right = Key::new().str(&format!("{a}{b}")).str(&c);
        if !b.is_empty() || c != b {
            prop_assert_ne!(left.bytes(), right.bytes());
        }
    }
}

#[derive(Clone, Debug)]
enum Part {
    Str(String),
    U64(u64),
}

fn key_part() -> impl Strategy<Value = Part> {
    prop_oneof![
        any::<String>().prop_map(Part::Str),
        any::<u64>().prop_map(Part::U64)
    ]
}

fn encode(parts: &[Part]) -> Key {
    parts.iter().fold(Key::new(), |key, part| match part {
        Part::Str(s) => key.str(s),
        Part::U64(n) => key.u64(*n),
    })
}

struct Room {
    services: Arc<Services>,
    room: OwnedRoomId,
    alice: OwnedUserId,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn room() -> Room {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let services = Services::open(Config {
        database_path: dir.path().join("db"),
        ..Config::default()
    })
    .unwrap();
    let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
    let room = runtime.block_on(async {
        services.users.create(&alice, None).await.unwrap();
        let request = palisade::service::rooms::create::CreateRoom {
            version: RoomVersionId::V11,
            creation_content: Default::default(),
            preset: ruma::api::client::room::create_room::v3::RoomPreset::PrivateChat,
            visibility: ruma::api::client::room::Visibility::Private,
            alias: None,
            name: None,
            topic: None,
            invite: Vec::new(),
            is_direct: false,
            initial_state: Vec::new(),
            power_level_override: None,
            creator_profile: (None, None),
        };
        services.rooms.create_room(&alice, request).await.unwrap()
    });
    Room {
        services,
        room,
        alice,
        runtime,
        _dir: dir,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_content_gets_the_reference_hash_as_its_id_and_verifies(
        extra in json_object(),
        body in any::<String>(),
    ) {
        thread_local!(static ROOM: Room = room());
        ROOM.with(|r| {
            let mut content = extra.clone();
            content.insert("msgtype".into(), json!("m.text"));
            content.insert("body".into(), json!(body));
            let content = Value::Object(content);
            let event_id = r.runtime.block_on(r.services.rooms.append(
                &r.room,
                &r.alice,
                NewEvent::message("m.room.message", content.clone()),
                None,
            )).unwrap();
            let stored = r.services.rooms.pdu(&event_id).unwrap().unwrap();
            let object: CanonicalJsonObject = serde_json::from_str(stored.pdu.get()).unwrap();
            let rules = RoomVersionId::V11.rules().unwrap();
            let reference = ruma::signatures::reference_hash(&object, &rules).unwrap();
            prop_assert_eq!(format!("${reference}"), event_id.as_str());

            let mut keys = std::collections::BTreeMap::new();
            keys.insert(r.services.signing_key.key_id(), r.services.signing_key.public_key());
            let servers = std::collections::BTreeMap::from([("localhost".to_owned(), keys)]);
            prop_assert_eq!(
                ruma::signatures::verify_event(&servers, &object, &rules).unwrap(),
                ruma::signatures::Verified::All
            );
            // Stored as canonical JSON, with the content exactly as sent.
            let stored_json: Value = serde_json::from_str(stored.pdu.get()).unwrap();
            prop_assert_eq!(stored.pdu.get(), reference_canonical(&stored_json));
            prop_assert_eq!(&stored_json["content"], &content);
            Ok(())
        })?;
    }
}

#[test]
fn content_canonical_json_cannot_hold_is_refused_as_bad_json() {
    let r = room();
    for content in [
        json!({ "msgtype": "m.text", "body": "x", "n": 1.5 }),
        json!({ "msgtype": "m.text", "body": "x", "n": MAX_SAFE + 1 }),
        json!({ "msgtype": "m.text", "body": "x", "nested": { "n": -MAX_SAFE - 1 } }),
    ] {
        let result = r.runtime.block_on(r.services.rooms.append(
            &r.room,
            &r.alice,
            NewEvent::message("m.room.message", content.clone()),
            None,
        ));
        match result {
            Err(Error::Matrix { kind, .. }) => {
                assert_eq!(kind, ruma::api::error::ErrorKind::BadJson, "{content}")
            }
            other => panic!("{content} gave {other:?}"),
        }
    }
}
