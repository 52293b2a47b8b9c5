//! End-to-end encryption between two matrix-sdk clients that sync only through sliding
//! sync: device keys and one-time key counts come from the e2ee extension, room keys as
//! to-device messages from the to_device extension.

use anyhow::{Context, Result, ensure};
use complement_tests::{TestServer, eventually, token};
use matrix_sdk::{
    Client,
    ruma::{EventId, RoomId, events::room::message::RoomMessageEventContent},
};
use serde_json::{Value, json};

use super::{join, start_sync};

#[tokio::test]
async fn encrypted_messages_decrypt_both_ways() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let alice_service = start_sync(&alice).await?;
    let bob_service = start_sync(&bob).await?;

    let alice_id = alice.user_id().context("alice")?.to_string();
    let (status, body) = server
        .request(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token(&bob)),
            Some(json!({
                "name": "Secrets",
                "invite": [alice_id],
                "initial_state": [{
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": { "algorithm": "m.megolm.v1.aes-sha2" },
                }],
            })),
        )
        .await?;
    ensure!(status == 200, "createRoom answered {status}: {body}");
    let room_id = body["room_id"].as_str().context("room id")?.to_owned();
    join(&server, &token(&alice), &room_id).await?;

    let sent = send_when_synced(&bob, &room_id, "for Alice's eyes only").await?;
    ensure!(
        decrypted_by(&alice, &room_id, &sent).await? == "for Alice's eyes only",
        "Alice read something else"
    );
    let reply = send_when_synced(&alice, &room_id, "and Bob's").await?;
    ensure!(decrypted_by(&bob, &room_id, &reply).await? == "and Bob's");

    alice_service.stop().await;
    bob_service.stop().await;
    Ok(())
}

/// Sends an encrypted message once the client's sync knows the room (joined, with its
/// encryption and both members).
async fn send_when_synced(client: &Client, room_id: &str, body: &str) -> Result<String> {
    let room_id = <&RoomId>::try_from(room_id)?;
    let room = eventually(
        "the room synced, encrypted, with both members",
        async || {
            let Some(room) = client.get_room(room_id) else {
                return Ok(None);
            };
            let ready = room.latest_encryption_state().await?.is_encrypted()
                && room.joined_members_count() == 2;
            Ok(ready.then_some(room))
        },
    )
    .await?;
    let response = room.send(RoomMessageEventContent::text_plain(body)).await?;
    Ok(response.response.event_id.to_string())
}

/// The body of an event once `client` can decrypt it (the room key arrives as a
/// to-device message through sliding sync).
async fn decrypted_by(client: &Client, room_id: &str, event_id: &str) -> Result<String> {
    let room_id = <&RoomId>::try_from(room_id)?;
    let event_id = <&EventId>::try_from(event_id)?;
    eventually("the message decrypted", async || {
        let Some(room) = client.get_room(room_id) else {
            return Ok(None);
        };
        let event = room.event(event_id, None).await?;
        if event.encryption_info().is_none() {
            return Ok(None);
        }
        let value: Value = event.raw().deserialize_as()?;
        Ok(value["content"]["body"].as_str().map(str::to_owned))
    })
    .await
}
