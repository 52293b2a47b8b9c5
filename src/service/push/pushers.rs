//! Pushers: where a user's devices want push notifications delivered, each with its
//! delivery state (the device that set it, how far notifications were sent). Delivery to
//! push gateways is `gateway.rs`.

use std::{collections::HashSet, sync::Arc};

use parking_lot::RwLock;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId, api::client::push::Pusher};
use serde::{Deserialize, Serialize};

use super::actions::push_queue_prefix;
use crate::{
    Result,
    storage::{
        Db, Keyspace,
        codec::{Key, KeyReader, decode_json},
    },
};

/// How far a pusher's notifications went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PusherCursor {
    /// The device whose access token set the pusher: it gets no push while it syncs.
    pub device_id: Option<OwnedDeviceId>,
    /// Notifications up to this stream position are sent (or given up on).
    pub position: u64,
}

fn pusher_key(user: &UserId, app_id: &str, pushkey: &str) -> Key {
    Key::new().str(user.as_str()).str(app_id).str(pushkey)
}

pub struct Pushers {
    db: Arc<Db>,
    /// The users with at least one pusher.
    users: RwLock<HashSet<OwnedUserId>>,
}

impl Pushers {
    pub fn new(db: Arc<Db>) -> Result<Self> {
        let mut users = HashSet::new();
        for (key, _) in db.scan_prefix(Keyspace::Pushers, &[])? {
            if let Ok(user) = KeyReader::new(&key).str()
                && let Ok(user) = OwnedUserId::try_from(user)
            {
                users.insert(user);
            }
        }
        Ok(Self {
            db,
            users: RwLock::new(users),
        })
    }

    /// Whether the user has a pusher.
    pub fn has_any(&self, user: &UserId) -> bool {
        self.users.read().contains(user)
    }

    /// Every user with a pusher.
    pub fn users(&self) -> Vec<OwnedUserId> {
        self.users.read().iter().cloned().collect()
    }

    pub fn list(&self, user: &UserId) -> Result<Vec<Pusher>> {
        let prefix = Key::new().str(user.as_str());
        let mut pushers = Vec::new();
        for (_, value) in self.db.scan_prefix(Keyspace::Pushers, prefix.bytes())? {
            pushers.push(decode_json(&value)?);
        }
        Ok(pushers)
    }

    /// Creates or replaces a pusher, set by `device`; notifications after `from` go to
    /// it. Unless `append`, other apps' pushers with the same push key are removed, as
    /// the spec asks.
    pub fn set(
        &self,
        user: &UserId,
        device: &DeviceId,
        pusher: &Pusher,
        append: bool,
        from: u64,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        if !append {
            let prefix = Key::new().str(user.as_str());
            for (key, value) in self.db.scan_prefix(Keyspace::Pushers, prefix.bytes())? {
                let existing: Pusher = decode_json(&value)?;
                if existing.ids.pushkey == pusher.ids.pushkey
                    && existing.ids.app_id != pusher.ids.app_id
                {
                    batch.delete(Keyspace::Pushers, key.clone());
                    batch.delete(Keyspace::PusherCursors, key);
                }
            }
        }
        let key = pusher_key(user, &pusher.ids.app_id, &pusher.ids.pushkey);
        let cursor = match self.cursor(user, &pusher.ids.app_id, &pusher.ids.pushkey)? {
            // The same pusher set again keeps its place.
            Some(cursor) => PusherCursor {
                device_id: Some(device.to_owned()),
                ..cursor
            },
            None => PusherCursor {
                device_id: Some(device.to_owned()),
                position: from,
            },
        };
        batch.put_json(Keyspace::Pushers, key.clone(), pusher);
        batch.put_json(Keyspace::PusherCursors, key, &cursor);
        self.db.write(batch)?;
        self.users.write().insert(user.to_owned());
        Ok(())
    }

    pub fn remove(&self, user: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
        let mut batch = self.db.batch();
        let key = pusher_key(user, app_id, pushkey);
        batch.delete(Keyspace::Pushers, key.clone());
        batch.delete(Keyspace::PusherCursors, key);
        self.db.write(batch)?;
        if self.list(user)?.is_empty() {
            self.users.write().remove(user);
            // No gateway reads the user's push queue any more.
            self.trim_queue(user, u64::MAX)?;
        }
        Ok(())
    }

    /// Drops the entries of a user's push queue at or below `through` (every pusher of
    /// theirs is past them).
    pub fn trim_queue(&self, user: &UserId, through: u64) -> Result<()> {
        self.db
            .trim_runs(Keyspace::PushQueue, &push_queue_prefix(user), through)?;
        Ok(())
    }

    /// Removes the pushers a device set (it logged out or was deleted).
    pub fn remove_for_device(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        for pusher in self.list(user)? {
            let cursor = self.cursor(user, &pusher.ids.app_id, &pusher.ids.pushkey)?;
            if cursor.is_some_and(|cursor| cursor.device_id.as_deref() == Some(device)) {
                self.remove(user, &pusher.ids.app_id, &pusher.ids.pushkey)?;
            }
        }
        Ok(())
    }

    pub fn cursor(
        &self,
        user: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> Result<Option<PusherCursor>> {
        Ok(self.db.get_json(
            Keyspace::PusherCursors,
            pusher_key(user, app_id, pushkey).bytes(),
        )?)
    }

    /// Notes that notifications up to `position` went to the pusher (if it still exists).
    pub fn advance(&self, user: &UserId, app_id: &str, pushkey: &str, position: u64) -> Result<()> {
        let key = pusher_key(user, app_id, pushkey);
        let Some(mut cursor) = self.cursor(user, app_id, pushkey)? else {
            return Ok(());
        };
        if cursor.position >= position {
            return Ok(());
        }
        cursor.position = position;
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::PusherCursors, key, &cursor);
        self.db.write(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{
        api::client::push::{PusherIds, PusherInit, PusherKind},
        device_id,
        push::HttpPusherData,
        user_id,
    };

    use super::*;
    use crate::storage::runs::RunPrefix;

    #[test]
    fn the_push_queue_goes_with_the_last_pusher() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let pushers = Pushers::new(db.clone()).unwrap();
        let user = user_id!("@bob:x");
        let pusher = |key: &str| -> Pusher {
            PusherInit {
                ids: PusherIds::new(key.to_owned(), "app".to_owned()),
                kind: PusherKind::Http(HttpPusherData::new(
                    "https://push.example/_matrix/push/v1/notify".to_owned(),
                )),
                app_display_name: "App".to_owned(),
                device_display_name: "Phone".to_owned(),
                profile_tag: None,
                lang: "en".to_owned(),
            }
            .into()
        };
        for key in ["one", "two"] {
            pushers
                .set(user, device_id!("PHONE"), &pusher(key), true, 0)
                .unwrap();
        }
        let mut batch = db.batch();
        batch.put_in_run(
            Keyspace::PushQueue,
            &RunPrefix::new(push_queue_prefix(user)),
            5,
            b"!r:x",
        );
        db.write(batch).unwrap();
        let queued = || {
            db.run_entries(Keyspace::PushQueue, &push_queue_prefix(user), 0, 100, 10)
                .unwrap()
                .len()
        };
        pushers.remove(user, "app", "one").unwrap();
        assert_eq!(queued(), 1, "another pusher still reads the queue");
        pushers.remove(user, "app", "two").unwrap();
        assert_eq!(queued(), 0);
        assert!(!pushers.has_any(user));
    }
}
