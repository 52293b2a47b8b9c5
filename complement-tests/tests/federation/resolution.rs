//! A remote event that forks the room's state is resolved against the local branch with
//! state resolution v2 as it arrives. The fake server plays the remote side, so the fork
//! is exact: Alice changes the topic on A, and Mallory's topic change arrives afterwards
//! built on the event before Alice's. Both are authorised by the same power levels, so
//! the later `origin_server_ts` wins, on A as on every server that sees both.

use complement_tests::fake_server::FakeServer;

use super::*;

/// The room's current topic as Alice reads it on `server`.
async fn topic(server: &TestServer, token: &str, room_id: &str) -> Result<Value> {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/");
    let (status, content) = server.request("GET", &path, Some(token), None).await?;
    ensure!(status == 200, "the topic answered {status}: {content}");
    Ok(content["topic"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_fork_arriving_late_is_resolved_with_the_event_itself() -> Result<()> {
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let alice = a.register("alice").await?;
    let alice_token = token(&alice);
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let fake = FakeServer::start(&ca).await?;
    let mallory = fake.user_id("mallory");
    let mut room = fake
        .join(a.server_name(), room_id.as_str(), &mallory)
        .await?;

    // Mallory may change the topic; the fake server learns of the new power levels.
    let levels_path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/");
    let (status, mut levels) = a
        .request("GET", &levels_path, Some(&alice_token), None)
        .await?;
    ensure!(status == 200, "power levels answered {status}");
    levels["users"][&mallory] = json!(100);
    let (status, body) = a
        .request("PUT", &levels_path, Some(&alice_token), Some(levels))
        .await?;
    ensure!(status == 200, "power levels not set: {body}");
    let levels_id = body["event_id"].as_str().context("no event id")?.to_owned();
    let (status, levels_pdu) = fake.get_event(a.server_name(), &levels_id).await?;
    ensure!(status == 200, "A did not serve its power levels: {status}");
    room.advance(&levels_id, &levels_pdu);

    // Alice's topic, then Mallory's on the fork point, stamped later.
    let topic_path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/");
    let (status, body) = a
        .request(
            "PUT",
            &topic_path,
            Some(&alice_token),
            Some(json!({ "topic": "from Alice" })),
        )
        .await?;
    ensure!(status == 200, "Alice's topic not set: {body}");
    let mut event = room.event(
        &mallory,
        "m.room.topic",
        Some(""),
        json!({ "topic": "from Mallory" }),
    );
    event["origin_server_ts"] = json!(event["origin_server_ts"].as_u64().unwrap_or(0) + 1000);
    let (event_id, pdu) = fake.sign_event(&room.version, event)?;
    let (status, body) = fake
        .send_transaction(a.server_name(), std::slice::from_ref(&pdu), &[])
        .await?;
    ensure!(status == 200, "the transaction answered {status}: {body}");
    ensure!(
        body["pdus"][&event_id].get("error").is_none(),
        "A refused Mallory's topic: {body}"
    );

    assert_eq!(
        topic(&a, &alice_token, room_id.as_str()).await?,
        "from Mallory",
        "the fork was resolved without the event that made it"
    );
    // Alice's next event builds on the resolved state, and it stays.
    a.send_text(&alice_token, room_id.as_str(), "m1", "after the fork")
        .await?;
    assert_eq!(
        topic(&a, &alice_token, room_id.as_str()).await?,
        "from Mallory"
    );
    Ok(())
}
