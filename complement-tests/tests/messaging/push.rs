//! Push notifications to a push gateway, and `/notifications`.

use std::time::Duration;

use complement_tests::{eventually, push_gateway::RecordingGateway, raw_sync};
use matrix_sdk::ruma::{
    api::client::push::{Pusher, PusherIds, PusherInit, PusherKind},
    push::{HttpPusherData, PushFormat},
};

use super::*;

/// A server that may reach a push gateway on this host, and counts a device as away
/// one second after its last sync.
async fn server() -> anyhow::Result<TestServer> {
    TestServer::start_with(
        "push = { gateway_ip_allow = [\"127.0.0.0/8\"], syncing_grace_secs = 1 }\n",
    )
    .await
}

/// Registers an HTTP pusher through matrix-sdk.
async fn set_pusher(
    client: &Client,
    gateway: &RecordingGateway,
    pushkey: &str,
    format: Option<PushFormat>,
) -> anyhow::Result<()> {
    let mut data = HttpPusherData::new(gateway.url());
    data.format = format;
    let pusher: Pusher = PusherInit {
        ids: PusherIds::new(pushkey.to_owned(), "org.example.app".to_owned()),
        kind: PusherKind::Http(data),
        app_display_name: "Example".to_owned(),
        device_display_name: "Phone".to_owned(),
        profile_tag: None,
        lang: "en".to_owned(),
    }
    .into();
    client.pusher().set(pusher, true).await?;
    Ok(())
}

/// Waits for the gateway to get a notification for `event_id`.
async fn pushed(gateway: &RecordingGateway, event_id: &str) -> anyhow::Result<Value> {
    eventually(&format!("a push for {event_id}"), async || {
        Ok(gateway.for_event(event_id).into_iter().next())
    })
    .await
}

#[tokio::test]
async fn a_dm_and_a_mention_reach_the_phone_while_the_app_is_away() -> anyhow::Result<()> {
    let server = server().await?;
    let gateway = RecordingGateway::start().await?;
    let (alice, bob, dm) = two_in_a_room(&server).await?;
    let carol = server.register("carol").await?;
    set_pusher(&bob, &gateway, "bob-phone", None).await?;

    // A message in a DM: notifies with a sound, content and names included.
    let hello = send(&server, &alice, &dm, "m.room.message", text("hello bob")).await?;
    let push = pushed(&gateway, &hello).await?;
    assert_eq!(push["room_id"], dm.as_str(), "{push}");
    assert_eq!(push["type"], "m.room.message");
    assert_eq!(push["sender"], "@alice:localhost");
    assert_eq!(push["content"]["body"], "hello bob");
    assert_eq!(push["prio"], "high");
    assert_eq!(push["counts"]["unread"], 1, "one room with unread messages");
    let device = &push["devices"][0];
    assert_eq!(device["pushkey"], "bob-phone");
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["tweaks"]["sound"], "default");
    assert!(
        device["data"].get("url").is_none(),
        "the url stays with the server"
    );

    // A group of three: a plain message does not notify, a mention does and highlights.
    let group = room_of_two(&alice, &bob).await?;
    let invite = format!("/_matrix/client/v3/rooms/{group}/invite");
    server
        .request(
            "POST",
            &invite,
            Some(&token(&alice)),
            Some(json!({ "user_id": "@carol:localhost" })),
        )
        .await?;
    carol.join_room_by_id(&group).await?;
    let plain = send(&server, &alice, &group, "m.room.message", text("lunch?")).await?;
    let mention = send(
        &server,
        &alice,
        &group,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "bob: lunch?",
                "m.mentions": { "user_ids": ["@bob:localhost"] } }),
    )
    .await?;
    let push = pushed(&gateway, &mention).await?;
    assert_eq!(push["devices"][0]["tweaks"]["highlight"], true, "{push}");
    assert_eq!(push["devices"][0]["tweaks"]["sound"], "default", "{push}");
    assert_eq!(push["prio"], "high");
    assert_eq!(
        push["counts"]["unread"], 2,
        "the DM and the group are unread"
    );
    // A plain message in a group notifies quietly (the spec's `.m.rule.message`).
    let push = pushed(&gateway, &plain).await?;
    assert_eq!(push["devices"][0]["tweaks"], json!({}), "{push}");
    assert_eq!(push["prio"], "low");

    // While Bob's phone syncs, it shows messages itself: nothing is pushed.
    let bob_token = token(&bob);
    let sync_server = server.base_url();
    let since = raw_sync(&server, &bob, None, 0).await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let long_poll = tokio::spawn(async move {
        // A filter that shows nothing, so the long-poll stays open through the message.
        let filter = "%7B%22room%22%3A%7B%22rooms%22%3A%5B%5D%7D%7D";
        let url = format!(
            "{sync_server}/_matrix/client/v3/sync?timeout=3000&since={since}&filter={filter}"
        );
        reqwest::Client::new()
            .get(url)
            .bearer_auth(bob_token)
            .send()
            .await
            .map(|response| response.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let while_syncing = send(&server, &alice, &dm, "m.room.message", text("you there?")).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        gateway.for_event(&while_syncing).is_empty(),
        "a device that syncs is not pushed"
    );
    long_poll.await??;
    // Away again (the grace second spent): the next message is pushed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = send(&server, &alice, &dm, "m.room.message", text("ok, later")).await?;
    pushed(&gateway, &after).await?;
    assert!(
        gateway.for_event(&while_syncing).is_empty(),
        "what the device saw while syncing is not pushed later either"
    );

    // Read messages are not pushed: Bob reads the DM, then a message already read by
    // the time delivery gets to it is skipped (the gateway is down meanwhile).
    gateway.fail_next(2);
    let read_before_push = send(&server, &alice, &dm, "m.room.message", text("read me")).await?;
    let receipt = format!("/_matrix/client/v3/rooms/{dm}/receipt/m.read/{read_before_push}");
    let (status, _) = server
        .request("POST", &receipt, Some(&token(&bob)), Some(json!({})))
        .await?;
    assert_eq!(status, 200);
    let next = send(&server, &alice, &dm, "m.room.message", text("new one")).await?;
    let push = pushed(&gateway, &next).await?;
    assert!(
        gateway.failed() >= 1,
        "the gateway failed first, and was retried"
    );
    assert_eq!(push["counts"]["unread"], 2);
    assert!(
        gateway.for_event(&read_before_push).is_empty(),
        "a message read before its push went out is not pushed"
    );
    Ok(())
}

#[tokio::test]
async fn event_id_only_pushers_rejected_keys_and_the_notifications_list() -> anyhow::Result<()> {
    let server = server().await?;
    let gateway = RecordingGateway::start().await?;
    let (alice, bob, dm) = two_in_a_room(&server).await?;
    set_pusher(&bob, &gateway, "ids-only", Some(PushFormat::EventIdOnly)).await?;

    let first = send(&server, &alice, &dm, "m.room.message", text("secret")).await?;
    let push = pushed(&gateway, &first).await?;
    assert_eq!(push["room_id"], dm.as_str());
    for hidden in ["content", "sender", "type", "sender_display_name"] {
        assert!(
            push.get(hidden).is_none(),
            "{hidden} sent with event_id_only: {push}"
        );
    }
    assert_eq!(push["counts"]["unread"], 1);

    // A push key the gateway rejects loses its pusher.
    gateway.reject("ids-only");
    let second = send(&server, &alice, &dm, "m.room.message", text("again")).await?;
    pushed(&gateway, &second).await?;
    let t = token(&bob);
    eventually("the rejected pusher removed", async || {
        let (_, body) = server
            .request("GET", "/_matrix/client/v3/pushers", Some(&t), None)
            .await?;
        Ok(body["pushers"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(()))
    })
    .await?;
    let third = send(&server, &alice, &dm, "m.room.message", text("anyone?")).await?;

    // `/notifications`: newest first, paged, `read` from the receipts, highlights only.
    let mention = send(
        &server,
        &alice,
        &dm,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "hey",
                "m.mentions": { "user_ids": ["@bob:localhost"] } }),
    )
    .await?;
    let (status, page) = server
        .request(
            "GET",
            "/_matrix/client/v3/notifications?limit=3",
            Some(&t),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mention.as_str(), third.as_str(), second.as_str()]);
    let first_entry = &page["notifications"][0];
    assert_eq!(first_entry["room_id"], dm.as_str());
    assert_eq!(first_entry["read"], false);
    assert!(first_entry["ts"].as_u64().is_some());
    assert!(
        first_entry["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["set_tweak"] == "highlight"),
        "{first_entry}"
    );
    let next = page["next_token"].as_str().expect("a next page").to_owned();
    let (_, rest) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/notifications?from={next}&limit=3"),
            Some(&t),
            None,
        )
        .await?;
    let rest_ids: Vec<&str> = rest["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    // Then the first message, and before it the invite into the room.
    assert_eq!(rest_ids.len(), 2, "{rest}");
    assert_eq!(rest_ids[0], first.as_str());
    assert_eq!(rest["notifications"][1]["event"]["type"], "m.room.member");
    assert_eq!(
        rest["notifications"][1]["event"]["content"]["membership"],
        "invite"
    );
    assert!(rest.get("next_token").is_none(), "{rest}");

    let receipt = format!("/_matrix/client/v3/rooms/{dm}/receipt/m.read/{third}");
    server
        .request("POST", &receipt, Some(&t), Some(json!({})))
        .await?;
    let (_, page) = server
        .request("GET", "/_matrix/client/v3/notifications", Some(&t), None)
        .await?;
    let read: Vec<bool> = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["read"].as_bool().unwrap())
        .collect();
    assert_eq!(read, [false, true, true, true, true]);
    let (_, highlights) = server
        .request(
            "GET",
            "/_matrix/client/v3/notifications?only=highlight",
            Some(&t),
            None,
        )
        .await?;
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(
        highlights["notifications"][0]["event"]["event_id"],
        mention.as_str()
    );

    // The counts in sync agree: one unread (the mention), highlighted.
    let sync = raw_sync(&server, &bob, None, 0).await?;
    assert_eq!(
        sync["rooms"]["join"][dm.as_str()]["unread_notifications"],
        json!({ "notification_count": 1, "highlight_count": 1 })
    );

    // Alice takes the mention back: it notifies no one any more.
    let redact = format!("/_matrix/client/v3/rooms/{dm}/redact/{mention}/take-back");
    let (status, body) = server
        .request("PUT", &redact, Some(&token(&alice)), Some(json!({})))
        .await?;
    assert_eq!(status, 200, "{body}");
    let (_, highlights) = server
        .request(
            "GET",
            "/_matrix/client/v3/notifications?only=highlight",
            Some(&t),
            None,
        )
        .await?;
    assert_eq!(highlights["notifications"], json!([]), "{highlights}");
    let sync = raw_sync(&server, &bob, None, 0).await?;
    assert_eq!(
        sync["rooms"]["join"][dm.as_str()]["unread_notifications"],
        json!({ "notification_count": 0, "highlight_count": 0 })
    );

    // A pusher's URL must be a push gateway's notify endpoint.
    let (status, body) = server
        .request(
            "POST",
            "/_matrix/client/v3/pushers/set",
            Some(&t),
            Some(json!({
                "pushkey": "k", "kind": "http", "app_id": "a", "app_display_name": "A",
                "device_display_name": "D", "lang": "en",
                "data": { "url": "http://127.0.0.1:1/somewhere/else" },
            })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM"))
    );
    Ok(())
}

/// The ids of a user's `/notifications`, newest first, and whether each highlights.
async fn listed(server: &TestServer, client: &Client) -> anyhow::Result<Vec<(String, bool)>> {
    let (status, body) = server
        .request(
            "GET",
            "/_matrix/client/v3/notifications",
            Some(&token(client)),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "/notifications answered {status}: {body}");
    Ok(body["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["event"]["type"] == "m.room.message")
        .map(|n| {
            let id = n["event"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let highlight = n["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["set_tweak"] == "highlight" && a["value"] != false);
            (id, highlight)
        })
        .collect())
}

/// A user's unread counts in a room, from a sync.
async fn unread(server: &TestServer, client: &Client, room: &OwnedRoomId) -> anyhow::Result<Value> {
    let sync = raw_sync(server, client, None, 0).await?;
    Ok(sync["rooms"]["join"][room.as_str()]["unread_notifications"].clone())
}

#[tokio::test]
async fn each_member_of_a_group_gets_their_own_notifications() -> anyhow::Result<()> {
    let server = server().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let carol = server.register("carol").await?;
    let dave = server.register("dave").await?;
    let (status, created) = server
        .request(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token(&alice)),
            Some(json!({ "preset": "public_chat", "name": "Group" })),
        )
        .await?;
    anyhow::ensure!(status == 200, "createRoom: {created}");
    let room = OwnedRoomId::try_from(created["room_id"].as_str().unwrap_or_default())?;
    bob.join_room_by_id(&room).await?;
    carol.join_room_by_id(&room).await?;
    // Carol mutes the room.
    let (status, body) = server
        .request(
            "PUT",
            &format!("/_matrix/client/v3/pushrules/global/room/{room}"),
            Some(&token(&carol)),
            Some(json!({ "actions": [] })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");

    let first = send(&server, &alice, &room, "m.room.message", text("hello all")).await?;
    let mention = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "carol, look",
                "m.mentions": { "user_ids": ["@carol:localhost"] } }),
    )
    .await?;
    dave.join_room_by_id(&room).await?;
    let third = send(&server, &alice, &room, "m.room.message", text("one more")).await?;

    // Bob gets every message; Carol, muted, only the one that mentions her (highlighted);
    // Dave only what was sent after he joined; Alice nothing of her own.
    let all = vec![
        (third.clone(), false),
        (mention.clone(), false),
        (first.clone(), false),
    ];
    assert_eq!(listed(&server, &bob).await?, all);
    assert_eq!(
        listed(&server, &carol).await?,
        vec![(mention.clone(), true)]
    );
    assert_eq!(listed(&server, &dave).await?, vec![(third.clone(), false)]);
    assert_eq!(listed(&server, &alice).await?, vec![]);
    assert_eq!(
        unread(&server, &bob, &room).await?,
        json!({ "notification_count": 3, "highlight_count": 0 })
    );
    assert_eq!(
        unread(&server, &carol, &room).await?,
        json!({ "notification_count": 1, "highlight_count": 1 })
    );
    assert_eq!(
        unread(&server, &dave, &room).await?,
        json!({ "notification_count": 1, "highlight_count": 0 })
    );

    // Bob leaves: what notified him while he was there stays listed, nothing after.
    bob.get_room(&room)
        .ok_or_else(|| anyhow::anyhow!("bob's room"))?
        .leave()
        .await?;
    let after = send(&server, &alice, &room, "m.room.message", text("bye bob")).await?;
    assert_eq!(listed(&server, &bob).await?, all);
    assert_eq!(
        listed(&server, &dave).await?,
        vec![(after, false), (third, false)]
    );
    Ok(())
}
