//! Who is in a room and what members see of each other: joins, leaves, kicks and
//! bans, profiles, ignored users, forgetting, state keys.

use super::*;

#[tokio::test]
async fn group_membership_changes_are_seen_by_members() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let carol = server.register("carol").await?;
    let mut request = create_room::v3::Request::new();
    request.name = Some("Team".to_owned());
    request.topic = Some("Planning".to_owned());
    request.room_alias_name = Some("team".to_owned());
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    request.visibility = matrix_sdk::ruma::api::client::room::Visibility::Public;
    let room = alice.create_room(request).await?;
    let room_id = room.room_id().to_owned();
    let since = next_batch(&server, &alice).await?;

    // Bob joins by alias, Carol is invited and joins, Bob leaves, Carol is kicked, Bob is banned.
    let alias: matrix_sdk::ruma::OwnedRoomAliasId = "#team:localhost".try_into()?;
    bob.join_room_by_id_or_alias((&*alias).into(), &[]).await?;
    room.invite_user_by_id("@carol:localhost".try_into()?)
        .await?;
    carol.join_room_by_id(&room_id).await?;
    bob.get_room(&room_id).unwrap().leave().await?;
    room.kick_user("@carol:localhost".try_into()?, Some("bye"))
        .await?;
    room.ban_user("@bob:localhost".try_into()?, Some("spam"))
        .await?;

    let sync = raw_sync(&server, &alice, Some(&since), 0).await?;
    let changes: Vec<(String, String)> = timeline(&sync, room_id.as_str())
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| {
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("@bob:localhost", "join"),
        ("@carol:localhost", "invite"),
        ("@carol:localhost", "join"),
        ("@bob:localhost", "leave"),
        ("@carol:localhost", "leave"),
        ("@bob:localhost", "ban"),
    ];
    assert_eq!(changes, expected.map(|(u, m)| (u.to_owned(), m.to_owned())));

    member_lists_then_and_now(&server, &alice, &room_id, &since).await?;
    kick_reason_is_seen(&server, &carol, &room_id).await?;
    bans_hold_and_plain_members_cannot_kick(&server, &room, &bob).await?;
    directory_search_finds(&server, &carol, &room_id).await?;
    Ok(())
}

/// The member list at the earlier token has only Alice; now Bob is banned.
async fn member_lists_then_and_now(
    server: &TestServer,
    alice: &matrix_sdk::Client,
    room_id: &matrix_sdk::ruma::RoomId,
    since: &str,
) -> anyhow::Result<()> {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/members?at={since}");
    let (status, then) = server
        .request("GET", &path, Some(&token(alice)), None)
        .await?;
    assert_eq!(status, 200);
    let then: Vec<&str> = then["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert_eq!(then, vec!["@alice:localhost"]);
    let path = format!("/_matrix/client/v3/rooms/{room_id}/members?membership=ban");
    let (_, banned) = server
        .request("GET", &path, Some(&token(alice)), None)
        .await?;
    assert_eq!(banned["chunk"][0]["state_key"], "@bob:localhost");

    Ok(())
}

/// Carol sees her kick with its reason, in the leave section.
async fn kick_reason_is_seen(
    server: &TestServer,
    carol: &matrix_sdk::Client,
    room_id: &matrix_sdk::ruma::RoomId,
) -> anyhow::Result<()> {
    let carol_sync = raw_sync(server, carol, None, 0).await?;
    assert!(
        carol_sync["rooms"]["leave"].get(room_id.as_str()).is_none(),
        "left rooms only with include_leave"
    );
    let (status, kicked) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/@carol:localhost"),
            Some(&token(carol)),
            None,
        )
        .await?;
    assert_eq!(
        (
            status,
            kicked["membership"].as_str(),
            kicked["reason"].as_str()
        ),
        (200, Some("leave"), Some("bye"))
    );
    Ok(())
}

/// Bob, banned, cannot join again, nor be kicked, until unbanned; then, a plain member, he may not kick.
async fn bans_hold_and_plain_members_cannot_kick(
    server: &TestServer,
    room: &matrix_sdk::Room,
    bob: &matrix_sdk::Client,
) -> anyhow::Result<()> {
    let room_id = room.room_id();
    // A banned user cannot come back; an unbanned one can.
    let (status, body) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            Some(&token(bob)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    // A kick does not lift the ban, though its event would look like an unban's.
    let kicked = room.kick_user("@bob:localhost".try_into()?, None).await;
    assert!(kicked.is_err(), "a banned user was kicked");
    let (_, banned) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/@bob:localhost"),
            Some(&token(&room.client())),
            None,
        )
        .await?;
    assert_eq!(banned["membership"], "ban");
    room.unban_user("@bob:localhost".try_into()?, None).await?;
    let (status, _) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            Some(&token(bob)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200);

    // Bob, a plain member, may not kick.
    let (status, body) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/kick"),
            Some(&token(bob)),
            Some(json!({ "user_id": "@alice:localhost" })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );

    Ok(())
}

/// The room directory's search finds the public room by its topic, also with an empty
/// `since`.
async fn directory_search_finds(
    server: &TestServer,
    carol: &matrix_sdk::Client,
    room_id: &OwnedRoomId,
) -> anyhow::Result<()> {
    let (_, directory) = server
        .request(
            "POST",
            "/_matrix/client/v3/publicRooms",
            Some(&token(carol)),
            Some(json!({ "filter": { "generic_search_term": "plan" } })),
        )
        .await?;
    assert_eq!(directory["chunk"][0]["room_id"], room_id.as_str());
    assert_eq!(directory["chunk"][0]["name"], "Team");
    // An empty `since` is the first page, not an invalid token.
    let (status, first_page) = server
        .request(
            "POST",
            "/_matrix/client/v3/publicRooms",
            Some(&token(carol)),
            Some(json!({ "since": "", "filter": { "generic_search_term": "plan" } })),
        )
        .await?;
    assert_eq!(status, 200, "{first_page}");
    assert_eq!(first_page["chunk"], directory["chunk"]);
    Ok(())
}

#[tokio::test]
async fn a_profile_change_is_seen_by_room_members() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let since = next_batch(&server, &bob).await?;
    alice
        .account()
        .set_display_name(Some("Alice Liddell"))
        .await?;
    let sync = raw_sync(&server, &bob, Some(&since), 5000).await?;
    let member = timeline(&sync, room_id.as_str())
        .into_iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@alice:localhost")
        .expect("a new member event");
    assert_eq!(member["content"]["displayname"], "Alice Liddell");
    assert_eq!(member["content"]["membership"], "join");
    assert_eq!(member["unsigned"]["prev_content"]["displayname"], "alice");

    // The user directory finds a room-mate by display name, but not for a stranger.
    let search = json!({ "search_term": "liddell", "limit": 10 });
    let (status, found) = server
        .request(
            "POST",
            "/_matrix/client/v3/user_directory/search",
            Some(&token(&bob)),
            Some(search.clone()),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(found["results"][0]["user_id"], "@alice:localhost");
    assert_eq!(found["results"][0]["display_name"], "Alice Liddell");
    let stranger = server.register("stranger").await?;
    let (_, found) = server
        .request(
            "POST",
            "/_matrix/client/v3/user_directory/search",
            Some(&token(&stranger)),
            Some(search),
        )
        .await?;
    assert_eq!(found["results"], json!([]));

    // One's own profile change is not a new join: no gap, no full state again.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    bob.account().set_display_name(Some("Bobby")).await?;
    let sync = raw_sync(&server, &bob, Some(&since), 5000).await?;
    let room = &sync["rooms"]["join"][room_id.as_str()];
    assert_ne!(room["timeline"]["limited"], true, "{room}");
    assert!(
        room["state"]["events"]
            .as_array()
            .is_none_or(|events| events.is_empty())
    );
    assert_eq!(timeline(&sync, room_id.as_str()).len(), 1);
    Ok(())
}

#[tokio::test]
async fn ignored_users_messages_and_invites_are_not_served() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    bob.join_room_by_id(&room_id).await?;
    let ignore = json!({ "ignored_users": { "@alice:localhost": {} } });
    let path = "/_matrix/client/v3/user/@bob:localhost/account_data/m.ignored_user_list";
    let (status, _) = server
        .request("PUT", path, Some(&token(&bob)), Some(ignore))
        .await?;
    assert_eq!(status, 200);
    let since = next_batch(&server, &bob).await?;

    let send = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/x");
    server
        .request(
            "PUT",
            &send,
            Some(&token(&alice)),
            Some(json!({ "msgtype": "m.text", "body": "unwanted" })),
        )
        .await?;
    alice
        .account()
        .set_display_name(Some("Still Alice"))
        .await?;
    let mut dm = create_room::v3::Request::new();
    dm.invite = vec!["@bob:localhost".try_into()?];
    let dm_id = alice.create_room(dm).await?.room_id().to_owned();

    let sync = raw_sync(&server, &bob, Some(&since), 1000).await?;
    assert!(!sync.to_string().contains("unwanted"), "{sync}");
    let state_changes = timeline(&sync, room_id.as_str());
    assert!(
        state_changes.iter().any(|e| e["type"] == "m.room.member"),
        "state events still arrive"
    );
    assert!(
        sync["rooms"]["invite"].get(dm_id.as_str()).is_none(),
        "no invite from an ignored user"
    );

    let path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50");
    let (_, page) = server
        .request("GET", &path, Some(&token(&bob)), None)
        .await?;
    assert!(!page.to_string().contains("unwanted"));
    Ok(())
}

#[tokio::test]
async fn context_joined_rooms_and_forget() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let room_id = room_alone(&alice).await?;
    let t = token(&alice);
    let mut ids = Vec::new();
    for i in 0..9 {
        let txn = format!("c{i}");
        ids.push(
            server
                .send_text(&t, room_id.as_str(), &txn, &i.to_string())
                .await?,
        );
    }
    let path = format!(
        "/_matrix/client/v3/rooms/{room_id}/context/{}?limit=4",
        ids[4]
    );
    let (status, context) = server.request("GET", &path, Some(&t), None).await?;
    assert_eq!(status, 200);
    assert_eq!(context["event"]["content"]["body"], "4");
    let before: Vec<&Value> = context["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let after: Vec<&Value> = context["events_after"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&before), vec!["3", "2"], "closest first");
    assert_eq!(bodies(&after), vec!["5", "6"]);
    assert!(
        context["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    // Paginating on from the context's tokens continues without a gap.
    let path = format!(
        "/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=2&from={}",
        context["end"].as_str().unwrap()
    );
    let (_, page) = server.request("GET", &path, Some(&t), None).await?;
    let chunk: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&chunk), vec!["7", "8"]);
    let path = format!(
        "/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=2&from={}",
        context["start"].as_str().unwrap()
    );
    let (_, page) = server.request("GET", &path, Some(&t), None).await?;
    let chunk: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&chunk), vec!["1", "0"]);

    let (_, joined) = server
        .request("GET", "/_matrix/client/v3/joined_rooms", Some(&t), None)
        .await?;
    assert_eq!(joined["joined_rooms"], json!([room_id.as_str()]));

    // Forgetting needs leaving first; a forgotten room is gone from syncs with include_leave.
    let forget = format!("/_matrix/client/v3/rooms/{room_id}/forget");
    let (status, _) = server
        .request("POST", &forget, Some(&t), Some(json!({})))
        .await?;
    assert_eq!(status, 400);
    server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&t),
            Some(json!({})),
        )
        .await?;
    let include_leave = json!({ "room": { "include_leave": true } });
    let sync =
        complement_tests::raw_sync_filtered(&server, &t, None, 0, Some(&include_leave)).await?;
    assert!(sync["rooms"]["leave"].get(room_id.as_str()).is_some());
    let (status, _) = server
        .request("POST", &forget, Some(&t), Some(json!({})))
        .await?;
    assert_eq!(status, 200);
    let sync =
        complement_tests::raw_sync_filtered(&server, &t, None, 0, Some(&include_leave)).await?;
    assert!(
        sync["rooms"]["leave"].get(room_id.as_str()).is_none(),
        "{sync}"
    );
    let (_, joined) = server
        .request("GET", "/_matrix/client/v3/joined_rooms", Some(&t), None)
        .await?;
    assert_eq!(joined["joined_rooms"], json!([]));
    Ok(())
}

#[tokio::test]
async fn state_with_an_empty_key_is_served_with_and_without_the_trailing_slash()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, _bob, room_id) = two_in_a_dm(&server).await?;
    let t = token(&alice);
    let state = format!("/_matrix/client/v3/rooms/{room_id}/state");

    // matrix-sdk (like matrix-js-sdk) writes an empty key as a trailing slash.
    alice
        .get_room(&room_id)
        .unwrap()
        .set_name("Tea".into())
        .await?;
    for path in [
        format!("{state}/m.room.name/"),
        format!("{state}/m.room.name"),
    ] {
        let (status, content) = server.request("GET", &path, Some(&t), None).await?;
        assert_eq!((status, content), (200, json!({ "name": "Tea" })), "{path}");
        let (status, event) = server
            .request("GET", &format!("{path}?format=event"), Some(&t), None)
            .await?;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            (
                &event["type"],
                &event["state_key"],
                &event["content"]["name"]
            ),
            (&json!("m.room.name"), &json!(""), &json!("Tea")),
            "{path}: {event}"
        );
    }

    for (path, topic) in [
        (format!("{state}/m.room.topic"), "no slash"),
        (format!("{state}/m.room.topic/"), "slash"),
    ] {
        let (status, body) = server
            .request("PUT", &path, Some(&t), Some(json!({ "topic": topic })))
            .await?;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body["event_id"].is_string());
        let (_, content) = server
            .request("GET", &format!("{state}/m.room.topic/"), Some(&t), None)
            .await?;
        assert_eq!(content["topic"], topic);
    }

    // An unset empty-key state event is "not found", not an unknown endpoint.
    let (status, body) = server
        .request("GET", &format!("{state}/m.room.avatar"), Some(&t), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    Ok(())
}

#[tokio::test]
async fn a_moderator_may_delete_a_members_alias_and_a_plain_member_may_not() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let carol = server.register("carol").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    bob.join_room_by_id(&room_id).await?;
    carol.join_room_by_id(&room_id).await?;
    let alias: matrix_sdk::ruma::OwnedRoomAliasId = "#bobs-name:localhost".try_into()?;
    bob.create_room_alias(&alias, &room_id).await?;
    let path = format!(
        "/_matrix/client/v3/directory/room/{}",
        complement_tests::fake_server::encode(alias.as_str())
    );

    // Carol, at power level 0, may not; Alice, who may set the canonical alias, may.
    let (status, body) = server
        .request("DELETE", &path, Some(&token(&carol)), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .request("DELETE", &path, Some(&token(&alice)), None)
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.request("GET", &path, None, None).await?;
    assert_eq!(status, 404, "the alias is still there");
    Ok(())
}

#[tokio::test]
async fn a_per_room_name_is_set_as_member_state_and_same_state_is_not_sent_twice()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = complement_tests::room_of_two(&alice, &bob).await?;
    alice.account().set_display_name(Some("Alice")).await?;

    // Element's `/myroomnick`: the member event with the membership kept.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/@alice:localhost");
    let nick = json!({ "membership": "join", "displayname": "Al (work)" });
    let (status, body) = server
        .request("PUT", &path, Some(&token(&alice)), Some(nick))
        .await?;
    assert_eq!(status, 200, "{body}");
    bob.sync_once(matrix_sdk::config::SyncSettings::default())
        .await?;
    let member = bob
        .get_room(&room_id)
        .unwrap()
        .get_member("@alice:localhost".try_into()?)
        .await?
        .expect("alice is a member");
    assert_eq!(member.display_name(), Some("Al (work)"));
    let (_, profile) = server
        .request(
            "GET",
            "/_matrix/client/v3/profile/@alice:localhost",
            None,
            None,
        )
        .await?;
    assert_eq!(profile["displayname"], "Alice", "the global name stays");

    // Changing a membership this way is refused: that is what /leave, /kick... are for.
    let leave = json!({ "membership": "leave" });
    let (status, body) = server
        .request("PUT", &path, Some(&token(&alice)), Some(leave))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );

    // The same topic twice is one event.
    alice
        .sync_once(matrix_sdk::config::SyncSettings::default())
        .await?;
    let room = alice.get_room(&room_id).unwrap();
    let first = room.set_room_topic("Plans").await?.event_id;
    let again = room.set_room_topic("Plans").await?.event_id;
    assert_eq!(first, again);
    let other = room.set_room_topic("Other plans").await?.event_id;
    assert_ne!(first, other);
    Ok(())
}

#[tokio::test]
async fn a_room_summary_previews_open_rooms_and_hides_private_ones() -> anyhow::Result<()> {
    use matrix_sdk::ruma::api::client::room::get_summary;
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let stranger = server.register("stranger").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    request.name = Some("Town hall".to_owned());
    request.topic = Some("Every Monday".to_owned());
    request.room_alias_name = Some("townhall".to_owned());
    let open = alice.create_room(request).await?.room_id().to_owned();
    let private = room_alone(&alice).await?;

    // Through matrix-sdk, by alias, as a client previews a room from the directory.
    let alias: matrix_sdk::ruma::OwnedRoomOrAliasId = "#townhall:localhost".try_into()?;
    let answer = stranger
        .send(get_summary::v1::Request::new(alias, Vec::new()))
        .await?;
    assert_eq!(answer.summary.room_id, open);
    assert_eq!(answer.summary.name.as_deref(), Some("Town hall"));
    assert_eq!(answer.summary.topic.as_deref(), Some("Every Monday"));
    assert_eq!(u64::from(answer.summary.num_joined_members), 1);
    assert_eq!(answer.membership, None);

    // The unstable path older clients (Nheko) call answers the same.
    let path = format!("/_matrix/client/unstable/im.nheko.summary/rooms/{open}/summary");
    let (status, body) = server
        .request("GET", &path, Some(&token(&stranger)), None)
        .await?;
    assert_eq!(
        (status, body["name"].as_str()),
        (200, Some("Town hall")),
        "{body}"
    );

    // A private room is not found for a stranger; its member sees it, with the membership.
    let path = format!("/_matrix/client/v1/room_summary/{private}");
    let (status, body) = server
        .request("GET", &path, Some(&token(&stranger)), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = server
        .request("GET", &path, Some(&token(&alice)), None)
        .await?;
    assert_eq!(
        (status, body["membership"].as_str()),
        (200, Some("join")),
        "{body}"
    );
    Ok(())
}
