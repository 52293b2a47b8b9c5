//! Messages, edits, typing, receipts and presence crossing servers, in order through
//! downtime, crashes and a partition.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_joined_by_alias_carries_messages_edits_typing_and_receipts_both_ways() -> Result<()>
{
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;

    the_join_brought_the_room_and_profiles(&pair).await?;

    // Messages both ways, each seen by the other's sync.
    pair.send(Side::A, "m.room.message", "a1", text("hello bob"))
        .await?;
    let from_alice = pair
        .wait_in_sync(Side::B, "timeline", |event| {
            event["content"]["body"] == "hello bob"
        })
        .await?;
    assert_eq!(from_alice["sender"], pair.alice_id());
    // Bob's device got it: Alice's server hears that it was delivered.
    let hello_bob = from_alice["event_id"]
        .as_str()
        .context("an event id")?
        .to_owned();
    let bob_id = pair.bob_id();
    pair.wait_in_sync(Side::A, "ephemeral", |event| {
        event["type"] == "m.receipt"
            && event["content"][&hello_bob]["org.palisade.delivered"][&bob_id].is_object()
    })
    .await?;
    let bobs = pair
        .send(Side::B, "m.room.message", "b1", text("hello alice"))
        .await?;
    pair.wait_in_sync(Side::A, "timeline", |event| {
        event["content"]["body"] == "hello alice"
    })
    .await?;

    // An edit keeps its relation across the servers.
    pair.send(
        Side::B,
        "m.room.message",
        "b2",
        json!({
            "msgtype": "m.text",
            "body": "* hello, alice",
            "m.new_content": { "msgtype": "m.text", "body": "hello, alice" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": bobs },
        }),
    )
    .await?;
    let edit = pair
        .wait_in_sync(Side::A, "timeline", |event| {
            event["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .await?;
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], bobs.as_str());
    assert_eq!(edit["content"]["m.new_content"]["body"], "hello, alice");

    // Typing, from B to A.
    let (status, _) = pair
        .b
        .request(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                pair.room_id,
                pair.bob_id()
            ),
            Some(&pair.token(Side::B)),
            Some(json!({ "typing": true, "timeout": 20000 })),
        )
        .await?;
    assert_eq!(status, 200);
    let bob_id = pair.bob_id();
    pair.wait_in_sync(Side::A, "ephemeral", |event| {
        event["type"] == "m.typing"
            && event["content"]["user_ids"]
                .as_array()
                .is_some_and(|users| users.iter().any(|u| u == bob_id.as_str()))
    })
    .await?;

    // A read receipt, from A to B.
    let (status, _) = pair
        .a
        .request(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{bobs}",
                pair.room_id
            ),
            Some(&pair.token(Side::A)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200);
    let alice_id = pair.alice_id();
    pair.wait_in_sync(Side::B, "ephemeral", |event| {
        event["type"] == "m.receipt" && event["content"][&bobs]["m.read"][&alice_id].is_object()
    })
    .await?;
    Ok(())
}

/// What Bob's server learnt with the join (the room's name and both members), and
/// Alice's profile, asked of her server by Bob's.
async fn the_join_brought_the_room_and_profiles(pair: &Pair) -> Result<()> {
    let name = pair
        .wait_for_state(Side::B, "m.room.name", "", |_| true)
        .await?;
    assert_eq!(name["name"], "Lobby");
    let (_, members) = pair
        .b
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{}/joined_members", pair.room_id),
            Some(&pair.token(Side::B)),
            None,
        )
        .await?;
    assert!(members["joined"][pair.alice_id()].is_object(), "{members}");
    assert!(members["joined"][pair.bob_id()].is_object(), "{members}");

    // Alice's profile, asked of her server by Bob's.
    let (status, profile) = pair
        .b
        .request(
            "GET",
            &format!("/_matrix/client/v3/profile/{}", pair.alice_id()),
            Some(&pair.token(Side::B)),
            None,
        )
        .await?;
    assert_eq!(
        (status, &profile["displayname"]),
        (200, &json!("alice")),
        "{profile}"
    );
    let (status, name) = pair
        .b
        .request(
            "GET",
            &format!("/_matrix/client/v3/profile/{}/displayname", pair.alice_id()),
            Some(&pair.token(Side::B)),
            None,
        )
        .await?;
    assert_eq!(
        (status, &name["displayname"]),
        (200, &json!("alice")),
        "{name}"
    );

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_was_down_gets_every_message_in_order() -> Result<()> {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca).await?;
    pair.b.kill9()?;
    let mut sent = Vec::new();
    for n in 0..500 {
        let body = format!("while B was down {n}");
        pair.send(Side::A, "m.room.message", &format!("down{n}"), text(&body))
            .await?;
        sent.push(body);
    }
    pair.b.restart().await?;
    // Bob speaks first: Alice's server hears from B and stops backing off.
    pair.send(Side::B, "m.room.message", "back", text("I am back"))
        .await?;
    let started = Instant::now();
    pair.wait_for_bodies(Side::B, &sent).await?;
    eprintln!("500 queued messages delivered in {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_while_sending_loses_nothing_acknowledged() -> Result<()> {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca).await?;
    // Alice sends while her server is killed part-way; what it acknowledged must reach
    // Bob after it restarts.
    let mut acknowledged = Vec::new();
    for n in 0..150 {
        let body = format!("before the crash {n}");
        pair.send(Side::A, "m.room.message", &format!("c{n}"), text(&body))
            .await?;
        acknowledged.push(body);
    }
    pair.a.kill9()?;
    pair.a.restart().await?;
    // And the receiving side crashes with transactions in flight.
    for n in 150..300 {
        let body = format!("around the receiver's crash {n}");
        pair.send(Side::A, "m.room.message", &format!("c{n}"), text(&body))
            .await?;
        acknowledged.push(body);
        if n == 200 {
            pair.b.kill9()?;
            pair.b.restart().await?;
            pair.send(Side::B, "m.room.message", "up", text("up again"))
                .await?;
        }
    }
    pair.wait_for_bodies(Side::B, &acknowledged).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_changed_on_both_sides_of_a_partition_converges() -> Result<()> {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca).await?;
    // Bob may change the topic too.
    let bob_id = pair.bob_id();
    let mut levels = pair
        .state(Side::A, "m.room.power_levels", "")
        .await?
        .context("no power levels")?;
    levels["users"][&bob_id] = json!(100);
    pair.put_state(Side::A, "m.room.power_levels", "", levels)
        .await?;
    pair.wait_for_state(Side::B, "m.room.power_levels", "", |c| {
        c["users"][&bob_id] == 100
    })
    .await?;

    // The partition: each side changes the topic while the other is down.
    pair.a.kill9()?;
    pair.put_state(Side::B, "m.room.topic", "", json!({ "topic": "from B" }))
        .await?;
    pair.b.kill9()?;
    pair.a.restart().await?;
    pair.put_state(Side::A, "m.room.topic", "", json!({ "topic": "from A" }))
        .await?;
    pair.b.restart().await?;
    pair.send(
        Side::B,
        "m.room.message",
        "m1",
        text("after the partition, from B"),
    )
    .await?;
    pair.send(
        Side::A,
        "m.room.message",
        "m2",
        text("after the partition, from A"),
    )
    .await?;
    pair.wait_for_bodies(Side::A, &["after the partition, from B".to_owned()])
        .await?;
    pair.wait_for_bodies(Side::B, &["after the partition, from A".to_owned()])
        .await?;

    // Both servers resolved the fork to the same state.
    let mut last = (None, None);
    eventually("both servers never agreed on the topic", async || {
        let on_a = pair.state(Side::A, "m.room.topic", "").await?;
        let on_b = pair.state(Side::B, "m.room.topic", "").await?;
        let agreed = on_a.is_some() && on_a == on_b;
        last = (on_a, on_b);
        Ok(agreed.then_some(()))
    })
    .await
    .with_context(|| {
        format!(
            "A has {:?}, B {:?}\n--- A's log\n{}\n--- B's log\n{}",
            last.0,
            last.1,
            pair.a.log(),
            pair.b.log()
        )
    })?;
    let full = |side: Side| {
        let pair = &pair;
        async move {
            let (status, state) = pair
                .server(side)
                .request(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{}/state", pair.room_id),
                    Some(&pair.token(side)),
                    None,
                )
                .await?;
            ensure!(status == 200, "state answered {status}");
            let mut ids: Vec<String> = state
                .as_array()
                .context("state is a list")?
                .iter()
                .filter_map(|event| event["event_id"].as_str().map(str::to_owned))
                .collect();
            ids.sort();
            Ok::<_, anyhow::Error>(ids)
        }
    };
    assert_eq!(full(Side::A).await?, full(Side::B).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_crosses_servers() -> Result<()> {
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;
    let bob_id = pair.bob_id();
    let (status, body) = pair
        .b
        .request(
            "PUT",
            &format!("/_matrix/client/v3/presence/{bob_id}/status"),
            Some(&pair.token(Side::B)),
            Some(json!({ "presence": "online", "status_msg": "at lunch" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // Alice's sync shows it, and her server answers for Bob.
    let mut since: Option<String> = None;
    eventually("Bob's presence never reached Alice", async || {
        let sync = complement_tests::raw_sync(&pair.a, &pair.alice, since.as_deref(), 1000).await?;
        let seen = sync["presence"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|event| {
                event["sender"] == bob_id.as_str()
                    && event["content"]["status_msg"] == "at lunch"
                    && event["content"]["presence"] == "online"
            })
        });
        since = sync["next_batch"].as_str().map(str::to_owned);
        Ok(seen.then_some(()))
    })
    .await?;
    let (status, body) = pair
        .a
        .request(
            "GET",
            &format!("/_matrix/client/v3/presence/{bob_id}/status"),
            Some(&pair.token(Side::A)),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status_msg"], "at lunch");
    assert!(body["last_active_ago"].as_u64().is_some(), "{body}");
    Ok(())
}
