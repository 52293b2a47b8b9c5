//! A database written before relations were indexed gets them indexed once, at start:
//! an edit made then is bundled with its message afterwards.

use palisade::{
    config::Config,
    service::{
        Services,
        rooms::{create::CreateRoom, timeline::NewEvent},
    },
    storage::{Db, Keyspace},
};
use ruma::{OwnedUserId, RoomVersionId};
use serde_json::json;

#[test]
fn relations_written_before_the_index_are_indexed_at_start() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        database_path: dir.path().join("db"),
        ..Config::default()
    };
    let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
    let (root, edit) = {
        let services = Services::open(config.clone()).unwrap();
        runtime.block_on(async {
            services.users.create(&alice, None).await.unwrap();
            let request = CreateRoom {
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
            let room = services.rooms.create_room(&alice, request).await.unwrap();
            let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
            let root = services
                .rooms
                .append(
                    &room,
                    &alice,
                    NewEvent::message("m.room.message", text("hi")),
                    None,
                )
                .await
                .unwrap();
            let mut edit = text("* hello");
            edit["m.new_content"] = text("hello");
            edit["m.relates_to"] = json!({ "rel_type": "m.replace", "event_id": root });
            let edit = services
                .rooms
                .append(
                    &room,
                    &alice,
                    NewEvent::message("m.room.message", edit),
                    None,
                )
                .await
                .unwrap();
            (root, edit)
        })
    };

    // As a database from before relations were indexed: none kept, none marked done.
    {
        let db = reopen(&config);
        let mut batch = db.batch();
        for keyspace in [Keyspace::Relations, Keyspace::Aggregations] {
            for (key, _) in db.scan_prefix(keyspace, &[]).unwrap() {
                batch.delete(keyspace, key);
            }
        }
        batch.delete(Keyspace::Meta, b"relations_indexed".to_vec());
        db.write(batch).unwrap();
        assert!(
            db.scan_prefix(Keyspace::Aggregations, &[])
                .unwrap()
                .is_empty()
        );
    }

    let services = loop {
        match Services::open(config.clone()) {
            Ok(services) => break services,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    let aggregation = services.rooms.aggregations(&[&root]).unwrap()[0]
        .clone()
        .expect("the message's edit is indexed again");
    assert_eq!(aggregation.replace.map(|(_, id)| id), Some(edit));
}

/// The database, once the background work of the services that had it open let go.
fn reopen(config: &Config) -> Db {
    for _ in 0..100 {
        if let Ok(db) = Db::open(&config.database_path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Db::open(&config.database_path).unwrap()
}
