//! Presence: whether each user is online, their status message and when they were last
//! active ("last seen"). Local users set it (and every sync marks them online); other
//! servers' users' arrives in `m.presence` EDUs. Each change takes a stream position, so
//! `/sync` serves the changes of the people a user shares a room with.

use std::sync::Arc;

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::{
    Result,
    service::{stream::Stream, users::now_ms},
    storage::{Db, Keyspace, codec::Key},
};

/// Activity more recent than this counts as "currently active".
const ACTIVE_WINDOW_MS: u64 = 60_000;
/// An online user not seen for this long is shown as unavailable (idle).
const IDLE_AFTER_MS: u64 = 5 * 60_000;

/// A user's presence as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// `online`, `unavailable` or `offline`.
    pub presence: String,
    pub status_msg: Option<String>,
    /// When the user was last active, in milliseconds since the epoch.
    pub last_active_ts: u64,
}

impl PresenceRecord {
    /// The presence as shown now: an online user idle for a while is `unavailable`.
    pub fn shown(&self) -> &str {
        if self.presence == "online" && now_ms().saturating_sub(self.last_active_ts) > IDLE_AFTER_MS
        {
            "unavailable"
        } else {
            &self.presence
        }
    }

    pub fn last_active_ago(&self) -> u64 {
        now_ms().saturating_sub(self.last_active_ts)
    }

    pub fn currently_active(&self) -> bool {
        self.shown() == "online" && self.last_active_ago() < ACTIVE_WINDOW_MS
    }

    /// The `m.presence` event content clients get.
    pub fn content(&self) -> serde_json::Value {
        let mut content = serde_json::json!({
            "presence": self.shown(),
            "last_active_ago": self.last_active_ago(),
            "currently_active": self.currently_active(),
        });
        if let Some(status) = &self.status_msg {
            content["status_msg"] = status.as_str().into();
        }
        content
    }
}

pub struct Presence {
    db: Arc<Db>,
    stream: Arc<Stream>,
}

impl Presence {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>) -> Self {
        Self { db, stream }
    }

    pub fn get(&self, user: &UserId) -> Result<Option<PresenceRecord>> {
        Ok(self
            .db
            .get_json(Keyspace::Presence, user.as_str().as_bytes())?)
    }

    /// Whether `record` differs from what is stored for the user (the last activity
    /// counts only once a minute).
    pub fn is_news(&self, user: &UserId, record: &PresenceRecord) -> Result<bool> {
        Ok(match self.get(user)? {
            Some(current) => {
                current.presence != record.presence
                    || current.status_msg != record.status_msg
                    || record.last_active_ts.saturating_sub(current.last_active_ts)
                        >= ACTIVE_WINDOW_MS
            }
            None => true,
        })
    }

    /// Stores a user's presence if it is news, waking `notify`. Returns whether it was.
    pub fn set(
        &self,
        user: &UserId,
        record: PresenceRecord,
        notify: &[OwnedUserId],
    ) -> Result<bool> {
        if !self.is_news(user, &record)? {
            return Ok(false);
        }
        let permit = self.stream.next();
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::Presence,
            user.as_str().as_bytes().to_vec(),
            &record,
        );
        batch.put(
            Keyspace::PresenceStream,
            Key::new().u64(permit.position()),
            user.as_str().as_bytes().to_vec(),
        );
        permit.persist_in(&mut batch);
        self.db.write(batch)?;
        drop(permit);
        self.stream.notify(notify.iter().map(|user| user.as_ref()));
        Ok(true)
    }

    /// Users whose presence changed after `since`, up to `until`.
    pub fn changed(&self, since: u64, until: u64) -> Result<Vec<OwnedUserId>> {
        let mut users: Vec<OwnedUserId> = Vec::new();
        for (_, value) in
            self.db
                .stream_range(Keyspace::PresenceStream, &Key::new(), since, until)?
        {
            if let Ok(user) = OwnedUserId::try_from(String::from_utf8_lossy(&value).as_ref())
                && !users.contains(&user)
            {
                users.push(user);
            }
        }
        Ok(users)
    }
}
