//! Reports of abusive content (an event, a room or a user) to this server's
//! administrators, kept in arrival order.

use std::sync::Arc;

use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::{
    Result,
    storage::{Db, Keyspace, codec::Key},
};

/// What was reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reported {
    Event {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
    },
    Room {
        room_id: OwnedRoomId,
    },
    User {
        user_id: OwnedUserId,
    },
}

/// One report as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub reporter: OwnedUserId,
    #[serde(flatten)]
    pub reported: Reported,
    pub reason: Option<String>,
    pub received_at: MilliSecondsSinceUnixEpoch,
}

pub struct Reports {
    db: Arc<Db>,
}

impl Reports {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// Files a report, durably, and logs it for the administrators.
    pub fn file(
        &self,
        reporter: &ruma::UserId,
        reported: Reported,
        reason: Option<&str>,
    ) -> Result<()> {
        let report = Report {
            reporter: reporter.to_owned(),
            reported,
            reason: reason.map(str::to_owned),
            received_at: MilliSecondsSinceUnixEpoch::now(),
        };
        let key = Key::new()
            .u64(u64::from(report.received_at.0))
            .str(&crate::service::users::random_string(12));
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Reports, key, &report);
        self.db.write(batch)?;
        tracing::warn!(reporter = %report.reporter, reported = ?report.reported, reason = ?report.reason, "content reported");
        Ok(())
    }

    /// Every report, oldest first.
    pub fn all(&self) -> Result<Vec<Report>> {
        self.db
            .scan_prefix(Keyspace::Reports, &[])?
            .into_iter()
            .map(|(_, value)| Ok(crate::storage::codec::decode_json(&value)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::{owned_room_id, owned_user_id, user_id};

    #[test]
    fn reports_are_kept_in_arrival_order_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (
            Reported::Room {
                room_id: owned_room_id!("!r:x"),
            },
            Reported::User {
                user_id: owned_user_id!("@m:y"),
            },
        );
        {
            let reports = Reports::new(Arc::new(Db::open(dir.path()).unwrap()));
            reports
                .file(user_id!("@a:x"), first.clone(), Some("spam"))
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
            reports
                .file(user_id!("@b:x"), second.clone(), None)
                .unwrap();
        }
        let reports = Reports::new(Arc::new(Db::open(dir.path()).unwrap()));
        let kept: Vec<_> = reports
            .all()
            .unwrap()
            .into_iter()
            .map(|report| (report.reporter.to_string(), report.reported, report.reason))
            .collect();
        assert_eq!(
            kept,
            [
                ("@a:x".to_owned(), first, Some("spam".to_owned())),
                ("@b:x".to_owned(), second, None),
            ]
        );
    }
}
