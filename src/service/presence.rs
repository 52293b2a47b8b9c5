//! Presence: whether each user is online, their status message and when they were last
//! active ("last seen"). Local users set it (a sync brings an offline user online;
//! sending, reading and setting presence count as activity); other servers' users'
//! arrives in `m.presence` EDUs. Each change takes a stream position, so `/sync` serves
//! the changes of the people a user shares a room with.
//!
//! Timeouts, at Synapse's times by default: an online user inactive for five minutes
//! goes `unavailable`, a user none of whose devices synced for 30 seconds goes
//! `offline`, another server's user not heard of for 30 minutes goes `offline`. There
//! is no timer per user: one wheel holds when each user is next due a look, and one
//! task ([`crate::service::federation::presence`]) takes what is due each second.

use std::{collections::BTreeMap, num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use parking_lot::Mutex;
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::{
    Result, config,
    service::{
        appservices::interest::{EphemeralChange, Interest},
        stream::Stream,
        users::now_ms,
    },
    storage::{Db, Keyspace, codec::Key},
};

/// Activity more recent than this counts as "currently active"; activity is written at
/// most this often.
const ACTIVE_WINDOW_MS: u64 = 60_000;
/// The shortest wait before a user is looked at again.
const LEAST_WAIT_MS: u64 = 1_000;

pub const ONLINE: &str = "online";
pub const UNAVAILABLE: &str = "unavailable";
pub const OFFLINE: &str = "offline";

/// A user's presence as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// `online`, `unavailable` or `offline`.
    pub presence: String,
    pub status_msg: Option<String>,
    /// When the user was last active, in milliseconds since the epoch.
    pub last_active_ts: u64,
    /// When this server last heard of it (another server's user), in milliseconds.
    #[serde(default)]
    pub updated_ts: u64,
}

impl PresenceRecord {
    pub fn last_active_ago(&self) -> u64 {
        now_ms().saturating_sub(self.last_active_ts)
    }

    pub fn currently_active(&self) -> bool {
        self.presence == ONLINE && self.last_active_ago() < ACTIVE_WINDOW_MS
    }

    /// The `m.presence` event content clients get.
    pub fn content(&self) -> serde_json::Value {
        let mut content = serde_json::json!({
            "presence": self.presence,
            "last_active_ago": self.last_active_ago(),
            "currently_active": self.currently_active(),
        });
        if let Some(status) = &self.status_msg {
            content["status_msg"] = status.as_str().into();
        }
        content
    }
}

/// When users go idle and offline, in milliseconds.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    idle: u64,
    offline: u64,
    remote_offline: u64,
}

/// What the timeouts make of a user's presence now: a new presence, or when to look again.
#[derive(Debug, PartialEq)]
pub enum Timed {
    Becomes(PresenceRecord),
    LookAgainAt(u64),
    /// Offline: nothing will change until the user comes back.
    Settled,
}

pub struct Presence {
    db: Arc<Db>,
    stream: Arc<Stream>,
    /// Queues presence for the application services that want it.
    appservices: Arc<Interest>,
    server_name: OwnedServerName,
    enabled: bool,
    timeouts: Timeouts,
    /// When each user is next due a look: time (ms) → users.
    wheel: Mutex<BTreeMap<u64, Vec<OwnedUserId>>>,
    /// The stored presence of users seen lately (every request a user sends reads it).
    recent: Mutex<LruCache<OwnedUserId, Option<PresenceRecord>>>,
}

/// Users whose stored presence is kept in memory.
const RECENT: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

impl Presence {
    /// Opens the presence store; everyone not offline is due a look soon after the
    /// start (their devices' syncs are not known yet).
    pub fn new(
        db: Arc<Db>,
        stream: Arc<Stream>,
        appservices: Arc<Interest>,
        server_name: OwnedServerName,
        config: &config::Presence,
    ) -> Result<Self> {
        let presence = Self {
            db,
            stream,
            appservices,
            server_name,
            enabled: config.enabled,
            timeouts: Timeouts {
                idle: config.idle_after_secs.saturating_mul(1000),
                offline: config.offline_after_secs.saturating_mul(1000),
                remote_offline: config.remote_offline_after_secs.saturating_mul(1000),
            },
            wheel: Mutex::default(),
            recent: Mutex::new(LruCache::new(RECENT)),
        };
        if presence.enabled {
            let now = now_ms();
            for (key, value) in presence.db.scan_prefix(Keyspace::Presence, &[])? {
                let record: PresenceRecord = crate::storage::codec::decode_json(&value)?;
                let Ok(user) = OwnedUserId::try_from(String::from_utf8_lossy(&key).as_ref()) else {
                    continue;
                };
                if record.presence != OFFLINE {
                    presence.look_again(&user, now + presence.timeouts.offline);
                }
            }
        }
        Ok(presence)
    }

    /// Whether presence is kept at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn get(&self, user: &UserId) -> Result<Option<PresenceRecord>> {
        if !self.enabled {
            return Ok(None);
        }
        if let Some(record) = self.recent.lock().get(user) {
            return Ok(record.clone());
        }
        let record: Option<PresenceRecord> = self
            .db
            .get_json(Keyspace::Presence, user.as_str().as_bytes())?;
        // A `set` meanwhile put the newer record: it stays.
        self.recent
            .lock()
            .get_or_insert(user.to_owned(), || record.clone());
        Ok(record)
    }

    /// Whether `record` differs from what is stored for the user (the last activity
    /// counts only once a minute).
    pub fn is_news(&self, user: &UserId, record: &PresenceRecord) -> Result<bool> {
        Ok(self.differs(self.get(user)?.as_ref(), record))
    }

    /// Whether `record` differs from `current`, the stored presence, enough to store.
    pub fn differs(&self, current: Option<&PresenceRecord>, record: &PresenceRecord) -> bool {
        match current {
            Some(current) => {
                current.presence != record.presence
                    || current.status_msg != record.status_msg
                    || record.last_active_ts.saturating_sub(current.last_active_ts)
                        >= ACTIVE_WINDOW_MS
                    || record.updated_ts.saturating_sub(current.updated_ts)
                        >= self.timeouts.remote_offline / 2
            }
            None => true,
        }
    }

    /// Notes that `user` is due a look at `at` (ms).
    pub fn look_again(&self, user: &UserId, at: u64) {
        self.wheel
            .lock()
            .entry(at)
            .or_default()
            .push(user.to_owned());
    }

    /// The users due a look by `now` (ms), each once.
    pub fn due(&self, now: u64) -> Vec<OwnedUserId> {
        let mut wheel = self.wheel.lock();
        let later = wheel.split_off(&now.saturating_add(1));
        let due = std::mem::replace(&mut *wheel, later);
        drop(wheel);
        let mut users: Vec<OwnedUserId> = due.into_values().flatten().collect();
        users.sort();
        users.dedup();
        users
    }

    /// What the timeouts make of `record`, the user's presence, at `now` (ms).
    pub fn timed(&self, user: &UserId, record: &PresenceRecord, now: u64) -> Timed {
        if record.presence == OFFLINE {
            return Timed::Settled;
        }
        let t = self.timeouts;
        let becomes = |presence: &str| {
            Timed::Becomes(PresenceRecord {
                presence: presence.to_owned(),
                ..record.clone()
            })
        };
        if user.server_name() != self.server_name {
            let heard = record.updated_ts;
            return if now.saturating_sub(heard) >= t.remote_offline {
                becomes(OFFLINE)
            } else {
                Timed::LookAgainAt(heard + t.remote_offline)
            };
        }
        let active_ago = now.saturating_sub(record.last_active_ts);
        let synced_ago = self.stream.last_synced(user).map_or(u64::MAX, |ago| {
            u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)
        });
        let seen_ago = active_ago.min(synced_ago);
        if seen_ago >= t.offline {
            return becomes(OFFLINE);
        }
        if record.presence == ONLINE && active_ago >= t.idle {
            return becomes(UNAVAILABLE);
        }
        let mut wait = t.offline - seen_ago;
        if record.presence == ONLINE {
            wait = wait.min(t.idle - active_ago);
        }
        Timed::LookAgainAt(now + wait.max(LEAST_WAIT_MS))
    }

    /// Stores a user's presence if it is news, waking `notify`. Returns whether it was.
    pub fn set(
        &self,
        user: &UserId,
        record: PresenceRecord,
        notify: &[OwnedUserId],
    ) -> Result<bool> {
        if !self.enabled || !self.is_news(user, &record)? {
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
        self.appservices.stage_ephemeral(
            &mut batch,
            permit.position(),
            EphemeralChange::Presence {
                user,
                content: record.content(),
            },
        );
        permit.persist_in(&mut batch);
        self.db.write(batch)?;
        self.appservices.ephemeral_written();
        self.recent
            .lock()
            .put(user.to_owned(), Some(record.clone()));
        drop(permit);
        self.stream.notify(notify.iter().map(|user| user.as_ref()));
        if let Timed::LookAgainAt(at) = self.timed(user, &record, now_ms()) {
            self.look_again(user, at);
        }
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
