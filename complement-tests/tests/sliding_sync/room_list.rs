//! The room list of a user in 50 rooms, as Element X's stack shows it.

use anyhow::{Context, Result, ensure};
use complement_tests::{TestServer, eventually, token};
use matrix_sdk::{
    RoomState,
    ruma::{
        OwnedEventId, RoomId,
        events::receipt::{ReceiptThread, ReceiptType},
    },
};
use serde_json::json;

use super::{Shown, create_room, join, start_sync};

const ROOMS: usize = 50;

#[tokio::test]
async fn fifty_rooms_listed_by_activity_with_names_and_unread_counts() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let (alice_token, bob_token) = (token(&alice), token(&bob));
    let alice_id = alice.user_id().context("alice")?.to_string();

    // Bob's 50 rooms with Alice in them; each gets a message in turn (room 7 three), so
    // the most recent activity is room 49's and the oldest room 0's.
    let mut rooms = Vec::new();
    for index in 0..ROOMS {
        let name = format!("Room {index:02}");
        let room_id = create_room(&server, &bob_token, &name, &[&alice_id]).await?;
        join(&server, &alice_token, &room_id).await?;
        let messages = if index == 7 { 3 } else { 1 };
        for n in 0..messages {
            server
                .send_text(
                    &bob_token,
                    &room_id,
                    &format!("m{index}-{n}"),
                    &format!("hello {n}"),
                )
                .await?;
        }
        rooms.push(room_id);
    }

    let service = start_sync(&alice).await?;
    let shown = Shown::of(&service).await?;
    let expected: Vec<String> = (0..ROOMS).rev().map(|i| format!("Room {i:02}")).collect();
    eventually("the 50 rooms listed, most recent first", async || {
        Ok((shown.names() == expected).then_some(()))
    })
    .await
    .with_context(|| format!("shown: {:?}", shown.names()))?;
    for entry in shown.now() {
        let wanted = if entry.name == "Room 07" { 3 } else { 1 };
        ensure!(
            entry.notifications == wanted,
            "{} shows {} unread, not {wanted}",
            entry.name,
            entry.notifications
        );
        ensure!(
            entry.state == RoomState::Joined,
            "{} is {:?}",
            entry.name,
            entry.state
        );
    }

    // A new message moves its room to the top.
    server
        .send_text(&bob_token, &rooms[0], "again", "back on top")
        .await?;
    eventually("room 0 moved to the top with 2 unread", async || {
        let now = shown.now();
        Ok((now
            .first()
            .is_some_and(|first| first.name == "Room 00" && first.notifications == 2))
        .then_some(()))
    })
    .await?;

    // A read receipt of Alice's clears the count.
    let last = last_event(&server, &alice_token, &rooms[0]).await?;
    read_receipt(&server, &alice_token, &rooms[0], last.as_str()).await?;
    eventually("room 0's count cleared by the receipt", async || {
        Ok(shown
            .find(&rooms[0])
            .is_some_and(|entry| entry.notifications == 0)
            .then_some(()))
    })
    .await?;

    // An invite appears, on top, and is accepted.
    let invited = create_room(&server, &bob_token, "Invitation", &[&alice_id]).await?;
    eventually("the invite listed first", async || {
        let now = shown.now();
        Ok(now
            .first()
            .is_some_and(|first| first.room_id == invited && first.state == RoomState::Invited)
            .then_some(()))
    })
    .await
    .with_context(|| format!("shown: {:?}", shown.now().first()))?;
    alice
        .join_room_by_id(<&RoomId>::try_from(invited.as_str())?)
        .await?;
    eventually("the invitation joined", async || {
        Ok(shown
            .find(&invited)
            .is_some_and(|entry| entry.state == RoomState::Joined && entry.name == "Invitation")
            .then_some(()))
    })
    .await?;
    ensure!(shown.now().len() == ROOMS + 1);

    // Typing and receipts of Bob's reach Alice's client.
    let room = alice
        .get_room(<&RoomId>::try_from(rooms[0].as_str())?)
        .context("alice has room 0")?;
    let (_guard, mut typing) = room.subscribe_to_typing_notifications();
    let (status, _) = server
        .request(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                rooms[0],
                bob.user_id().context("bob")?
            ),
            Some(&bob_token),
            Some(json!({ "typing": true, "timeout": 30000 })),
        )
        .await?;
    ensure!(status == 200);
    let typists = tokio::time::timeout(complement_tests::PATIENCE, async {
        loop {
            let users = typing.recv().await?;
            if !users.is_empty() {
                return anyhow::Ok(users);
            }
        }
    })
    .await??;
    ensure!(
        typists
            .iter()
            .map(|u| u.as_str())
            .eq([bob.user_id().context("bob")?.as_str()])
    );

    read_receipt(&server, &bob_token, &rooms[0], last.as_str()).await?;
    let bob_id = bob.user_id().context("bob")?.to_owned();
    eventually("Bob's receipt known to Alice's client", async || {
        let receipt = room
            .load_user_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, &bob_id)
            .await?;
        Ok(receipt
            .filter(|(event_id, _)| event_id.as_str() == last.as_str())
            .map(|_| ()))
    })
    .await?;
    service.stop().await;
    Ok(())
}

/// A read receipt, by the raw API.
async fn read_receipt(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_id: &str,
) -> Result<()> {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{event_id}");
    let (status, body) = server
        .request("POST", &path, Some(token), Some(json!({})))
        .await?;
    ensure!(status == 200, "receipt answered {status}: {body}");
    Ok(())
}

/// The latest event of a room, by the raw API.
async fn last_event(server: &TestServer, token: &str, room_id: &str) -> Result<OwnedEventId> {
    let (status, body) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=1"),
            Some(token),
            None,
        )
        .await?;
    ensure!(status == 200, "messages answered {status}");
    Ok(OwnedEventId::try_from(
        body["chunk"][0]["event_id"].as_str().context("an event")?,
    )?)
}
