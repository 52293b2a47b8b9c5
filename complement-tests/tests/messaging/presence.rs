//! Presence on the timer: a user who acts is online, goes idle (`unavailable`) while
//! their app syncs without them doing anything, and offline once it stops syncing; the
//! people sharing a room see each change wake their long-poll. Presence switched off
//! shows nobody.

use std::time::{Duration, Instant};

use complement_tests::{next_batch, raw_sync};

use super::*;

/// A user's presence as another sees it through `/presence/{userId}/status`.
async fn presence_of(server: &TestServer, viewer: &Client, user: &str) -> anyhow::Result<Value> {
    let (status, body) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/presence/{user}/status"),
            Some(&token(viewer)),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "presence answered {status}: {body}");
    Ok(body)
}

/// Long-polls Bob's sync from `since` until Alice's presence event says `state`;
/// returns how long it took.
async fn bob_sees(
    server: &TestServer,
    bob: &Client,
    since: &str,
    state: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut since = since.to_owned();
    while started.elapsed() < Duration::from_secs(30) {
        let sync = raw_sync(server, bob, Some(&since), 10_000).await?;
        let seen = sync["presence"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|event| {
                event["sender"] == "@alice:localhost" && event["content"]["presence"] == state
            })
        });
        if seen {
            return Ok(started.elapsed());
        }
        since = sync["next_batch"].as_str().unwrap_or(&since).to_owned();
    }
    anyhow::bail!("Bob never saw Alice {state}")
}

#[tokio::test]
async fn online_then_idle_then_offline_on_the_timer() -> anyhow::Result<()> {
    let server =
        TestServer::start_with("presence = { idle_after_secs = 2, offline_after_secs = 3 }\n")
            .await?;
    let (alice, bob, room_id) = two_in_a_room(&server).await?;

    // Alice says something: she is online and active.
    send(&server, &alice, &room_id, "m.room.message", text("hi")).await?;
    let seen = presence_of(&server, &bob, "@alice:localhost").await?;
    assert_eq!(seen["presence"], "online", "{seen}");
    assert_eq!(seen["currently_active"], true, "{seen}");

    // Her app keeps syncing but she does nothing: idle after two seconds.
    let since = next_batch(&server, &bob).await?;
    let syncing = {
        let (server_url, alice_token) = (server.base_url(), token(&alice));
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let _ = http
                    .get(format!("{server_url}/_matrix/client/v3/sync?timeout=500"))
                    .bearer_auth(&alice_token)
                    .send()
                    .await;
            }
        })
    };
    let took = bob_sees(&server, &bob, &since, "unavailable").await?;
    assert!(
        took >= Duration::from_millis(1000),
        "idle too soon: {took:?}"
    );
    let seen = presence_of(&server, &bob, "@alice:localhost").await?;
    assert_eq!(seen["presence"], "unavailable", "{seen}");
    assert_eq!(seen["currently_active"], false, "{seen}");

    // Her app stops syncing: offline three seconds later, and Bob's long-poll wakes.
    let since = next_batch(&server, &bob).await?;
    syncing.abort();
    let took = bob_sees(&server, &bob, &since, "offline").await?;
    assert!(took < Duration::from_secs(10), "offline too late: {took:?}");
    let seen = presence_of(&server, &bob, "@alice:localhost").await?;
    assert_eq!(seen["presence"], "offline", "{seen}");
    assert!(seen["last_active_ago"].as_u64().unwrap() >= 3000, "{seen}");

    // A sync brings her back online.
    let since = next_batch(&server, &bob).await?;
    raw_sync(&server, &alice, None, 0).await?;
    bob_sees(&server, &bob, &since, "online").await?;
    Ok(())
}

#[tokio::test]
async fn presence_switched_off_shows_nobody() -> anyhow::Result<()> {
    let server = TestServer::start_with("presence = { enabled = false }\n").await?;
    let (alice, bob, _room_id) = two_in_a_room(&server).await?;
    let path = "/_matrix/client/v3/presence/@alice:localhost/status";
    let (status, _) = server
        .request(
            "PUT",
            path,
            Some(&token(&alice)),
            Some(json!({ "presence": "online", "status_msg": "here" })),
        )
        .await?;
    assert_eq!(status, 200);
    let seen = presence_of(&server, &bob, "@alice:localhost").await?;
    assert_eq!(seen["presence"], "offline", "{seen}");
    let sync = raw_sync(&server, &bob, None, 0).await?;
    let events = sync["presence"]["events"].as_array().map_or(0, Vec::len);
    assert_eq!(events, 0, "{sync}");
    Ok(())
}
