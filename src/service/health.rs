//! Whether the server can serve (`/ready`), and the storage figures the metrics read at
//! each scrape.

use std::sync::{Arc, Weak};

use crate::storage::Db;

/// RocksDB properties shown as `palisade_storage_property{property=...}`.
const PROPERTIES: &[&str] = &[
    "rocksdb.estimate-live-data-size",
    "rocksdb.total-sst-files-size",
    "rocksdb.cur-size-all-mem-tables",
    "rocksdb.block-cache-usage",
    "rocksdb.estimate-num-keys",
    "rocksdb.num-running-compactions",
    "rocksdb.num-running-flushes",
    "rocksdb.estimate-pending-compaction-bytes",
];

pub struct Health {
    db: Arc<Db>,
}

impl Health {
    /// Registers the storage figures with the metrics.
    pub fn new(db: Arc<Db>) -> Self {
        let weak: Weak<Db> = Arc::downgrade(&db);
        crate::metrics::metrics().on_scrape(move || {
            if let Some(db) = weak.upgrade() {
                for property in PROPERTIES {
                    if let Some(value) = db.property(property) {
                        crate::metrics::metrics().storage_property(property, value);
                    }
                }
            }
        });
        Self { db }
    }

    /// Whether the database answers.
    pub fn ready(&self) -> bool {
        self.db.answers()
    }
}
