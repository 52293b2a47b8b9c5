//! A client's connection across a server restart (it resumes where it was) and after its
//! position is gone (`M_UNKNOWN_POS`: it starts over and goes on).

use anyhow::{Context, Result, ensure};
use complement_tests::{TestServer, eventually, token};
use serde_json::json;

use super::{Shown, create_room, join, start_sync};

/// What the server logs when a client names a position it does not know.
const UNKNOWN_POS_LOG: &str = "sliding sync position unknown";

#[tokio::test]
async fn resumes_after_a_restart_and_starts_over_after_unknown_pos() -> Result<()> {
    let mut server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let (alice_token, bob_token) = (token(&alice), token(&bob));
    let alice_id = alice.user_id().context("alice")?.to_string();
    let room_id = create_room(&server, &bob_token, "Chat", &[&alice_id]).await?;
    join(&server, &alice_token, &room_id).await?;

    let service = start_sync(&alice).await?;
    let shown = Shown::of(&service).await?;
    let unread = async |count: u64| {
        eventually(&format!("{count} unread in the chat"), async || {
            Ok(shown
                .find(&room_id)
                .is_some_and(|entry| entry.notifications == count)
                .then_some(()))
        })
        .await
    };
    server.send_text(&bob_token, &room_id, "t1", "one").await?;
    unread(1).await?;

    // kill -9 and start again: the client comes back with its position, which the
    // server still knows.
    server.kill9()?;
    server.restart().await?;
    server.send_text(&bob_token, &room_id, "t2", "two").await?;
    unread(2).await?;
    ensure!(
        !server.log().contains(UNKNOWN_POS_LOG),
        "the client had to start over after the restart: {}",
        server.log()
    );

    // Another request on the same connection without a position replaces it: the
    // client's position is now unknown, it starts over and still hears of new messages.
    let (status, body) = server
        .request(
            "POST",
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            Some(&alice_token),
            Some(json!({ "conn_id": "room-list", "lists": {} })),
        )
        .await?;
    ensure!(
        status == 200,
        "a fresh connection answered {status}: {body}"
    );
    server
        .send_text(&bob_token, &room_id, "t3", "three")
        .await?;
    eventually("the client told its position is unknown", async || {
        Ok(server.log().contains(UNKNOWN_POS_LOG).then_some(()))
    })
    .await?;
    unread(3).await?;
    server.send_text(&bob_token, &room_id, "t4", "four").await?;
    unread(4).await?;
    service.stop().await;
    Ok(())
}
