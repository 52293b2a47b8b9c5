//! Pushers: where a user's devices want push notifications delivered. Stored and listed
//! here; delivery to push gateways is a separate service.

use std::sync::Arc;

use ruma::{UserId, api::client::push::Pusher};

use crate::{
    Result,
    storage::{
        Db, Keyspace,
        codec::{Key, decode_json},
    },
};

pub struct Pushers {
    db: Arc<Db>,
}

impl Pushers {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    pub fn list(&self, user: &UserId) -> Result<Vec<Pusher>> {
        let prefix = Key::new().str(user.as_str());
        let mut pushers = Vec::new();
        for (_, value) in self.db.scan_prefix(Keyspace::Pushers, prefix.bytes())? {
            pushers.push(decode_json(&value)?);
        }
        Ok(pushers)
    }

    /// Creates or replaces a pusher. Unless `append`, other apps' pushers with the same
    /// push key are removed, as the spec asks.
    pub fn set(&self, user: &UserId, pusher: &Pusher, append: bool) -> Result<()> {
        let mut batch = self.db.batch();
        if !append {
            let prefix = Key::new().str(user.as_str());
            for (key, value) in self.db.scan_prefix(Keyspace::Pushers, prefix.bytes())? {
                let existing: Pusher = decode_json(&value)?;
                if existing.ids.pushkey == pusher.ids.pushkey
                    && existing.ids.app_id != pusher.ids.app_id
                {
                    batch.delete(Keyspace::Pushers, key);
                }
            }
        }
        let key = Key::new()
            .str(user.as_str())
            .str(&pusher.ids.app_id)
            .str(&pusher.ids.pushkey);
        batch.put_json(Keyspace::Pushers, key, pusher);
        self.db.write(batch)?;
        Ok(())
    }

    pub fn remove(&self, user: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete(
            Keyspace::Pushers,
            Key::new().str(user.as_str()).str(app_id).str(pushkey),
        );
        self.db.write(batch)?;
        Ok(())
    }
}
