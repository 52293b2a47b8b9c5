//! Room upgrades: the new room carries the old one's state, aliases and directory
//! listing; the old room is tombstoned and quiet; matrix-sdk follows the tombstone.

use complement_tests::sync_until;
use matrix_sdk::ruma::{OwnedRoomOrAliasId, RoomAliasId, api::client::room::Visibility};

use super::*;

#[tokio::test]
async fn an_upgraded_room_is_followed_with_its_state_and_aliases() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let carol = server.register("carol").await?;
    let mut request = create_room::v3::Request::new();
    request.room_version = Some("10".try_into()?);
    request.visibility = Visibility::Public;
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    request.room_alias_name = Some("club".to_owned());
    request.name = Some("Club".to_owned());
    request.topic = Some("Talk of the club".to_owned());
    let old = alice.create_room(request).await?.room_id().to_owned();
    bob.join_room_by_id(&old).await?;
    carol.join_room_by_id(&old).await?;
    let t = token(&alice);
    let (status, body) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{old}/ban"),
            Some(&t),
            Some(json!({ "user_id": "@carol:localhost", "reason": "spam" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");

    // Bob marks the old room a favourite, mutes it and files it as a chat with Alice.
    let b = token(&bob);
    for (method, path, body) in [
        (
            "PUT",
            format!("/_matrix/client/v3/user/@bob:localhost/rooms/{old}/tags/m.favourite"),
            json!({ "order": 0.5 }),
        ),
        (
            "PUT",
            format!("/_matrix/client/v3/pushrules/global/room/{old}"),
            json!({ "actions": [] }),
        ),
        (
            "PUT",
            "/_matrix/client/v3/user/@bob:localhost/account_data/m.direct".to_owned(),
            json!({ "@alice:localhost": [old.as_str()] }),
        ),
    ] {
        let (status, answer) = server.request(method, &path, Some(&b), Some(body)).await?;
        assert_eq!(status, 200, "{path}: {answer}");
    }

    // Bob may not upgrade; nobody may upgrade to a version the server lacks.
    let upgrade = format!("/_matrix/client/v3/rooms/{old}/upgrade");
    let (status, body) = server
        .request(
            "POST",
            &upgrade,
            Some(&token(&bob)),
            Some(json!({ "new_version": "11" })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .request(
            "POST",
            &upgrade,
            Some(&t),
            Some(json!({ "new_version": "999" })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_UNSUPPORTED_ROOM_VERSION")),
        "{body}"
    );

    let (status, body) = server
        .request(
            "POST",
            &upgrade,
            Some(&t),
            Some(json!({ "new_version": "12" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let new: OwnedRoomId = body["replacement_room"]
        .as_str()
        .expect("a replacement room")
        .try_into()?;
    assert_ne!(new, old);

    // Bob's client sees the tombstone and where it leads.
    sync_until(&bob, 10, |bob| {
        bob.get_room(&old)
            .and_then(|room| room.successor_room())
            .is_some_and(|successor| successor.room_id == new)
    })
    .await?;
    // The alias leads to the new room, and Bob follows it there.
    let alias = <&RoomAliasId>::try_from("#club:localhost")?;
    assert_eq!(bob.resolve_room_alias(alias).await?.room_id, new);
    let target = OwnedRoomOrAliasId::from(alias.to_owned());
    let joined = bob.join_room_by_id_or_alias(&target, &[]).await?;
    assert_eq!(joined.room_id(), new);
    sync_until(&bob, 10, |bob| {
        bob.get_room(&new)
            .is_some_and(|room| room.predecessor_room().is_some_and(|p| p.room_id == old))
    })
    .await?;
    // His tag, his mute and his direct chat followed him there.
    let (_, tags) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/user/@bob:localhost/rooms/{new}/tags"),
            Some(&b),
            None,
        )
        .await?;
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5, "{tags}");
    let (status, rule) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/pushrules/global/room/{new}"),
            Some(&b),
            None,
        )
        .await?;
    assert_eq!((status, &rule["actions"]), (200, &json!([])), "{rule}");
    let (_, direct) = server
        .request(
            "GET",
            "/_matrix/client/v3/user/@bob:localhost/account_data/m.direct",
            Some(&b),
            None,
        )
        .await?;
    assert_eq!(
        direct["@alice:localhost"],
        json!([old.as_str(), new.as_str()])
    );
    let room = bob.get_room(&new).expect("bob is in the new room");
    assert_eq!(room.name().as_deref(), Some("Club"));
    assert_eq!(room.topic().as_deref(), Some("Talk of the club"));
    assert_eq!(room.version().map(|v| v.to_string()).as_deref(), Some("12"));

    // The new room keeps the ban and the canonical alias; the old room lost the alias.
    let state = |room: &OwnedRoomId, kind: &str, key: &str| {
        format!("/_matrix/client/v3/rooms/{room}/state/{kind}/{key}")
    };
    let (status, body) = server
        .request(
            "GET",
            &state(&new, "m.room.member", "@carol:localhost"),
            Some(&t),
            None,
        )
        .await?;
    assert_eq!((status, body["membership"].as_str()), (200, Some("ban")));
    let (_, body) = server
        .request(
            "GET",
            &state(&new, "m.room.canonical_alias", ""),
            Some(&t),
            None,
        )
        .await?;
    assert_eq!(body["alias"], "#club:localhost");
    let (_, body) = server
        .request(
            "GET",
            &state(&old, "m.room.canonical_alias", ""),
            Some(&t),
            None,
        )
        .await?;
    assert!(body.get("alias").is_none(), "{body}");
    // The creator of a version 12 room needs no power level entry: it has no other.
    let (_, levels) = server
        .request(
            "GET",
            &state(&new, "m.room.power_levels", ""),
            Some(&t),
            None,
        )
        .await?;
    assert!(
        levels["users"].get("@alice:localhost").is_none(),
        "{levels}"
    );

    // The directory lists the new room in place of the old.
    let (_, directory) = server
        .request("GET", "/_matrix/client/v3/publicRooms", Some(&t), None)
        .await?;
    let listed: Vec<&str> = directory["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|room| room["room_id"].as_str())
        .collect();
    assert!(listed.contains(&new.as_str()), "{directory}");
    assert!(!listed.contains(&old.as_str()), "{directory}");

    // The old room is quiet: Bob may no longer talk there, but does in the new room.
    let path = format!("/_matrix/client/v3/rooms/{old}/send/m.room.message/late");
    let (status, body) = server
        .request(
            "PUT",
            &path,
            Some(&token(&bob)),
            Some(json!({ "msgtype": "m.text", "body": "late" })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    server
        .send_text(&token(&bob), new.as_str(), "here", "hello again")
        .await?;
    Ok(())
}
