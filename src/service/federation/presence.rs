//! Presence across servers: a local user's change goes to every server sharing a room
//! with them as an `m.presence` EDU; other servers' EDUs update their users' presence.

use ruma::{ServerName, UserId, api::federation::transactions::edu::PresenceContent};

use std::sync::Arc;

use super::queue::OutgoingQueue;
use crate::{
    Result,
    service::{
        presence::{Presence, PresenceRecord},
        rooms::Rooms,
        users::now_ms,
    },
};

/// Presence told to the servers sharing a room, and theirs applied.
pub struct PresenceRelay {
    pub(super) presence: Arc<Presence>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) outgoing: Arc<OutgoingQueue>,
}

impl PresenceRelay {
    /// Records a local user's presence; if it changed, wakes everyone sharing a room with
    /// them and tells the other servers of those rooms.
    pub fn publish(&self, user: &UserId, record: PresenceRecord) -> Result<()> {
        // Every sync calls this: the common case, nothing new, costs one read.
        if !self.presence.is_news(user, &record)? {
            return Ok(());
        }
        let audience = self.rooms.shared_audience(user)?;
        if !self.presence.set(user, record.clone(), &audience.users)? {
            return Ok(());
        }
        let mut update = serde_json::json!({
            "user_id": user,
            "presence": record.presence,
            "last_active_ago": record.last_active_ago(),
            "currently_active": record.currently_active(),
        });
        if let Some(status) = &record.status_msg {
            update["status_msg"] = status.as_str().into();
        }
        self.outgoing.send_edu(
            &audience.servers,
            &serde_json::json!({ "edu_type": "m.presence", "content": { "push": [update] } }),
        )
    }

    /// Applies an `m.presence` EDU from `origin`: only its own users' presence.
    pub fn receive(&self, origin: &ServerName, content: PresenceContent) {
        for update in content.push {
            if update.user_id.server_name() != origin {
                continue;
            }
            let record = PresenceRecord {
                presence: update.presence.as_str().to_owned(),
                status_msg: update.status_msg,
                last_active_ts: now_ms().saturating_sub(u64::from(update.last_active_ago)),
            };
            if let Err(error) = self.presence.set(&update.user_id, record, &[]) {
                tracing::warn!(%error, %origin, "presence not stored");
            }
        }
    }
}
