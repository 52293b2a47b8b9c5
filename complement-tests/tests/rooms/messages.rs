//! Messages between members: order, long-polls, edits and redactions, typing and
//! receipts, rate limits.

use matrix_sdk::{config::SyncSettings, ruma::api::error::ErrorKind};

use super::*;

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
    let since = next_batch(&server, &bob).await?;

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
    let since = next_batch(&server, &bob).await?;
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
async fn sending_is_rate_limited_but_retries_of_a_transaction_are_not() -> anyhow::Result<()> {
    let limits = "[global.rate_limits.login]\nper_second = 100.0\nburst = 100\n[global.rate_limits.registration]\nper_second = 100.0\nburst = 100\n[global.rate_limits.message]\nper_second = 0.5\nburst = 3";
    let server = TestServer::start_with(limits).await?;
    let alice = server.register("alice").await?;
    // createRoom takes one token of the bucket, the first send two more.
    let room_id = room_alone(&alice).await?;
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
async fn typing_and_directory_requests_may_leave_out_optional_fields() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let since = next_batch(&server, &bob).await?;

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

#[tokio::test]
async fn an_event_over_the_size_limit_is_refused_before_it_is_stored() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let room_id = room_alone(&alice).await?;
    alice.sync_once(SyncSettings::default()).await?;
    let room = alice.get_room(&room_id).unwrap();
    // Over the limit as content alone, and over it only once hashed and signed.
    for size in [70_000, 65_300] {
        let refused = room
            .send(RoomMessageEventContent::text_plain("x".repeat(size)))
            .await
            .expect_err("an oversized message was sent");
        let error = refused.as_client_api_error().expect("a Matrix error");
        assert_eq!(error.status_code.as_u16(), 413, "{size} bytes: {error:?}");
        assert_eq!(
            error.error_kind(),
            Some(&ErrorKind::TooLarge),
            "{size} bytes"
        );
    }
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/org.example.big/");
    let content = json!({ "blob": "y".repeat(66_000) });
    let (status, body) = server
        .request("PUT", &path, Some(&token(&alice)), Some(content))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (413, Some("M_TOO_LARGE")),
        "{body}"
    );

    // Nothing of them was stored; an ordinary message still goes through.
    room.send(RoomMessageEventContent::text_plain("small"))
        .await?;
    let history = complement_tests::all_messages(&server, &token(&alice), room_id.as_str()).await?;
    assert!(history.iter().all(|e| e.to_string().len() < 60_000));
    assert_eq!(
        history
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .count(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_redaction_naming_an_event_of_another_room_changes_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let alices = room_alone(&alice).await?;
    let message = server
        .send_text(&token(&alice), alices.as_str(), "m1", "mine")
        .await?;
    let bobs = room_alone(&bob).await?;
    let path = format!("/_matrix/client/v3/rooms/{bobs}/redact/{message}/r1");
    server
        .request("PUT", &path, Some(&token(&bob)), Some(json!({})))
        .await?;
    let path = format!("/_matrix/client/v3/rooms/{alices}/event/{message}");
    let (status, event) = server
        .request("GET", &path, Some(&token(&alice)), None)
        .await?;
    assert_eq!(
        (status, event["content"]["body"].as_str()),
        (200, Some("mine")),
        "{event}"
    );
    assert!(
        event["unsigned"].get("redacted_because").is_none(),
        "{event}"
    );
    Ok(())
}

#[tokio::test]
async fn private_receipts_stay_with_their_owner_and_threaded_ones_keep_their_thread()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    // Clients send these only when the server lists the flags.
    let (_, versions) = server
        .request("GET", "/_matrix/client/versions", None, None)
        .await?;
    for flag in ["org.matrix.msc2285.stable", "org.matrix.msc3771"] {
        assert_eq!(
            versions["unstable_features"][flag], true,
            "{flag}: {versions}"
        );
    }
    let root = server
        .send_text(&token(&bob), room_id.as_str(), "t1", "thread root")
        .await?;
    let since_alice = next_batch(&server, &alice).await?;
    let since_bob = next_batch(&server, &bob).await?;
    let room = alice.get_room(&room_id).unwrap();
    let root_id: matrix_sdk::ruma::OwnedEventId = root.clone().try_into()?;
    room.send_single_receipt(
        ReceiptType::ReadPrivate,
        ReceiptThread::Unthreaded,
        root_id.clone(),
    )
    .await?;
    room.send_single_receipt(
        ReceiptType::Read,
        ReceiptThread::Thread(root_id.clone()),
        root_id.clone(),
    )
    .await?;
    // Alice's own sync has her private receipt; Bob's has only the threaded public one.
    let own = raw_sync(&server, &alice, Some(&since_alice), 2000).await?;
    let own_receipts = own["rooms"]["join"][room_id.as_str()]["ephemeral"].to_string();
    assert!(own_receipts.contains("m.read.private"), "{own}");
    let theirs = raw_sync(&server, &bob, Some(&since_bob), 2000).await?;
    let events = theirs["rooms"]["join"][room_id.as_str()]["ephemeral"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let receipt = events
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("a receipt");
    assert!(!receipt.to_string().contains("m.read.private"), "{receipt}");
    assert_eq!(
        receipt["content"][root.as_str()]["m.read"]["@alice:localhost"]["thread_id"],
        root.as_str(),
        "{receipt}"
    );
    Ok(())
}

#[tokio::test]
async fn a_sender_allowed_before_is_refused_once_the_rooms_state_says_otherwise()
-> anyhow::Result<()> {
    // Bob's messages pass the authorisation rules once; the next state must still
    // decide the next ones.
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
    let (alice_token, bob_token) = (token(&alice), token(&bob));
    let send = |who: &'static str, t: String, n: u32| {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{who}{n}");
        let server = &server;
        async move {
            let (status, body) = server
                .request(
                    "PUT",
                    &path,
                    Some(&t),
                    Some(json!({ "msgtype": "m.text", "body": format!("{who} {n}") })),
                )
                .await?;
            anyhow::Ok((status, body["errcode"].as_str().map(str::to_owned)))
        }
    };
    let levels_path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/");
    let (status, mut levels) = server
        .request("GET", &levels_path, Some(&alice_token), None)
        .await?;
    assert_eq!(status, 200);
    for n in 0..3 {
        assert_eq!(send("bob", bob_token.clone(), n).await?, (200, None));
    }

    levels["events"]["m.room.message"] = json!(50);
    let (status, _) = server
        .request(
            "PUT",
            &levels_path,
            Some(&alice_token),
            Some(levels.clone()),
        )
        .await?;
    assert_eq!(status, 200);
    let forbidden = (403, Some("M_FORBIDDEN".to_owned()));
    assert_eq!(send("bob", bob_token.clone(), 3).await?, forbidden);
    assert_eq!(send("alice", alice_token.clone(), 0).await?, (200, None));

    levels["events"]["m.room.message"] = json!(0);
    let (status, _) = server
        .request("PUT", &levels_path, Some(&alice_token), Some(levels))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(send("bob", bob_token.clone(), 4).await?, (200, None));

    let (status, _) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/kick"),
            Some(&alice_token),
            Some(json!({ "user_id": "@bob:localhost" })),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(send("bob", bob_token.clone(), 5).await?, forbidden);

    let sync = raw_sync(&server, &alice, None, 0).await?;
    let bodies = bodies(&timeline(&sync, room_id.as_str()));
    for refused in ["bob 3", "bob 5"] {
        assert!(!bodies.iter().any(|b| b == refused), "{refused} was stored");
    }
    Ok(())
}
