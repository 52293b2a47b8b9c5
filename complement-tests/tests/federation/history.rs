//! History over federation: a user who joins a room on another server and scrolls back
//! sees what was said before they joined, back to the room's creation. Their server
//! fetches it from the room's other server on demand (`/backfill`), checks it like any
//! PDU, orders it below the join, and keeps it: scrolling again needs no other server.

use matrix_sdk::{config::SyncSettings, room::MessagesOptions};

use super::*;

/// Pages `room` back to its start with matrix-sdk, `limit` events a page; returns the
/// events, newest first.
async fn scroll_back(room: &matrix_sdk::Room, limit: u32) -> Result<Vec<Value>> {
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut options = MessagesOptions::backward().from(from.as_deref());
        options.limit = limit.into();
        let page = room.messages(options).await?;
        for event in &page.chunk {
            seen.push(event.raw().deserialize_as::<Value>()?);
        }
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => return Ok(seen),
        }
    }
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_joiner_scrolls_back_to_the_rooms_creation() -> Result<()> {
    const EARLIER: usize = 40;
    let ca = TestCa::new();
    let (mut a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let mut request = create_room::v3::Request::new();
    request.room_alias_name = Some("history".to_owned());
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    for n in 0..EARLIER {
        a.send_text(
            &token(&alice),
            room_id.as_str(),
            &format!("t{n}"),
            &format!("before {n}"),
        )
        .await?;
    }
    let bob = b.register("bob").await?;
    let alias = format!("#history:{}", a.server_name());
    bob.join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias.as_str())?, &[])
        .await?;
    bob.sync_once(SyncSettings::default()).await?;
    let room = bob.get_room(&room_id).context("bob's room")?;

    let seen = scroll_back(&room, 15).await?;
    let expected: Vec<String> = (0..EARLIER).rev().map(|n| format!("before {n}")).collect();
    assert_eq!(bodies(&seen), expected);
    // Below the join, in order, down to the creation.
    let bob_id = format!("@bob:{}", b.server_name());
    let join_at = seen
        .iter()
        .position(|e| e["type"] == "m.room.member" && e["state_key"] == bob_id.as_str())
        .context("bob's join is not in the history")?;
    let first_message = seen
        .iter()
        .position(|e| e["type"] == "m.room.message")
        .unwrap();
    assert!(
        join_at < first_message,
        "the earlier messages came above the join"
    );
    assert_eq!(
        seen.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create"))
    );

    // Kept: with A gone, the history is still there.
    a.kill9()?;
    let again = scroll_back(&room, 25).await?;
    assert_eq!(bodies(&again), expected);
    Ok(())
}

/// A room hosted by an older server (the harness's fake server: `/v1/` `send_join`
/// only): the join falls back to `/v1/`; scrolling back gets its history, less an event
/// the auth rules refuse (from someone never in the room), which is kept as rejected,
/// never served and not asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_from_an_older_server_is_checked_and_a_refused_event_never_served() -> Result<()> {
    use complement_tests::fake_server::{FakeServer, encode};
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let fake = FakeServer::start(&ca).await?;
    let host = fake.user_id("host");
    let room_id = fake.host_room(&host)?;
    let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
    fake.post_in_hosted(&room_id, &host, "m.room.message", text("first"))?;
    let refused = fake.post_in_hosted(
        &room_id,
        &fake.user_id("stranger"),
        "m.room.message",
        text("never a member"),
    )?;
    fake.post_in_hosted(&room_id, &host, "m.room.message", text("second"))?;

    let alice = a.register("alice").await?;
    let path = format!(
        "/_matrix/client/v3/join/{}?server_name={}",
        encode(&room_id),
        encode(fake.server_name())
    );
    let (status, body) = a
        .request("POST", &path, Some(&token(&alice)), Some(json!({})))
        .await?;
    assert_eq!(status, 200, "{body}\n{}", a.log());
    let asked = fake.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.starts_with("PUT /_matrix/federation/v2/send_join/")),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|r| r.starts_with("PUT /_matrix/federation/v1/send_join/")),
        "{asked:?}"
    );

    alice.sync_once(SyncSettings::default()).await?;
    let room = alice
        .get_room(<&matrix_sdk::ruma::RoomId>::try_from(room_id.as_str())?)
        .context("alice's room")?;
    let backfills = || {
        fake.requests()
            .iter()
            .filter(|r| r.contains("/backfill/"))
            .count()
    };
    let seen = scroll_back(&room, 10).await?;
    assert_eq!(bodies(&seen), vec!["second", "first"]);
    assert_eq!(
        seen.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create"))
    );
    let path = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        encode(&room_id),
        encode(&refused)
    );
    let (status, _) = a.request("GET", &path, Some(&token(&alice)), None).await?;
    assert_eq!(status, 404, "the refused event is served");

    // Everything is kept: scrolling again asks the older server for nothing.
    let asked_before = backfills();
    assert!(asked_before > 0);
    assert_eq!(
        bodies(&scroll_back(&room, 10).await?),
        vec!["second", "first"]
    );
    assert_eq!(backfills(), asked_before);
    Ok(())
}
