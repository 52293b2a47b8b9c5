//! Rooms through real clients: DMs and groups, membership changes, messages both ways in
//! order, edits, redactions, typing, receipts, profiles and long history.

use std::time::Duration;

use complement_tests::{TestServer, raw_sync, timeline, token};
use matrix_sdk::{
    RoomState,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, api::client::receipt::create_receipt::v3::ReceiptType,
        api::client::room::create_room, events::receipt::ReceiptThread,
        events::room::message::RoomMessageEventContent,
    },
};
use serde_json::{Value, json};

fn bodies(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Alice and Bob, registered, in a direct chat Alice made.
async fn two_in_a_dm(
    server: &TestServer,
) -> anyhow::Result<(matrix_sdk::Client, matrix_sdk::Client, OwnedRoomId)> {
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = create_dm(&alice, "@bob:localhost").await?;
    bob.join_room_by_id(&room_id).await?;
    Ok((alice, bob, room_id))
}

/// A direct chat as Element makes it: `is_direct`, the invitee, trusted private chat
/// (both members are admins).
async fn create_dm(alice: &matrix_sdk::Client, bob: &str) -> anyhow::Result<OwnedRoomId> {
    create_private(alice, bob, create_room::v3::RoomPreset::TrustedPrivateChat).await
}

async fn create_private(
    alice: &matrix_sdk::Client,
    bob: &str,
    preset: create_room::v3::RoomPreset,
) -> anyhow::Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.is_direct = true;
    request.invite = vec![bob.try_into()?];
    request.preset = Some(preset);
    Ok(alice.create_room(request).await?.room_id().to_owned())
}

#[tokio::test]
async fn direct_chat_both_ways_in_order() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = create_dm(&alice, "@bob:localhost").await?;

    complement_tests::sync_until(&bob, 10, |c| {
        c.get_room(&room_id)
            .is_some_and(|r| r.state() == RoomState::Invited)
    })
    .await?;
    let invited = bob.get_room(&room_id).unwrap();
    let inviter = invited
        .invite_details()
        .await?
        .inviter
        .map(|m| m.user_id().to_owned());
    assert_eq!(
        inviter.as_deref().map(|u| u.as_str()),
        Some("@alice:localhost")
    );
    bob.join_room_by_id(&room_id).await?;

    let before = raw_sync(&server, &bob, None, 0).await?;
    let since = before["next_batch"].as_str().unwrap().to_owned();
    let alice_room = alice.get_room(&room_id).unwrap();
    complement_tests::sync_until(&bob, 10, |c| {
        c.get_room(&room_id)
            .is_some_and(|r| r.state() == RoomState::Joined)
    })
    .await?;
    let bob_room = bob.get_room(&room_id).unwrap();
    for i in 0..5 {
        alice_room
            .send(RoomMessageEventContent::text_plain(format!("alice {i}")))
            .await?;
        bob_room
            .send(RoomMessageEventContent::text_plain(format!("bob {i}")))
            .await?;
    }
    let expected: Vec<String> = (0..5)
        .flat_map(|i| [format!("alice {i}"), format!("bob {i}")])
        .collect();
    for client in [&alice, &bob] {
        let sync = raw_sync(&server, client, Some(&since), 0).await?;
        assert_eq!(bodies(&timeline(&sync, room_id.as_str())), expected);
    }

    // Each sender's own events carry its transaction id; the other side's do not.
    let sync = raw_sync(&server, &alice, Some(&since), 0).await?;
    for event in timeline(&sync, room_id.as_str()) {
        let own = event["sender"] == "@alice:localhost";
        assert_eq!(
            event["unsigned"]["transaction_id"].is_string(),
            own,
            "{event}"
        );
    }

    let (status, body) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
            Some(&token(&alice)),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(body["joined"].as_object().unwrap().len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_message_arrives() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let since = raw_sync(&server, &bob, None, 0).await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let poll = {
        let server_url = server.base_url();
        let token = token(&bob);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let url = format!("{server_url}/_matrix/client/v3/sync?timeout=20000&since={since}");
            let body: Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok((started.elapsed(), body))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice
        .get_room(&room_id)
        .unwrap()
        .send(RoomMessageEventContent::text_plain("wake up"))
        .await?;
    let (elapsed, body) = poll.await??;
    assert!(elapsed < Duration::from_secs(5), "woken after {elapsed:?}");
    assert_eq!(bodies(&timeline(&body, room_id.as_str())), vec!["wake up"]);
    Ok(())
}

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
    let since = raw_sync(&server, &alice, None, 0).await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob joins by alias, Carol is invited and joins, Bob leaves, Carol is kicked, Bob is banned.
    bob.join_room_by_id_or_alias(
        (&*"#team:localhost"
            .try_into()
            .map(|a: matrix_sdk::ruma::OwnedRoomAliasId| a)?)
            .into(),
        &[],
    )
    .await?;
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

    // The member list at the earlier token has only Alice; now Bob is banned.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/members?at={since}");
    let (status, then) = server
        .request("GET", &path, Some(&token(&alice)), None)
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
        .request("GET", &path, Some(&token(&alice)), None)
        .await?;
    assert_eq!(banned["chunk"][0]["state_key"], "@bob:localhost");

    // Carol sees her kick with its reason, in the leave section.
    let carol_sync = raw_sync(&server, &carol, None, 0).await?;
    assert!(
        carol_sync["rooms"]["leave"].get(room_id.as_str()).is_none(),
        "left rooms only with include_leave"
    );
    let (status, kicked) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/@carol:localhost"),
            Some(&token(&carol)),
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

    // A banned user cannot come back; an unbanned one can.
    let (status, body) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            Some(&token(&bob)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    room.unban_user("@bob:localhost".try_into()?, None).await?;
    let (status, _) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            Some(&token(&bob)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200);

    // Bob, a plain member, may not kick.
    let (status, body) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/kick"),
            Some(&token(&bob)),
            Some(json!({ "user_id": "@alice:localhost" })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );

    let (_, directory) = server
        .request(
            "POST",
            "/_matrix/client/v3/publicRooms",
            Some(&token(&carol)),
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
            Some(&token(&carol)),
            Some(json!({ "since": "", "filter": { "generic_search_term": "plan" } })),
        )
        .await?;
    assert_eq!(status, 200, "{first_page}");
    assert_eq!(first_page["chunk"], directory["chunk"]);
    Ok(())
}

#[tokio::test]
async fn edits_and_redactions() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = create_private(
        &alice,
        "@bob:localhost",
        create_room::v3::RoomPreset::PrivateChat,
    )
    .await?;
    bob.join_room_by_id(&room_id).await?;
    let room = alice.get_room(&room_id).unwrap();
    let original = room
        .send(RoomMessageEventContent::text_plain("helo"))
        .await?
        .response
        .event_id;
    let edit = json!({
        "msgtype": "m.text", "body": "* hello",
        "m.new_content": { "msgtype": "m.text", "body": "hello" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": original },
    });
    let (status, _) = server
        .request(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/edit1"),
            Some(&token(&alice)),
            Some(edit),
        )
        .await?;
    assert_eq!(status, 200);

    // Bob may not redact Alice's message; Alice may.
    let (status, _) = server
        .request(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room_id}/redact/{original}/r1"),
            Some(&token(&bob)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 403);
    let redaction = room.redact(&original, Some("typo"), None).await?.event_id;

    let (status, event) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/event/{original}"),
            Some(&token(&bob)),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(event["content"], json!({}), "the content is gone");
    assert_eq!(
        event["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str()
    );

    let sync = raw_sync(&server, &bob, None, 0).await?;
    let events = timeline(&sync, room_id.as_str());
    let edit = events
        .iter()
        .find(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .expect("the edit");
    assert_eq!(edit["content"]["m.new_content"]["body"], "hello");
    let redaction_event = events
        .iter()
        .find(|e| e["type"] == "m.room.redaction")
        .expect("the redaction");
    assert_eq!(
        redaction_event["redacts"],
        original.as_str(),
        "room version 11 also keeps the top-level redacts for clients"
    );
    Ok(())
}

#[tokio::test]
async fn typing_and_receipts_reach_the_other_member() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let since = raw_sync(&server, &bob, None, 0).await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let room = alice.get_room(&room_id).unwrap();
    room.typing_notice(true).await?;
    let sync = raw_sync(&server, &bob, Some(&since), 5000).await?;
    let ephemeral = &sync["rooms"]["join"][room_id.as_str()]["ephemeral"]["events"];
    assert_eq!(ephemeral[0]["type"], "m.typing");
    assert_eq!(
        ephemeral[0]["content"]["user_ids"],
        json!(["@alice:localhost"])
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    complement_tests::sync_until(&bob, 10, |c| c.get_room(&room_id).is_some()).await?;
    let message = bob
        .get_room(&room_id)
        .unwrap()
        .send(RoomMessageEventContent::text_plain("read me"))
        .await?
        .response
        .event_id;
    room.send_single_receipt(
        ReceiptType::Read,
        ReceiptThread::Unthreaded,
        message.clone(),
    )
    .await?;
    let sync = raw_sync(&server, &bob, Some(&since), 5000).await?;
    let events = sync["rooms"]["join"][room_id.as_str()]["ephemeral"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let receipt = events
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("a receipt");
    assert!(receipt["content"][message.as_str()]["m.read"]["@alice:localhost"]["ts"].is_u64());

    // A private receipt is not shown to others.
    room.send_single_receipt(
        ReceiptType::ReadPrivate,
        ReceiptThread::Unthreaded,
        message.clone(),
    )
    .await?;
    let next = sync["next_batch"].as_str().unwrap();
    let sync = raw_sync(&server, &bob, Some(next), 500).await?;
    let leaked = sync.to_string().contains("m.read.private");
    assert!(!leaked, "{sync}");

    // Alice's unread count for Bob's messages drops to zero after her receipt.
    let alice_sync = raw_sync(&server, &alice, None, 0).await?;
    assert_eq!(
        alice_sync["rooms"]["join"][room_id.as_str()]["unread_notifications"]["notification_count"],
        0
    );
    Ok(())
}

#[tokio::test]
async fn a_profile_change_is_seen_by_room_members() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let since = raw_sync(&server, &bob, None, 0).await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
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
async fn history_pages_back_over_more_than_a_thousand_events() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let t = token(&alice);
    const COUNT: usize = 1100;
    for i in 0..COUNT {
        let (status, _) = server
            .request(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/m{i}"),
                Some(&t),
                Some(json!({ "msgtype": "m.text", "body": format!("{i}") })),
            )
            .await?;
        assert_eq!(status, 200);
    }
    complement_tests::sync_until(&bob, 10, |c| c.get_room(&room_id).is_some()).await?;
    let room = bob.get_room(&room_id).unwrap();
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut options = MessagesOptions::backward().from(from.as_deref());
        options.limit = 100u32.into();
        let page = room.messages(options).await?;
        for event in &page.chunk {
            let value: Value = event.raw().deserialize_as()?;
            if value["type"] == "m.room.message" {
                seen.push(
                    value["content"]["body"]
                        .as_str()
                        .unwrap()
                        .parse::<usize>()?,
                );
            }
        }
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => break,
        }
    }
    let expected: Vec<usize> = (0..COUNT).rev().collect();
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test]
async fn prev_batch_continues_exactly_where_the_sync_timeline_starts() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let room_id = alice
        .create_room(create_room::v3::Request::new())
        .await?
        .room_id()
        .to_owned();
    let t = token(&alice);
    for i in 0..30 {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/p{i}");
        server
            .request(
                "PUT",
                &path,
                Some(&t),
                Some(json!({ "msgtype": "m.text", "body": format!("{i}") })),
            )
            .await?;
    }
    let sync = raw_sync(&server, &alice, None, 0).await?;
    let room = &sync["rooms"]["join"][room_id.as_str()]["timeline"];
    assert_eq!(room["limited"], true);
    assert_eq!(
        bodies(&timeline(&sync, room_id.as_str())),
        (20..30).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let prev_batch = room["prev_batch"].as_str().unwrap();
    let path =
        format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=5&from={prev_batch}");
    let (status, page) = server.request("GET", &path, Some(&t), None).await?;
    assert_eq!(status, 200);
    let chunk: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&chunk), vec!["19", "18", "17", "16", "15"]);

    // Back-pagination from the sync's next_batch starts with the newest event.
    let next_batch = sync["next_batch"].as_str().unwrap();
    let path =
        format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=2&from={next_batch}");
    let (_, page) = server.request("GET", &path, Some(&t), None).await?;
    let chunk: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&chunk), vec!["29", "28"]);
    // Forward from the first page's end continues without a gap or a repeat.
    let end = page["end"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=3&from={end}");
    let (_, page) = server.request("GET", &path, Some(&t), None).await?;
    let chunk: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&chunk), vec!["28", "29"]);
    assert!(
        page.get("end").is_none(),
        "no end at the end of the room: {page}"
    );
    Ok(())
}

#[tokio::test]
async fn lazy_loading_sends_only_the_members_the_timeline_needs() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let mut clients = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let client = server.register(name).await?;
        client.join_room_by_id(&room_id).await?;
        clients.push(client);
    }
    let carol = &clients[1];
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/c1");
    server
        .request(
            "PUT",
            &path,
            Some(&token(carol)),
            Some(json!({ "msgtype": "m.text", "body": "hi" })),
        )
        .await?;

    let members = |sync: &Value| -> Vec<String> {
        let mut members: Vec<String> = sync["rooms"]["join"][room_id.as_str()]["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .chain(timeline(sync, room_id.as_str()))
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect();
        members.sort();
        members.dedup();
        members
    };
    let dave = &clients[2];
    let lazy =
        json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } });
    let sync =
        complement_tests::raw_sync_filtered(&server, &token(dave), None, 0, Some(&lazy)).await?;
    assert_eq!(members(&sync), vec!["@carol:localhost", "@dave:localhost"]);
    let full = json!({ "room": { "timeline": { "limit": 1 } } });
    let sync =
        complement_tests::raw_sync_filtered(&server, &token(dave), None, 0, Some(&full)).await?;
    assert_eq!(
        members(&sync),
        vec![
            "@alice:localhost",
            "@bob:localhost",
            "@carol:localhost",
            "@dave:localhost"
        ]
    );
    assert!(
        sync["rooms"]["join"][room_id.as_str()]["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );

    // A room left shows in the leave section of an incremental sync, with the leave event.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let leave = format!("/_matrix/client/v3/rooms/{room_id}/leave");
    let (status, _) = server
        .request("POST", &leave, Some(&token(dave)), Some(json!({})))
        .await?;
    assert_eq!(status, 200);
    let sync =
        complement_tests::raw_sync_filtered(&server, &token(dave), Some(&since), 0, None).await?;
    let left = &sync["rooms"]["leave"][room_id.as_str()]["timeline"]["events"];
    assert_eq!(
        left.as_array().unwrap().last().unwrap()["content"]["membership"],
        "leave"
    );
    assert!(sync["rooms"]["join"].get(room_id.as_str()).is_none());
    Ok(())
}

#[tokio::test]
async fn unread_counts_follow_the_users_push_rules() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let send = |txn: &str, content: Value| {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
        let token = token(&alice);
        let server = &server;
        async move {
            server
                .request("PUT", &path, Some(&token), Some(content))
                .await
        }
    };
    send("1", json!({ "msgtype": "m.text", "body": "lunch?" })).await?;
    send("2", json!({ "msgtype": "m.text", "body": "hey bob", "m.mentions": { "user_ids": ["@bob:localhost"] } })).await?;
    send(
        "3",
        json!({ "msgtype": "m.notice", "body": "a bot notice" }),
    )
    .await?;
    let counts =
        |sync: &Value| sync["rooms"]["join"][room_id.as_str()]["unread_notifications"].clone();
    let sync = raw_sync(&server, &bob, None, 0).await?;
    assert_eq!(
        counts(&sync),
        json!({ "notification_count": 2, "highlight_count": 1 }),
        "notices do not notify"
    );

    // A room rule with no actions stops plain messages counting.
    let mute = json!({ "actions": [] });
    let path = format!("/_matrix/client/v3/pushrules/global/room/{room_id}");
    let (status, _) = server
        .request("PUT", &path, Some(&token(&bob)), Some(mute))
        .await?;
    assert_eq!(status, 200);
    let last = send("4", json!({ "msgtype": "m.text", "body": "still there?" }))
        .await?
        .1["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sync = raw_sync(&server, &bob, None, 0).await?;
    assert_eq!(
        counts(&sync),
        json!({ "notification_count": 1, "highlight_count": 1 }),
        "only the mention still counts: mention rules come before room rules"
    );

    let path = format!("/_matrix/client/v3/pushrules/global/room/{room_id}");
    server
        .request("DELETE", &path, Some(&token(&bob)), None)
        .await?;
    let sync = raw_sync(&server, &bob, None, 0).await?;
    assert_eq!(counts(&sync)["notification_count"], 3);
    let path = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{last}");
    server
        .request("POST", &path, Some(&token(&bob)), Some(json!({})))
        .await?;
    let sync = raw_sync(&server, &bob, None, 0).await?;
    assert_eq!(
        counts(&sync),
        json!({ "notification_count": 0, "highlight_count": 0 })
    );
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
    let since = raw_sync(&server, &bob, None, 0).await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

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
    let room_id = alice
        .create_room(create_room::v3::Request::new())
        .await?
        .room_id()
        .to_owned();
    let t = token(&alice);
    let mut ids = Vec::new();
    for i in 0..9 {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/c{i}");
        let (_, sent) = server
            .request(
                "PUT",
                &path,
                Some(&t),
                Some(json!({ "msgtype": "m.text", "body": format!("{i}") })),
            )
            .await?;
        ids.push(sent["event_id"].as_str().unwrap().to_owned());
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
async fn sending_is_rate_limited_but_retries_of_a_transaction_are_not() -> anyhow::Result<()> {
    let limits = "[global.rate_limits.login]\nper_second = 100.0\nburst = 100\n[global.rate_limits.registration]\nper_second = 100.0\nburst = 100\n[global.rate_limits.message]\nper_second = 0.5\nburst = 3";
    let server = TestServer::start_with(limits).await?;
    let alice = server.register("alice").await?;
    // createRoom takes one token of the bucket, the first send two more.
    let room_id = alice
        .create_room(create_room::v3::Request::new())
        .await?
        .room_id()
        .to_owned();
    let t = token(&alice);
    let send = |txn: &'static str| {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
        let (server, t) = (&server, t.clone());
        async move {
            server
                .request(
                    "PUT",
                    &path,
                    Some(&t),
                    Some(json!({ "msgtype": "m.text", "body": txn })),
                )
                .await
        }
    };
    let (status, first) = send("one").await?;
    assert_eq!(status, 200);
    assert_eq!(send("two").await?.0, 200);
    let (status, limited) = send("three").await?;
    assert_eq!(
        (status, limited["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED"))
    );
    assert!(limited["retry_after_ms"].as_u64().is_some());
    let (status, again) = send("one").await?;
    assert_eq!(
        (status, &again["event_id"]),
        (200, &first["event_id"]),
        "a retried transaction is answered, not limited"
    );
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
async fn typing_and_directory_requests_may_leave_out_optional_fields() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let since = raw_sync(&server, &bob, None, 0).await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // `timeout` is optional: the server picks one.
    let typing = format!("/_matrix/client/v3/rooms/{room_id}/typing/@alice:localhost");
    let (status, body) = server
        .request(
            "PUT",
            &typing,
            Some(&token(&alice)),
            Some(json!({ "typing": true })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let sync = raw_sync(&server, &bob, Some(&since), 5000).await?;
    let ephemeral = &sync["rooms"]["join"][room_id.as_str()]["ephemeral"]["events"];
    assert_eq!(
        ephemeral[0]["content"]["user_ids"],
        json!(["@alice:localhost"])
    );
    let (status, _) = server
        .request(
            "PUT",
            &typing,
            Some(&token(&alice)),
            Some(json!({ "typing": false })),
        )
        .await?;
    assert_eq!(status, 200);

    // `visibility` defaults to public.
    let listing = format!("/_matrix/client/v3/directory/list/room/{room_id}");
    let (_, before) = server.request("GET", &listing, None, None).await?;
    assert_eq!(before["visibility"], "private");
    let (status, body) = server
        .request("PUT", &listing, Some(&token(&alice)), Some(json!({})))
        .await?;
    assert_eq!(status, 200, "{body}");
    let (_, after) = server.request("GET", &listing, None, None).await?;
    assert_eq!(after["visibility"], "public");
    Ok(())
}
