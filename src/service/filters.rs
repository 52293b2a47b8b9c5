//! Stored sync filters.

use std::sync::Arc;

use ruma::UserId;

use crate::{
    Result,
    storage::{Db, Keyspace, codec::Key},
};

pub struct Filters {
    db: Arc<Db>,
}

impl Filters {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// Stores a filter and returns its id. Identical filters share an id.
    pub fn create(&self, user: &UserId, filter: &serde_json::Value) -> Result<String> {
        let bytes = crate::storage::codec::encode_json(filter);
        let digest =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes));
        let id: String = digest
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let mut batch = self.db.batch();
        batch.put(
            Keyspace::Filters,
            Key::new().str(user.as_str()).str(&id),
            bytes,
        );
        self.db.write(batch)?;
        Ok(id)
    }

    pub fn get(&self, user: &UserId, id: &str) -> Result<Option<serde_json::Value>> {
        Ok(self.db.get_json(
            Keyspace::Filters,
            Key::new().str(user.as_str()).str(id).bytes(),
        )?)
    }
}
