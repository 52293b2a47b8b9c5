//! Rooms through real clients, in one test binary:
//! - `messages`: DMs both ways in order, long-polls, edits, redactions, typing,
//!   receipts, rate limits;
//! - `membership`: group membership changes, profiles, ignored users, forgetting;
//! - `history`: long history, `prev_batch`, lazy-loaded members, unread counts;
//! - `lookups`: jump to a date, an event by id alone, mutual rooms, support contacts;
//! - `reports`: reporting events, rooms and users;
//! - `spaces`: the space hierarchy;
//! - `state_after`: sync's `use_state_after` (MSC4222);
//! - `upgrades`: room upgrades followed by the client.

use std::time::Duration;

use complement_tests::{TestServer, next_batch, raw_sync, room_alone, timeline, token};
use matrix_sdk::{
    RoomState,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, api::client::receipt::create_receipt::v3::ReceiptType,
        api::client::room::create_room, events::receipt::ReceiptThread,
        events::room::message::RoomMessageEventContent,
    },
};
use serde_json::{Value, json};

fn bodies(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Alice and Bob, registered, in a direct chat Alice made.
async fn two_in_a_dm(
    server: &TestServer,
) -> anyhow::Result<(matrix_sdk::Client, matrix_sdk::Client, OwnedRoomId)> {
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = create_dm(&alice, "@bob:localhost").await?;
    bob.join_room_by_id(&room_id).await?;
    Ok((alice, bob, room_id))
}

/// A direct chat as Element makes it: `is_direct`, the invitee, trusted private chat
/// (both members are admins).
async fn create_dm(alice: &matrix_sdk::Client, bob: &str) -> anyhow::Result<OwnedRoomId> {
    create_private(alice, bob, create_room::v3::RoomPreset::TrustedPrivateChat).await
}

async fn create_private(
    alice: &matrix_sdk::Client,
    bob: &str,
    preset: create_room::v3::RoomPreset,
) -> anyhow::Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.is_direct = true;
    request.invite = vec![bob.try_into()?];
    request.preset = Some(preset);
    Ok(alice.create_room(request).await?.room_id().to_owned())
}

mod history;
mod lookups;
mod membership;
mod messages;
mod reports;
mod spaces;
mod state_after;
mod upgrades;
