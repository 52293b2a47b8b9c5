//! Messaging as a modern messenger behaves, through real clients, in one test binary:
//! - `push`: pushes to a (recording) push gateway for a DM and a mention while the app
//!   is away, none while it syncs, retries, rejected keys, `/notifications`;
//! - `threads`: threads with their summaries and `/threads`, edits bundled, reactions
//!   and their redaction, `/relations`, thread-aware unread counts;
//! - `presence`: online, idle and offline on the timer, long-polls woken; switched off;
//! - `receipts`: delivered then read, as the sender sees them; delivered receipts
//!   turned off;
//! - `thread_subscriptions`: threads that notify only their subscribers (MSC4306), the
//!   changes paged and in sliding sync (MSC4308);
//! - `search`: message search with visibility, order, highlights, context, paging, and
//!   an index that survives a crash and is rebuilt when gone.

mod presence;
mod push;
mod receipts;
mod search;
mod thread_subscriptions;
mod threads;

use complement_tests::{TestServer, room_of_two, token};
use matrix_sdk::{Client, ruma::OwnedRoomId};
use serde_json::{Value, json};

/// Alice and Bob (logged in with matrix-sdk) in a room of their own.
async fn two_in_a_room(server: &TestServer) -> anyhow::Result<(Client, Client, OwnedRoomId)> {
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = room_of_two(&alice, &bob).await?;
    Ok((alice, bob, room_id))
}

/// Sends an event of any type with a raw request; returns its id.
async fn send(
    server: &TestServer,
    client: &Client,
    room_id: &OwnedRoomId,
    kind: &str,
    content: Value,
) -> anyhow::Result<String> {
    let txn = format!("t{}", rand_txn());
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/{kind}/{txn}");
    let (status, body) = server
        .request("PUT", &path, Some(&token(client)), Some(content))
        .await?;
    anyhow::ensure!(status == 200, "send answered {status}: {body}");
    Ok(body["event_id"].as_str().unwrap_or_default().to_owned())
}

fn rand_txn() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    nanos + u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}
