//! In-process tests on a temporary RocksDB: the room authorisation rules and every
//! supported room version, through the services the API uses.

use std::sync::Arc;

use palisade::{
    Error,
    config::Config,
    service::{Services, rooms::timeline::NewEvent},
};
use ruma::events::room::member::MembershipState;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomVersionId, api::client::room::create_room::v3::RoomPreset,
};
use serde_json::json;

struct Fixture {
    services: Arc<Services>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        database_path: dir.path().join("db"),
        ..Config::default()
    };
    let services = Services::open(config).unwrap();
    for user in ["alice", "bob", "carol"] {
        services.users.create(&user_id(user), None).await.unwrap();
    }
    Fixture {
        services,
        _dir: dir,
    }
}

fn user_id(name: &str) -> OwnedUserId {
    format!("@{name}:localhost").try_into().unwrap()
}

async fn create(services: &Services, version: RoomVersionId, preset: RoomPreset) -> OwnedRoomId {
    use palisade::service::rooms::create::CreateRoom;
    let request = CreateRoom {
        version,
        creation_content: Default::default(),
        preset,
        visibility: ruma::api::client::room::Visibility::Private,
        alias: None,
        name: Some("Room".to_owned()),
        topic: None,
        invite: Vec::new(),
        is_direct: false,
        initial_state: Vec::new(),
        power_level_override: None,
        creator_profile: (None, None),
    };
    services
        .rooms
        .create_room(&user_id("alice"), request)
        .await
        .unwrap()
}

fn is_forbidden(result: Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(ref error) if error.kind() == Some(&ruma::api::error::ErrorKind::Forbidden))
}

#[tokio::test]
async fn the_authorisation_rules_refuse_what_they_should() {
    let Fixture { services, _dir } = fixture().await;
    let room = create(&services, RoomVersionId::V11, RoomPreset::PrivateChat).await;
    let rooms = &services.rooms;
    let (alice, bob, carol) = (user_id("alice"), user_id("bob"), user_id("carol"));

    // Not a member: cannot send, cannot join an invite-only room.
    let message = NewEvent::message(
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "hi" }),
    );
    assert!(is_forbidden(
        rooms.append(&room, &bob, message.clone(), None).await
    ));
    assert!(is_forbidden(
        rooms.join(&room, &bob, &(None, None), None).await
    ));

    // Invited, then joined: may talk, may not change power levels or the name.
    rooms
        .invite(&room, &alice, (&bob, &(None, None)), None, false)
        .await
        .unwrap();
    rooms.join(&room, &bob, &(None, None), None).await.unwrap();
    rooms
        .append(&room, &bob, message.clone(), None)
        .await
        .unwrap();
    let power = NewEvent::state(
        "m.room.power_levels",
        "",
        json!({ "users": { bob.as_str(): 100 } }),
    );
    assert!(is_forbidden(rooms.append(&room, &bob, power, None).await));
    let name = NewEvent::state("m.room.name", "", json!({ "name": "mine now" }));
    assert!(is_forbidden(rooms.append(&room, &bob, name, None).await));
    // Nor kick the creator, nor set another user's membership to join.
    assert!(is_forbidden(
        rooms
            .set_membership_of(&room, &bob, &alice, MembershipState::Leave, None)
            .await
    ));
    let forced = NewEvent::state(
        "m.room.member",
        carol.as_str(),
        json!({ "membership": "join" }),
    );
    assert!(is_forbidden(rooms.append(&room, &bob, forced, None).await));

    // Banned: cannot come back until unbanned.
    rooms
        .set_membership_of(&room, &alice, &bob, MembershipState::Ban, None)
        .await
        .unwrap();
    assert!(is_forbidden(
        rooms.append(&room, &bob, message.clone(), None).await
    ));
    assert!(is_forbidden(
        rooms.join(&room, &bob, &(None, None), None).await
    ));
    assert!(is_forbidden(
        rooms
            .invite(&room, &alice, (&bob, &(None, None)), None, false)
            .await
    ));
    rooms
        .set_membership_of(&room, &alice, &bob, MembershipState::Leave, None)
        .await
        .unwrap();
    rooms
        .invite(&room, &alice, (&bob, &(None, None)), None, false)
        .await
        .unwrap();
    rooms.join(&room, &bob, &(None, None), None).await.unwrap();

    // Nothing refused was stored: the timeline holds only what was allowed.
    let frontier = services.stream.frontier();
    let timeline = rooms.timeline(&room, 0, frontier, true, 1000).unwrap();
    for (_, event_id) in &timeline {
        let pdu = rooms.parsed_pdu(event_id).unwrap().unwrap();
        assert!(!(pdu.kind.to_string() == "m.room.name" && pdu.sender == bob));
        assert!(!(pdu.kind.to_string() == "m.room.power_levels" && pdu.sender == bob));
    }
}

#[tokio::test]
async fn every_room_version_creates_sends_and_redacts() {
    let Fixture { services, _dir } = fixture().await;
    let alice = user_id("alice");
    for version in palisade::service::rooms::ROOM_VERSIONS {
        let room = create(&services, version.clone(), RoomPreset::PublicChat).await;
        let record = services.rooms.room(&room).unwrap().unwrap();
        assert_eq!(&record.version, version);
        let message = NewEvent::message(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "secret" }),
        );
        let event_id = services
            .rooms
            .append(&room, &alice, message, None)
            .await
            .unwrap();
        // The event id format of the version: random with a server name before v3, a
        // reference hash after (URL-safe from v4 on).
        match version {
            RoomVersionId::V1 | RoomVersionId::V2 => {
                assert!(event_id.as_str().ends_with(":localhost"))
            }
            RoomVersionId::V3 => assert!(!event_id.as_str().contains(':')),
            _ => assert!(!event_id.as_str().contains(['+', '/', ':'])),
        }
        let redaction = NewEvent::redaction(event_id.clone(), json!({ "reason": "oops" }));
        services
            .rooms
            .append(&room, &alice, redaction, None)
            .await
            .unwrap();
        let stored = services.rooms.pdu(&event_id).unwrap().unwrap();
        assert!(stored.redacted_by.is_some(), "{version}");
        let value: serde_json::Value = serde_json::from_str(stored.pdu.get()).unwrap();
        assert_eq!(value["content"], json!({}), "{version}: the body is gone");
        assert!(
            value["signatures"]["localhost"].is_object(),
            "{version}: still signed"
        );
        if *version == RoomVersionId::V12 {
            assert!(
                !room.as_str().contains(':'),
                "v12 room ids are the create event's hash"
            );
        }
    }
}

#[tokio::test]
async fn stored_events_keep_valid_hashes_and_signatures() {
    let Fixture { services, _dir } = fixture().await;
    let room = create(&services, RoomVersionId::V11, RoomPreset::PrivateChat).await;
    let alice = user_id("alice");
    let message = NewEvent::message(
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "signed" }),
    );
    let event_id = services
        .rooms
        .append(&room, &alice, message, None)
        .await
        .unwrap();
    let stored = services.rooms.pdu(&event_id).unwrap().unwrap();
    let object: ruma::CanonicalJsonObject = serde_json::from_str(stored.pdu.get()).unwrap();

    let rules = RoomVersionId::V11.rules().unwrap();
    let reference = ruma::signatures::reference_hash(&object, &rules).unwrap();
    assert_eq!(
        format!("${reference}"),
        event_id.as_str(),
        "the id is the reference hash"
    );

    let key = services.signing_key.public_key();
    let mut keys = std::collections::BTreeMap::new();
    keys.insert(services.signing_key.key_id(), key);
    let mut servers = std::collections::BTreeMap::new();
    servers.insert("localhost".to_owned(), keys);
    let verified = ruma::signatures::verify_event(&servers, &object, &rules).unwrap();
    assert_eq!(
        verified,
        ruma::signatures::Verified::All,
        "content hash and signature both check"
    );
}

#[tokio::test]
async fn a_redacted_state_event_is_read_redacted_afterwards() {
    let Fixture { services, _dir } = fixture().await;
    let room = create(&services, RoomVersionId::V11, RoomPreset::PrivateChat).await;
    let alice = user_id("alice");
    let topic = NewEvent::state("m.room.topic", "", json!({ "topic": "secret plans" }));
    let topic_id = services
        .rooms
        .append(&room, &alice, topic, None)
        .await
        .unwrap();
    // Read once, so the parsed event is held in memory.
    let before = services
        .rooms
        .state_content(&room, "m.room.topic", "")
        .unwrap()
        .unwrap();
    assert_eq!(before["topic"], "secret plans");

    let redaction = NewEvent::redaction(topic_id.clone(), json!({ "redacts": topic_id.as_str() }));
    services
        .rooms
        .append(&room, &alice, redaction, None)
        .await
        .unwrap();
    let after = services
        .rooms
        .state_content(&room, "m.room.topic", "")
        .unwrap()
        .unwrap();
    assert_eq!(after, json!({}), "the redacted topic is gone");
}
