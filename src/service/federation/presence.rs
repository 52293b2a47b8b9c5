//! Presence across servers and over time: a local user's change wakes the local users
//! sharing a room with them and goes to every other server of those rooms as an
//! `m.presence` EDU (repeated every 25 minutes while they are online, so those servers
//! do not time them out); other servers' EDUs update their users' presence and wake
//! the local users who share a room with them. One task applies the timeouts.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use ruma::{OwnedUserId, ServerName, UserId, api::federation::transactions::edu::PresenceContent};

use super::queue::OutgoingQueue;
use crate::{
    Result,
    service::{
        presence::{OFFLINE, ONLINE, Presence, PresenceRecord, Timed, UNAVAILABLE},
        rooms::Rooms,
        users::now_ms,
    },
};

/// How often a local online user's presence is told to other servers again.
const REPEAT_MS: u64 = 25 * 60 * 1000;
/// How often the timeouts are applied.
const TICK: Duration = Duration::from_secs(1);

/// Presence told to the servers sharing a room, and theirs applied.
pub struct PresenceRelay {
    pub(super) presence: Arc<Presence>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) outgoing: Arc<OutgoingQueue>,
    /// When each local user's presence last went to other servers (ms).
    pub(super) told: Mutex<HashMap<OwnedUserId, u64>>,
}

impl PresenceRelay {
    /// A sync of a local user's device, asking to be shown as `set_presence` (`online`
    /// unless it says): an offline user comes online (that is activity), an online one
    /// asking for `unavailable` goes idle. Syncing alone is not activity.
    pub fn synced(&self, user: &UserId, set_presence: &str) -> Result<()> {
        if set_presence == OFFLINE || !self.presence.enabled() {
            return Ok(());
        }
        let current = self.presence.get(user)?;
        let now = now_ms();
        let record = match current {
            None => PresenceRecord {
                presence: set_presence.to_owned(),
                status_msg: None,
                last_active_ts: now,
                updated_ts: now,
            },
            Some(current) if current.presence == OFFLINE => PresenceRecord {
                presence: set_presence.to_owned(),
                last_active_ts: now,
                updated_ts: now,
                ..current
            },
            Some(current) if set_presence == UNAVAILABLE && current.presence == ONLINE => {
                PresenceRecord {
                    presence: UNAVAILABLE.to_owned(),
                    updated_ts: now,
                    ..current
                }
            }
            Some(_) => return Ok(()),
        };
        self.publish(user, record)
    }

    /// Something a local user did (sent an event, read, set their presence online):
    /// they are online and active now.
    pub fn active(&self, user: &UserId) -> Result<()> {
        if !self.presence.enabled() {
            return Ok(());
        }
        let now = now_ms();
        let current = self.presence.get(user)?;
        let record = PresenceRecord {
            presence: ONLINE.to_owned(),
            status_msg: current
                .as_ref()
                .and_then(|record| record.status_msg.clone()),
            last_active_ts: now,
            updated_ts: now,
        };
        // Every send comes here: the common case, nothing new, costs this one read.
        if !self.presence.differs(current.as_ref(), &record) {
            return Ok(());
        }
        self.publish(user, record)
    }

    /// [`active`](Self::active) after what the user did is done (so a woken sync sees
    /// both): a failure is logged, never the request's.
    pub fn was_active(&self, user: &UserId) {
        if let Err(error) = self.active(user) {
            tracing::warn!(%error, %user, "presence not updated");
        }
    }

    /// Records a local user's presence; if it changed, wakes everyone sharing a room with
    /// them and tells the other servers of those rooms.
    pub fn publish(&self, user: &UserId, record: PresenceRecord) -> Result<()> {
        // Every sync may call this: the common case, nothing new, costs one read.
        if !self.presence.is_news(user, &record)? {
            return Ok(());
        }
        let audience = self.rooms.shared_audience(user)?;
        if !self.presence.set(user, record.clone(), &audience.users)? {
            return Ok(());
        }
        self.tell(user, &record, &audience.servers)
    }

    /// Sends a local user's presence to other servers.
    fn tell(
        &self,
        user: &UserId,
        record: &PresenceRecord,
        servers: &[ruma::OwnedServerName],
    ) -> Result<()> {
        self.told.lock().insert(user.to_owned(), now_ms());
        if servers.is_empty() {
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
            servers,
            &serde_json::json!({ "edu_type": "m.presence", "content": { "push": [update] } }),
        )
    }

    /// Applies an `m.presence` EDU from `origin`: only its own users' presence, waking
    /// the local users who share a room with each.
    pub fn receive(&self, origin: &ServerName, content: PresenceContent) {
        if !self.presence.enabled() {
            return;
        }
        let now = now_ms();
        for update in content.push {
            if update.user_id.server_name() != origin {
                continue;
            }
            let record = PresenceRecord {
                presence: update.presence.as_str().to_owned(),
                status_msg: update.status_msg,
                last_active_ts: now.saturating_sub(u64::from(update.last_active_ago)),
                updated_ts: now,
            };
            let stored = self
                .rooms
                .local_audience_of(&update.user_id)
                .and_then(|audience| self.presence.set(&update.user_id, record, &audience));
            if let Err(error) = stored {
                tracing::warn!(%error, %origin, "presence not stored");
            }
        }
    }

    /// Applies the timeouts for ever, once a second (started once, with the server).
    pub fn start_timeouts(self: Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let relay = self.clone();
                let applied = tokio::task::spawn_blocking(move || relay.apply_timeouts()).await;
                if let Ok(Err(error)) = applied {
                    tracing::warn!(%error, "presence timeouts not applied");
                }
            }
        });
    }

    /// Looks at every user due a look: moves them on if a timeout passed, repeats a
    /// local online user's presence to other servers when it is time.
    fn apply_timeouts(&self) -> Result<()> {
        let now = now_ms();
        for user in self.presence.due(now) {
            let Some(record) = self.presence.get(&user)? else {
                continue;
            };
            let local = self.rooms.server_name() == user.server_name();
            match self.presence.timed(&user, &record, now) {
                Timed::Becomes(record) if local => self.publish(&user, record)?,
                Timed::Becomes(record) => {
                    let audience = self.rooms.local_audience_of(&user)?;
                    self.presence.set(&user, record, &audience)?;
                }
                Timed::LookAgainAt(at) => {
                    self.presence.look_again(&user, at);
                    let told = self.told.lock().get(&user).copied().unwrap_or(0);
                    if local && now.saturating_sub(told) >= REPEAT_MS {
                        let servers = self.rooms.shared_audience(&user)?.servers;
                        self.tell(&user, &record, &servers)?;
                    }
                }
                Timed::Settled => {}
            }
        }
        Ok(())
    }
}
