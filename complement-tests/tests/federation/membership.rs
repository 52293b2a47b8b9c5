//! Memberships across servers: kicks and bans, invites accepted or declined, knocks,
//! restricted joins, and joining a big room.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kicks_and_bans_cross_servers() -> Result<()> {
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;
    let bob_id = pair.bob_id();
    let kick = format!("/_matrix/client/v3/rooms/{}/kick", pair.room_id);
    let (status, body) = pair
        .a
        .request(
            "POST",
            &kick,
            Some(&pair.token(Side::A)),
            Some(json!({ "user_id": bob_id, "reason": "out" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // Bob's server applies the kick: Bob is out, and sending fails locally.
    let mut attempt = 0;
    eventually("Bob's server never learnt of the kick", async || {
        attempt += 1;
        let (status, _) = pair
            .b
            .request(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/probe{attempt}",
                    pair.room_id
                ),
                Some(&pair.token(Side::B)),
                Some(text("still here?")),
            )
            .await?;
        Ok((status == 403).then_some(()))
    })
    .await?;

    // Bob joins again by alias, then is banned: he cannot come back.
    let alias = format!("#lobby:{}", pair.a.server_name());
    pair.bob
        .join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias.as_str())?, &[])
        .await?;
    pair.wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
        c["membership"] == "join"
    })
    .await?;
    let (status, body) = pair
        .a
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/ban", pair.room_id),
            Some(&pair.token(Side::A)),
            Some(json!({ "user_id": bob_id, "reason": "spam" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    pair.wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
        c["membership"] == "ban"
    })
    .await?;
    let body = eventually("Bob's server never learnt of the ban", async || {
        let (status, body) = pair
            .b
            .request(
                "POST",
                &format!("/_matrix/client/v3/join/{}", alias.replace('#', "%23")),
                Some(&pair.token(Side::B)),
                Some(json!({})),
            )
            .await?;
        Ok((status == 403).then_some(body))
    })
    .await?;
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invites_cross_servers_and_can_be_accepted_or_declined() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let bob = b.register("bob").await?;
    let carol = b.register("carol").await?;
    let bob_id = format!("@bob:{}", b.server_name());
    let carol_id = format!("@carol:{}", b.server_name());

    bob.account().set_display_name(Some("Bob Builder")).await?;

    // A private room: the only way in is an invite.
    let mut request = create_room::v3::Request::new();
    request.name = Some("Private".to_owned());
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    for user in [&bob_id, &carol_id] {
        let (status, body) = a
            .request(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
                Some(&token(&alice)),
                Some(json!({ "user_id": user })),
            )
            .await?;
        assert_eq!(status, 200, "{body}");
    }
    // The invite carries Bob's profile, asked of his server, so Alice's client can name
    // a direct chat after him.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob_id}");
    let (status, member) = a.request("GET", &path, Some(&token(&alice)), None).await?;
    assert_eq!(
        (status, &member["membership"], &member["displayname"]),
        (200, &json!("invite"), &json!("Bob Builder")),
        "{member}"
    );

    // Bob's sync shows the invite with the room's name, from the stripped state.
    let path = format!("/rooms/invite/{room_id}/invite_state/events");
    let invite = eventually("the invite never reached Bob", async || {
        let sync = complement_tests::raw_sync(&b, &bob, None, 0).await?;
        Ok(sync.pointer(&path).cloned())
    })
    .await?;
    let events = invite.as_array().context("a list")?;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Private"),
        "{invite}"
    );
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob_id.as_str()
            && e["content"]["membership"] == "invite"),
        "{invite}"
    );

    // Bob accepts (through the inviter's server) and talks; Carol declines.
    bob.join_room_by_id(&room_id).await?;
    let (status, body) = b
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&token(&carol)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let pair = Pair {
        a,
        b,
        alice,
        bob,
        room_id,
    };
    pair.wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
        c["membership"] == "join"
    })
    .await?;
    pair.wait_for_state(Side::A, "m.room.member", &carol_id, |c| {
        c["membership"] == "leave"
    })
    .await?;
    pair.send(
        Side::B,
        "m.room.message",
        "hi",
        text("thanks for the invite"),
    )
    .await?;
    pair.wait_for_bodies(Side::A, &["thanks for the invite".to_owned()])
        .await?;
    // Carol's sync no longer offers the invite.
    let sync = complement_tests::raw_sync_filtered(&pair.b, &token(&carol), None, 0, None).await?;
    assert!(
        sync.pointer(&format!("/rooms/invite/{}", pair.room_id))
            .is_none(),
        "{sync}"
    );
    Ok(())
}

/// `members` new users of `a` join `room_id`, then send `messages` messages between them.
async fn fill_room(a: &TestServer, room_id: &str, members: usize, messages: usize) -> Result<()> {
    use futures::{StreamExt, stream};
    let a_ref = a;
    let room_ref = room_id;
    let tokens: Vec<String> = stream::iter(0..members)
        .map(|n| async move {
            let (status, body) = a_ref
                .request(
                    "POST",
                    "/_matrix/client/v3/register",
                    None,
                    Some(json!({
                        "username": format!("member{n}"),
                        "password": "a long enough password",
                        "auth": { "type": "m.login.dummy" },
                    })),
                )
                .await?;
            ensure!(status == 200, "register answered {status}: {body}");
            let token = body["access_token"].as_str().context("a token")?.to_owned();
            let (status, body) = a_ref
                .request(
                    "POST",
                    &format!("/_matrix/client/v3/rooms/{room_ref}/join"),
                    Some(&token),
                    Some(json!({})),
                )
                .await?;
            ensure!(status == 200, "join answered {status}: {body}");
            Ok::<_, anyhow::Error>(token)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let tokens_ref = &tokens;
    stream::iter(0..messages)
        .map(|n| async move {
            let token = &tokens_ref[n % tokens_ref.len()];
            let (status, body) = a_ref
                .request(
                    "PUT",
                    &format!("/_matrix/client/v3/rooms/{room_ref}/send/m.room.message/big{n}"),
                    Some(token),
                    Some(text(&format!("message {n}"))),
                )
                .await?;
            ensure!(status == 200, "send answered {status}: {body}");
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(())
}

/// How long joining a big room from another server takes: `BIG_ROOM_MEMBERS` members
/// (default 1000) and `BIG_ROOM_MESSAGES` messages (default 5000) on A, then a user of B
/// joins by alias. Run by hand: `cargo test -p complement-tests --test federation --
/// --ignored --nocapture joining_a_big_room`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn joining_a_big_room_across_servers() -> Result<()> {
    let members: usize = std::env::var("BIG_ROOM_MEMBERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let messages: usize = std::env::var("BIG_ROOM_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let mut request = create_room::v3::Request::new();
    request.room_alias_name = Some("big".to_owned());
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let setup = Instant::now();
    fill_room(&a, room_id.as_str(), members, messages).await?;
    eprintln!(
        "room of {} members and {messages} messages made in {:?}",
        members + 1,
        setup.elapsed()
    );
    let bob = b.register("bob").await?;
    let alias = format!("#big:{}", a.server_name());
    let started = Instant::now();
    bob.join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias.as_str())?, &[])
        .await?;
    let joined = started.elapsed();
    let (_, body) = b
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
            Some(&token(&bob)),
            None,
        )
        .await?;
    let count = body["joined"].as_object().map_or(0, |m| m.len());
    eprintln!("join of a room of {count} members from another server: {joined:?}");
    ensure!(count == members + 2, "B sees {count} members");
    Ok(())
}

/// A room of Alice's on `a` that is entered by knocking, named "Knock first", with the
/// alias `#knock`.
async fn knock_room(a: &TestServer, alice: &matrix_sdk::Client) -> Result<OwnedRoomId> {
    let (status, body) = a
        .request(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token(alice)),
            Some(json!({
                "name": "Knock first",
                "room_alias_name": "knock",
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": { "join_rule": "knock" },
                }],
            })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let room_id: OwnedRoomId = body["room_id"].as_str().context("a room id")?.try_into()?;
    Ok(room_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_knock_from_another_server_is_seen_and_answered_with_an_invite() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let carol = a.register("carol").await?;
    let bob = b.register("bob").await?;
    let bob_id = format!("@bob:{}", b.server_name());
    let room_id = knock_room(&a, &alice).await?;
    let alias = format!("#knock:{}", a.server_name()).replace('#', "%23");

    // A local knock and a remote one, by alias.
    for (server, user) in [(&a, &carol), (&b, &bob)] {
        let (status, body) = server
            .request(
                "POST",
                &format!("/_matrix/client/v3/knock/{alias}"),
                Some(&token(user)),
                Some(json!({ "reason": "let me in" })),
            )
            .await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["room_id"], room_id.as_str());
    }
    // Bob's sync shows the knock with the room's name.
    let sync = complement_tests::raw_sync(&b, &bob, None, 0).await?;
    let knock_state = sync
        .pointer(&format!("/rooms/knock/{room_id}/knock_state/events"))
        .and_then(Value::as_array)
        .with_context(|| format!("no knock in {sync}"))?;
    assert!(
        knock_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock first"),
        "{sync}"
    );
    let pair = Pair {
        a,
        b,
        alice,
        bob,
        room_id,
    };
    let knock = pair
        .wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
            c["membership"] == "knock"
        })
        .await?;
    assert_eq!(knock["reason"], "let me in");

    // Alice answers with an invite; Bob joins.
    let (status, body) = pair
        .a
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", pair.room_id),
            Some(&pair.token(Side::A)),
            Some(json!({ "user_id": bob_id })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    eventually("the invite never reached Bob", async || {
        let sync = complement_tests::raw_sync(&pair.b, &pair.bob, None, 0).await?;
        let path = format!("/rooms/invite/{}", pair.room_id);
        Ok(sync.pointer(&path).is_some().then_some(()))
    })
    .await?;
    pair.bob.join_room_by_id(&pair.room_id).await?;
    pair.wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
        c["membership"] == "join"
    })
    .await?;
    pair.send(Side::B, "m.room.message", "in", text("I am in"))
        .await?;
    pair.wait_for_bodies(Side::A, &["I am in".to_owned()])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invite_into_a_room_the_server_is_not_in_can_be_declined() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let carol = b.register("carol").await?;
    let carol_id = format!("@carol:{}", b.server_name());
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.invite = vec![carol_id.as_str().try_into()?];
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let first = complement_tests::raw_sync(&b, &carol, None, 0).await?;
    assert!(
        first.pointer(&format!("/rooms/invite/{room_id}")).is_some(),
        "{first}"
    );
    let since = first["next_batch"].as_str().context("a token")?.to_owned();
    let (status, body) = b
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&token(&carol)),
            Some(json!({ "reason": "no thanks" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // Carol's syncs go on working and no longer offer the invite.
    let later = complement_tests::raw_sync(&b, &carol, Some(&since), 0).await?;
    assert!(
        later.pointer(&format!("/rooms/invite/{room_id}")).is_none(),
        "{later}"
    );
    let fresh = complement_tests::raw_sync(&b, &carol, None, 0).await?;
    assert!(
        fresh.pointer(&format!("/rooms/invite/{room_id}")).is_none(),
        "{fresh}"
    );
    // Alice's room has Carol's refusal.
    let (status, member) = a
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{carol_id}"),
            Some(&token(&alice)),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "no thanks");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_of_an_allowed_room_join_a_restricted_room_across_servers() -> Result<()> {
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;
    let (a, b) = (&pair.a, &pair.b);
    let carol = a.register("carol").await?;
    let dave = a.register("dave").await?;
    carol.join_room_by_id(&pair.room_id).await?;
    // A room only members of the lobby may join, without an invite.
    let (status, body) = a
        .request(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&pair.token(Side::A)),
            Some(json!({
                "name": "Lobby regulars",
                // Only moderators may invite: a server whose members are not may not
                // vouch for a join.
                "power_level_content_override": { "invite": 50 },
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{ "type": "m.room_membership", "room_id": pair.room_id }],
                    },
                }],
            })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let regulars: OwnedRoomId = body["room_id"].as_str().context("a room id")?.try_into()?;
    let member_path =
        |user: &str| format!("/_matrix/client/v3/rooms/{regulars}/state/m.room.member/{user}");

    // Carol, in the lobby, joins; Alice vouches for her. Dave, who is not, may not.
    carol.join_room_by_id(&regulars).await?;
    let carol_id = format!("@carol:{}", a.server_name());
    let (_, member) = a
        .request("GET", &member_path(&carol_id), Some(&token(&carol)), None)
        .await?;
    assert_eq!(member["membership"], "join", "{member}");
    assert_eq!(member["join_authorised_via_users_server"], pair.alice_id());
    let (status, body) = a
        .request(
            "POST",
            &format!("/_matrix/client/v3/join/{regulars}"),
            Some(&token(&dave)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );

    // Bob, on the other server and in the lobby, joins through A, which vouches for the
    // join and signs it: B accepts the join only with A's signature on it.
    let via = [matrix_sdk::ruma::OwnedServerName::try_from(
        a.server_name(),
    )?];
    let target = <&RoomOrAliasId>::from(&*regulars);
    let joined = tokio::time::timeout(PATIENCE, pair.bob.join_room_by_id_or_alias(target, &via))
        .await
        .context("the restricted join took too long")??;
    assert_eq!(joined.room_id(), regulars);
    let bob_id = pair.bob_id();
    for (server, user_token) in [(a, pair.token(Side::A)), (b, pair.token(Side::B))] {
        let (status, member) = server
            .request("GET", &member_path(&bob_id), Some(&user_token), None)
            .await?;
        assert_eq!(status, 200, "{member}");
        assert_eq!(member["membership"], "join", "{member}");
        assert_eq!(member["join_authorised_via_users_server"], pair.alice_id());
    }
    // Frank, on B, joins the lobby. B is in the restricted room now, but none of its
    // members may invite there: B asks A, which vouches for the join and signs it.
    let frank = b.register("frank").await?;
    let lobby = <&RoomOrAliasId>::from(&*pair.room_id);
    frank.join_room_by_id_or_alias(lobby, &via).await?;
    let frank_id = format!("@frank:{}", b.server_name());
    let lobby_member = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{frank_id}",
        pair.room_id
    );
    eventually("A sees Frank in the lobby", async || {
        let (status, member) = a
            .request("GET", &lobby_member, Some(&pair.token(Side::A)), None)
            .await?;
        Ok((status == 200 && member["membership"] == "join").then_some(()))
    })
    .await?;
    let joined = tokio::time::timeout(PATIENCE, frank.join_room_by_id_or_alias(target, &[]))
        .await
        .context("the join through the other server took too long")??;
    assert_eq!(joined.room_id(), regulars);
    for (server, user_token) in [(a, pair.token(Side::A)), (b, pair.token(Side::B))] {
        let member = eventually("Frank's join on both servers", async || {
            let (status, member) = server
                .request("GET", &member_path(&frank_id), Some(&user_token), None)
                .await?;
            Ok((status == 200).then_some(member))
        })
        .await?;
        assert_eq!(member["membership"], "join", "{member}");
        assert_eq!(member["join_authorised_via_users_server"], pair.alice_id());
    }

    // Eve, on B but not in the lobby, is refused by A.
    let eve = b.register("eve").await?;
    let refused = eve.join_room_by_id_or_alias(target, &via).await;
    assert!(
        refused.is_err(),
        "Eve joined a restricted room she has no right to"
    );
    let eve_id = format!("@eve:{}", b.server_name());
    let (status, _) = a
        .request(
            "GET",
            &member_path(&eve_id),
            Some(&pair.token(Side::A)),
            None,
        )
        .await?;
    assert_eq!(status, 404, "A knows of a membership of Eve's");
    Ok(())
}
