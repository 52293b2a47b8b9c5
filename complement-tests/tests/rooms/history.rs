//! History: paging back, sync timelines continuing into /messages, lazy-loaded
//! members, unread counts, the history of a room joined since the last sync.

use super::*;

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
    let room_id = room_alone(&alice).await?;
    let t = token(&alice);
    for i in 0..30 {
        server
            .send_text(&t, room_id.as_str(), &format!("p{i}"), &i.to_string())
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
    send("4", json!({ "msgtype": "m.text", "body": "still there?" })).await?;
    send("5", json!({ "msgtype": "m.text", "body": "bob!", "m.mentions": { "user_ids": ["@bob:localhost"] } })).await?;
    let sync = raw_sync(&server, &bob, None, 0).await?;
    assert_eq!(
        counts(&sync),
        json!({ "notification_count": 3, "highlight_count": 2 }),
        "the muted message does not count, the mention does (mention rules come before \
         room rules), and what counted before still does: actions are decided once, when \
         an event arrives"
    );

    let path = format!("/_matrix/client/v3/pushrules/global/room/{room_id}");
    server
        .request("DELETE", &path, Some(&token(&bob)), None)
        .await?;
    let last = send("6", json!({ "msgtype": "m.text", "body": "unmuted" }))
        .await?
        .1["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sync = raw_sync(&server, &bob, None, 0).await?;
    assert_eq!(counts(&sync)["notification_count"], 4);
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
async fn lazy_members_cover_a_gapped_sync_and_a_context_and_inline_filters_match_stored_ones()
-> anyhow::Result<()> {
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
    let (bob, carol, dave) = (&clients[0], &clients[1], &clients[2]);
    let lazy =
        json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true } } });
    // The same filter stored, to be used by id.
    let (_, stored) = server
        .request(
            "POST",
            "/_matrix/client/v3/user/@dave:localhost/filter",
            Some(&token(dave)),
            Some(lazy.clone()),
        )
        .await?;
    let since = complement_tests::raw_sync_filtered(&server, &token(dave), None, 0, Some(&lazy))
        .await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let room = room_id.as_str();
    server
        .send_text(&token(carol), room, "c1", "carol 1")
        .await?;
    let mut bobs = Vec::new();
    for n in 1..=3 {
        bobs.push(
            server
                .send_text(&token(bob), room, &format!("b{n}"), &format!("bob {n}"))
                .await?,
        );
    }
    server
        .send_text(&token(carol), room, "c2", "carol 2")
        .await?;

    // A gapped incremental sync: its timeline's senders, Bob and Carol, come with their
    // member events, inline filter or stored one alike.
    let members_of = |sync: &Value| -> Vec<String> {
        let room = &sync["rooms"]["join"][room];
        let mut members: Vec<String> = room["state"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(room["timeline"]["events"].as_array().into_iter().flatten())
            .filter(|e| e["type"] == "m.room.member")
            .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
            .collect();
        members.sort();
        members.dedup();
        members
    };
    let inline =
        complement_tests::raw_sync_filtered(&server, &token(dave), Some(&since), 0, Some(&lazy))
            .await?;
    assert_eq!(
        inline["rooms"]["join"][room]["timeline"]["limited"], true,
        "{inline}"
    );
    assert_eq!(
        members_of(&inline),
        vec!["@bob:localhost", "@carol:localhost"],
        "{inline}"
    );
    let path = format!(
        "/_matrix/client/v3/sync?since={since}&filter={}",
        stored["filter_id"].as_str().unwrap()
    );
    let (_, by_id) = server
        .request("GET", &path, Some(&token(dave)), None)
        .await?;
    assert_eq!(members_of(&by_id), members_of(&inline));
    let ids = |sync: &Value| -> Vec<Value> {
        timeline(sync, room)
            .iter()
            .map(|e| e["event_id"].clone())
            .collect()
    };
    assert_eq!(ids(&by_id), ids(&inline));

    // `/context` of Bob's second message, one event each side: Bob only.
    let filter: String = url::form_urlencoded::byte_serialize(
        json!({ "lazy_load_members": true }).to_string().as_bytes(),
    )
    .collect();
    let path = format!(
        "/_matrix/client/v3/rooms/{room}/context/{}?limit=2&filter={filter}",
        bobs[1]
    );
    let (status, context) = server
        .request("GET", &path, Some(&token(dave)), None)
        .await?;
    assert_eq!(status, 200, "{context}");
    let members: Vec<&str> = context["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert_eq!(members, vec!["@bob:localhost"], "{context}");
    assert!(
        context["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    Ok(())
}

#[tokio::test]
async fn state_set_while_a_member_was_away_reaches_them_in_a_room_with_private_history()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let room = room_id.as_str();
    let state = |kind: &str| format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
    let (status, _) = server
        .request(
            "PUT",
            &state("m.room.history_visibility"),
            Some(&token(&alice)),
            Some(json!({ "history_visibility": "joined" })),
        )
        .await?;
    assert_eq!(status, 200);
    bob.join_room_by_id(&room_id).await?;
    server.send_text(&token(&bob), room, "b1", "hello").await?;
    let leave = format!("/_matrix/client/v3/rooms/{room}/leave");
    server
        .request("POST", &leave, Some(&token(&bob)), Some(json!({})))
        .await?;
    // While Bob is away, which he may not see in this room's history.
    for topic in ["first", "while bob was away"] {
        server
            .request(
                "PUT",
                &state("m.room.topic"),
                Some(&token(&alice)),
                Some(json!({ "topic": topic })),
            )
            .await?;
    }
    bob.join_room_by_id(&room_id).await?;

    let sync = complement_tests::raw_sync(&server, &bob, None, 0).await?;
    let joined = &sync["rooms"]["join"][room];
    let topics: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(joined["timeline"]["events"].as_array().unwrap())
        .filter(|e| e["type"] == "m.room.topic")
        .collect();
    assert_eq!(
        topics.last().map(|e| &e["content"]["topic"]),
        Some(&json!("while bob was away")),
        "{joined}"
    );
    // The topic events themselves stay hidden from the timeline.
    assert!(
        !joined["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.topic"),
        "{joined}"
    );
    Ok(())
}

#[tokio::test]
async fn a_room_joined_since_the_last_sync_comes_with_the_history_one_may_see() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let mut rooms = Vec::new();
    // Shared history (public chat) and history for members only from their join on.
    for (name, visibility) in [("Open", "shared"), ("Closed", "joined")] {
        let mut request = create_room::v3::Request::new();
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
        request.name = Some(name.to_owned());
        let room_id = alice.create_room(request).await?.room_id().to_owned();
        let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.history_visibility/");
        let (status, body) = server
            .request(
                "PUT",
                &path,
                Some(&token(&alice)),
                Some(json!({ "history_visibility": visibility })),
            )
            .await?;
        anyhow::ensure!(status == 200, "{body}");
        for n in 0..3 {
            server
                .send_text(
                    &token(&alice),
                    room_id.as_str(),
                    &format!("{name}{n}"),
                    &format!("{name} {n}"),
                )
                .await?;
        }
        rooms.push(room_id);
    }
    let since = next_batch(&server, &bob).await?;
    for room_id in &rooms {
        bob.join_room_by_id(room_id).await?;
    }
    // As an initial sync would show them (Nheko shows nothing else until one scrolls).
    let sync = raw_sync(&server, &bob, Some(&since), 0).await?;
    let open = timeline(&sync, rooms[0].as_str());
    assert_eq!(bodies(&open), ["Open 0", "Open 1", "Open 2"], "{sync}");
    assert_eq!(open.last().unwrap()["type"], "m.room.member");
    let closed = timeline(&sync, rooms[1].as_str());
    assert!(bodies(&closed).is_empty(), "{sync}");
    assert_eq!(closed.last().unwrap()["state_key"], "@bob:localhost");
    // The state is there either way (name, members).
    for room_id in &rooms {
        let state = sync["rooms"]["join"][room_id.as_str()]["state"]["events"].to_string();
        assert!(
            state.contains("m.room.name")
                || timeline(&sync, room_id.as_str())
                    .iter()
                    .any(|e| e["type"] == "m.room.name"),
            "{sync}"
        );
    }
    Ok(())
}
