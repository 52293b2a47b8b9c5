//! Retention (MSC1763): messages of a room whose `m.room.retention` sets `max_lifetime`
//! are expired once past it: rewritten to their redacted form, never served to clients
//! again, and the media their sender uploaded for them deleted. A story room
//! (`docs/stories.md`) with nothing left to show is then left by its local members.
//!
//! [`RetentionRooms`] notes, in the batch of the event that sets it, each room with a
//! retention policy; [`Retention`] walks those rooms' timelines every
//! `purge_interval_secs`, from where it stopped the time before.

use std::{sync::Arc, time::Duration};

use ruma::{MxcUri, RoomId, UserId};
use serde_json::Value;

use crate::{
    Result,
    service::{
        media::Media,
        rooms::{
            Rooms,
            timeline::{Placed, TimelineIndex},
        },
    },
    storage::{Batch, Db, Keyspace, codec::decode_u64},
};

/// Notes the rooms that set a retention policy (`retention_rooms`).
pub struct RetentionRooms;

impl TimelineIndex for RetentionRooms {
    fn stage(&self, rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()> {
        if event.pdu.state_key.as_deref() == Some("")
            && event.pdu.kind.to_string() == "m.room.retention"
        {
            rooms.stage_retention_room(batch, event.room_id);
        }
        Ok(())
    }
}

/// How many events of a room one pass looks at.
const PAGE: usize = 500;

pub struct Retention {
    db: Arc<Db>,
    rooms: Arc<Rooms>,
    media: Arc<Media>,
    interval: Duration,
}

impl Retention {
    pub fn new(db: Arc<Db>, rooms: Arc<Rooms>, media: Arc<Media>, interval: Duration) -> Self {
        Self {
            db,
            rooms,
            media,
            interval,
        }
    }

    /// Expires messages every interval, for as long as the server runs (outside a
    /// runtime, as in tools and tests that only open the database, nothing runs).
    pub fn start(self: Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let interval = self.interval.max(Duration::from_secs(1));
        // The task holds the service weakly: it ends when the server's services go.
        let this = Arc::downgrade(&self);
        drop(self);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(retention) = this.upgrade() else {
                    return;
                };
                if let Err(error) = retention.expire_all().await {
                    tracing::warn!(%error, "expiring messages past their rooms' lifetime failed");
                }
            }
        });
    }

    /// One pass over every room with a retention policy.
    pub async fn expire_all(&self) -> Result<usize> {
        let mut expired = 0;
        for room_id in self.rooms.retention_rooms() {
            expired += self.expire_room(&room_id).await?;
        }
        Ok(expired)
    }

    /// Expires a room's messages past its lifetime, oldest first, stopping at the first
    /// one still alive. Returns how many were expired.
    async fn expire_room(&self, room_id: &RoomId) -> Result<usize> {
        let Some(lifetime) = self.rooms.max_lifetime(room_id)? else {
            return Ok(0);
        };
        let cursor_key = room_id.as_bytes().to_vec();
        let mut cursor = match self.db.get(Keyspace::RetentionCursors, &cursor_key)? {
            Some(bytes) => decode_u64(&bytes)?,
            None => 0,
        };
        let mut expired = 0;
        let mut alive = false;
        'pages: loop {
            let page = self.rooms.timeline(room_id, cursor, u64::MAX, true, PAGE)?;
            if page.is_empty() {
                break;
            }
            for (position, event_id) in page {
                let stored = self.rooms.pdu(&event_id)?;
                let parsed = stored
                    .as_ref()
                    .and_then(|stored| stored.parse(event_id.clone()).ok());
                let (Some(stored), Some(pdu)) = (stored, parsed) else {
                    cursor = position;
                    continue;
                };
                // State never expires.
                if pdu.state_key.is_some() {
                    cursor = position;
                    continue;
                }
                if !Rooms::is_past_lifetime(&stored, Some(lifetime)) {
                    alive = true;
                    break 'pages;
                }
                if let Some(content) = self.rooms.expire(&event_id).await? {
                    self.delete_media(&pdu.sender, &content).await;
                    expired += 1;
                }
                cursor = position;
            }
        }
        let mut batch = self.db.batch();
        batch.put(
            Keyspace::RetentionCursors,
            cursor_key,
            cursor.to_be_bytes().to_vec(),
        );
        self.db.write(batch)?;
        if expired > 0 {
            tracing::info!(%room_id, expired, "messages past the room's lifetime expired");
        }
        if !alive && self.rooms.is_story(room_id)? {
            self.close_story(room_id, lifetime).await?;
        }
        Ok(expired)
    }

    /// A story with nothing left to show, older than its lifetime, is left by its local
    /// members: it leaves their room lists, and the server keeps nothing to serve.
    async fn close_story(&self, room_id: &RoomId, lifetime: u64) -> Result<()> {
        let created = self.rooms.created_at(room_id)?;
        let now = u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get());
        if created.is_none_or(|created| created.saturating_add(lifetime) > now) {
            return Ok(());
        }
        let members = self.rooms.interested_users(room_id)?;
        let local: Vec<_> = members
            .into_iter()
            .filter(|user| user.server_name() == self.rooms.server_name())
            .collect();
        for user in &local {
            if let Err(error) = self
                .rooms
                .leave(room_id, user, Some("The story has expired"))
                .await
            {
                tracing::warn!(%room_id, %user, %error, "could not leave an expired story");
            }
        }
        self.rooms.stop_retention(room_id)?;
        let mut batch = self.db.batch();
        batch.delete(Keyspace::RetentionCursors, room_id.as_bytes().to_vec());
        self.db.write(batch)?;
        tracing::info!(%room_id, left = local.len(), "expired story closed");
        Ok(())
    }

    /// Deletes the media of this server that `sender` uploaded and an expired message
    /// referred to (its file, thumbnail, encrypted file): never anyone else's.
    async fn delete_media(&self, sender: &UserId, content: &Value) {
        let mut uris = Vec::new();
        collect_mxc(content, &mut uris);
        for uri in uris {
            let uri = <&MxcUri>::from(uri.as_str());
            let Ok((server, media_id)) = uri.parts() else {
                continue;
            };
            if server != self.media.server_name() {
                continue;
            }
            let uploader = self
                .media
                .record(server, media_id)
                .ok()
                .flatten()
                .and_then(|record| record.uploader);
            if uploader.as_deref() != Some(sender) {
                continue;
            }
            match self.media.delete(server, media_id).await {
                Ok(_) => tracing::debug!(%uri, "media of an expired message deleted"),
                Err(error) => tracing::warn!(%uri, %error, "could not delete expired media"),
            }
        }
    }
}

/// Every `mxc://` string in a JSON value.
fn collect_mxc(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) if text.starts_with("mxc://") => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_mxc(item, out)),
        Value::Object(fields) => fields.values().for_each(|field| collect_mxc(field, out)),
        _ => {}
    }
}
