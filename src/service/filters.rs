//! Stored sync filters.

use std::sync::Arc;

use ruma::{
    UserId,
    api::client::filter::{Filter, RoomEventFilter},
};

use crate::{
    Result,
    service::rooms::pdu::ClientEvent,
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

/// Whether a type pattern of a filter matches `kind`: exactly, or up to a trailing `*`
/// (`*` alone matches every type).
fn type_matches(pattern: &str, kind: &str) -> bool {
    pattern == kind
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| kind.starts_with(prefix))
}

/// Whether type patterns (`types`, if given, and `not_types`) let `kind` through.
fn allows_type(types: Option<&[String]>, not_types: &[String], kind: &str) -> bool {
    !not_types.iter().any(|pattern| type_matches(pattern, kind))
        && types.is_none_or(|types| types.iter().any(|pattern| type_matches(pattern, kind)))
}

/// Whether a non-room `Filter` (presence, account data) lets events of `kind` through.
pub fn allows_kind(filter: &Filter, kind: &str) -> bool {
    allows_type(filter.types.as_deref(), &filter.not_types, kind)
}

/// Whether a `RoomEventFilter` lets an event of `kind` from `sender` through.
pub fn allows(filter: &RoomEventFilter, kind: &str, sender: &str) -> bool {
    if !allows_type(filter.types.as_deref(), &filter.not_types, kind) {
        return false;
    }
    if filter.not_senders.iter().any(|s| s.as_str() == sender) {
        return false;
    }
    if filter
        .senders
        .as_ref()
        .is_some_and(|senders| !senders.iter().any(|s| s.as_str() == sender))
    {
        return false;
    }
    true
}

/// Whether a `RoomEventFilter` lets a client-format event through.
pub fn allows_event(filter: &RoomEventFilter, event: &ClientEvent) -> bool {
    allows(filter, &event.kind, &event.sender)
}
