//! Sent, delivered, read: the sender sees the recipient's delivered receipt once the
//! recipient's device synced the message, then the read receipt; one delivered receipt
//! per room per sync, none again for what was delivered, none from a user who turned
//! them off.

use std::time::{Duration, Instant};

use complement_tests::{next_batch, raw_sync};

use super::*;

const DELIVERED: &str = "org.palisade.delivered";

/// The receipts of `kind` in a sync's room section: (event id, user) pairs.
fn receipts_in(sync: &Value, room_id: &OwnedRoomId, kind: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let ephemeral = &sync["rooms"]["join"][room_id.as_str()]["ephemeral"]["events"];
    for event in ephemeral.as_array().into_iter().flatten() {
        if event["type"] != "m.receipt" {
            continue;
        }
        for (event_id, types) in event["content"].as_object().into_iter().flatten() {
            for user in types[kind]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(u, _)| u)
            {
                found.push((event_id.clone(), user.clone()));
            }
        }
    }
    found
}

/// Long-polls `client`'s sync from `since` until a receipt of `kind` by `user` for
/// `event_id` arrives; returns the next token.
async fn sees_receipt(
    server: &TestServer,
    client: &Client,
    room_id: &OwnedRoomId,
    since: &str,
    (kind, user, event_id): (&str, &str, &str),
) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut since = since.to_owned();
    while started.elapsed() < Duration::from_secs(30) {
        let sync = raw_sync(server, client, Some(&since), 10_000).await?;
        since = sync["next_batch"].as_str().unwrap_or(&since).to_owned();
        if receipts_in(&sync, room_id, kind).contains(&(event_id.to_owned(), user.to_owned())) {
            return Ok(since);
        }
    }
    anyhow::bail!("no {kind} receipt by {user} for {event_id}")
}

#[tokio::test]
async fn the_sender_sees_delivered_then_read() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    let bob_since = next_batch(&server, &bob).await?;
    let alice_since = next_batch(&server, &alice).await?;
    let hello = send(&server, &alice, &room_id, "m.room.message", text("hello")).await?;

    // Bob's device syncs the message: Alice's long-poll wakes with "delivered".
    let bob_sync = raw_sync(&server, &bob, Some(&bob_since), 10_000).await?;
    let bob_since = bob_sync["next_batch"].as_str().unwrap().to_owned();
    let alice_since = sees_receipt(
        &server,
        &alice,
        &room_id,
        &alice_since,
        (DELIVERED, "@bob:localhost", &hello),
    )
    .await?;
    // Bob sees his own delivered receipt too; nothing is delivered for his own messages.
    let own = raw_sync(&server, &bob, Some(&bob_since), 2_000).await?;
    let bob_since = own["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(
        receipts_in(&own, &room_id, DELIVERED),
        [(hello.clone(), "@bob:localhost".to_owned())],
        "{own}"
    );

    // Syncing again with nothing new delivers nothing again.
    raw_sync(&server, &bob, Some(&bob_since), 0).await?;
    let quiet = raw_sync(&server, &alice, Some(&alice_since), 1_000).await?;
    assert!(
        receipts_in(&quiet, &room_id, DELIVERED).is_empty(),
        "{quiet}"
    );

    // Bob reads it: Alice sees "read".
    let alice_since = quiet["next_batch"].as_str().unwrap().to_owned();
    let (status, body) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{hello}"),
            Some(&token(&bob)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let alice_since = sees_receipt(
        &server,
        &alice,
        &room_id,
        &alice_since,
        ("m.read", "@bob:localhost", &hello),
    )
    .await?;

    // Bob turns delivered receipts off: his syncs deliver nothing any more.
    let (status, body) = server
        .request(
            "PUT",
            "/_matrix/client/v3/user/@bob:localhost/account_data/org.palisade.delivery_receipts",
            Some(&token(&bob)),
            Some(json!({ "enabled": false })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let bob_since = next_batch(&server, &bob).await?;
    send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        text("still there?"),
    )
    .await?;
    let bob_sync = raw_sync(&server, &bob, Some(&bob_since), 10_000).await?;
    assert!(
        bob_sync["rooms"]["join"][room_id.as_str()]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty()),
        "{bob_sync}"
    );
    let silent = raw_sync(&server, &alice, Some(&alice_since), 1_500).await?;
    assert!(
        receipts_in(&silent, &room_id, DELIVERED).is_empty(),
        "{silent}"
    );
    Ok(())
}
