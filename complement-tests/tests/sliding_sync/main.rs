//! Simplified sliding sync (MSC4186) through Element X's own client stack:
//! matrix-sdk-ui's `SyncService` (a "room-list" connection and an "encryption" one) and
//! `RoomListService`, with the room list as Element X shows it (filtered, sorted by the
//! client's sorters from what the server sends).

mod encryption;
mod recovery;
mod room_list;

use std::sync::Arc;

use anyhow::{Context, Result};
use complement_tests::TestServer;
use eyeball_im::Vector;
use futures::StreamExt;
use matrix_sdk::{Client, RoomState};
use matrix_sdk_ui::{room_list_service::filters::new_filter_non_left, sync_service::SyncService};
use serde_json::json;

/// A client's sync service (with Element X's offline mode: it retries on its own when
/// the server goes away), started.
async fn start_sync(client: &Client) -> Result<SyncService> {
    let service = SyncService::builder(client.clone())
        .with_offline_mode()
        .build()
        .await?;
    service.start().await;
    Ok(service)
}

/// One entry of the room list as the client shows it.
#[derive(Clone, Debug)]
struct Entry {
    room_id: String,
    name: String,
    state: RoomState,
    notifications: u64,
}

/// The room list of a running sync service, kept up to date by a task that applies the
/// list's changes as Element X's room list screen does (all non-left rooms, the
/// client's sorting).
struct Shown {
    entries: Arc<std::sync::Mutex<Vec<Entry>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Shown {
    async fn of(service: &SyncService) -> Result<Self> {
        let list = service.room_list_service().all_rooms().await?;
        let entries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let published = entries.clone();
        let task = tokio::spawn(async move {
            let (stream, controller) = list.entries_with_dynamic_adapters(1000);
            controller.set_filter(Box::new(new_filter_non_left()));
            let mut stream = std::pin::pin!(stream);
            let mut items = Vector::new();
            while let Some(diffs) = stream.next().await {
                for diff in diffs {
                    diff.apply(&mut items);
                }
                *published.lock().expect("not poisoned") = items
                    .iter()
                    .map(
                        |item: &matrix_sdk_ui::room_list_service::RoomListItem| Entry {
                            room_id: item.room_id().to_string(),
                            name: item
                                .cached_display_name()
                                .map(|name| name.to_string())
                                .unwrap_or_default(),
                            state: item.state(),
                            notifications: item.unread_notification_counts().notification_count,
                        },
                    )
                    .collect();
            }
        });
        Ok(Self { entries, task })
    }

    fn now(&self) -> Vec<Entry> {
        self.entries.lock().expect("not poisoned").clone()
    }

    fn names(&self) -> Vec<String> {
        self.now().into_iter().map(|entry| entry.name).collect()
    }

    fn find(&self, room_id: &str) -> Option<Entry> {
        self.now()
            .into_iter()
            .find(|entry| entry.room_id == room_id)
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates a room of `owner`'s (raw API) named `name` with `invite` invited; returns its id.
async fn create_room(
    server: &TestServer,
    owner: &str,
    name: &str,
    invite: &[&str],
) -> Result<String> {
    let (status, body) = server
        .request(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(owner),
            Some(json!({ "name": name, "invite": invite })),
        )
        .await?;
    anyhow::ensure!(status == 200, "createRoom answered {status}: {body}");
    body["room_id"]
        .as_str()
        .map(str::to_owned)
        .context("no room id")
}

async fn join(server: &TestServer, token: &str, room_id: &str) -> Result<()> {
    let (status, body) = server
        .request(
            "POST",
            &format!("/_matrix/client/v3/join/{room_id}"),
            Some(token),
            Some(json!({})),
        )
        .await?;
    anyhow::ensure!(status == 200, "join answered {status}: {body}");
    Ok(())
}
