//! Reports of abusive content (an event, a room or a user) to this server's
//! administrators, kept in arrival order.

use std::sync::Arc;

use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use parking_lot::Mutex;

use crate::{
    Result,
    storage::{
        Db, Keyspace,
        codec::{Key, KeyReader},
    },
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

/// A stored report with its id (the administrators' handle on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filed {
    pub id: u64,
    pub report: Report,
}

/// Which event reports an administrator lists.
#[derive(Debug, Clone, Default)]
pub struct EventReportQuery {
    /// Only reports by this user.
    pub reporter: Option<OwnedUserId>,
    /// Only reports of events of this room.
    pub room_id: Option<OwnedRoomId>,
    /// Newest first (the default) or oldest first.
    pub oldest_first: bool,
    /// How many matching reports to skip.
    pub from: usize,
    pub limit: usize,
}

/// Reports are keyed by their id, which only grows. Reports kept before ids existed
/// are keyed by their arrival time and a random suffix; the time serves as their id.
pub struct Reports {
    db: Arc<Db>,
    next_id: Mutex<u64>,
}

impl Reports {
    pub fn new(db: Arc<Db>) -> Result<Self> {
        let mut last = 0;
        let mut failure = None;
        db.for_each_from(Keyspace::Reports, &[], &[0xff; 9], false, |key, _| {
            match KeyReader::new(key).u64() {
                Ok(id) => last = id,
                Err(error) => failure = Some(error),
            }
            false
        })?;
        if let Some(error) = failure {
            return Err(error.into());
        }
        Ok(Self {
            db,
            next_id: Mutex::new(last + 1),
        })
    }

    /// Files a report, durably, and logs it for the administrators; returns its id.
    pub fn file(
        &self,
        reporter: &ruma::UserId,
        reported: Reported,
        reason: Option<&str>,
    ) -> Result<u64> {
        let report = Report {
            reporter: reporter.to_owned(),
            reported,
            reason: reason.map(str::to_owned),
            received_at: MilliSecondsSinceUnixEpoch::now(),
        };
        let mut next_id = self.next_id.lock();
        let id = *next_id;
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Reports, Key::new().u64(id), &report);
        self.db.write(batch)?;
        *next_id += 1;
        drop(next_id);
        tracing::warn!(id, reporter = %report.reporter, reported = ?report.reported, reason = ?report.reason, "content reported");
        Ok(id)
    }

    /// Every report, oldest first.
    pub fn all(&self) -> Result<Vec<Filed>> {
        self.db
            .scan_prefix(Keyspace::Reports, &[])?
            .into_iter()
            .map(|(key, value)| {
                Ok(Filed {
                    id: KeyReader::new(&key).u64()?,
                    report: crate::storage::codec::decode_json(&value)?,
                })
            })
            .collect()
    }

    /// A page of the event reports the query matches, and how many match in all.
    pub fn event_reports(&self, query: &EventReportQuery) -> Result<(Vec<Filed>, usize)> {
        let mut matching: Vec<Filed> = self
            .all()?
            .into_iter()
            .filter(|filed| match &filed.report.reported {
                Reported::Event { room_id, .. } => {
                    query
                        .room_id
                        .as_ref()
                        .is_none_or(|wanted| wanted == room_id)
                        && query
                            .reporter
                            .as_ref()
                            .is_none_or(|wanted| *wanted == filed.report.reporter)
                }
                _ => false,
            })
            .collect();
        if !query.oldest_first {
            matching.reverse();
        }
        let total = matching.len();
        let page = matching
            .into_iter()
            .skip(query.from)
            .take(query.limit)
            .collect();
        Ok((page, total))
    }

    /// One report by its id.
    pub fn get(&self, id: u64) -> Result<Option<Filed>> {
        Ok(self.entry(id)?.map(|(_, report)| Filed { id, report }))
    }

    /// Removes a report (handled); whether there was one.
    pub fn delete(&self, id: u64) -> Result<bool> {
        let Some((key, _)) = self.entry(id)? else {
            return Ok(false);
        };
        let mut batch = self.db.batch();
        batch.delete(Keyspace::Reports, key);
        self.db.write(batch)?;
        Ok(true)
    }

    fn entry(&self, id: u64) -> Result<Option<(Vec<u8>, Report)>> {
        let prefix = Key::new().u64(id);
        match self
            .db
            .scan_prefix(Keyspace::Reports, prefix.bytes())?
            .into_iter()
            .next()
        {
            Some((key, value)) => Ok(Some((key, crate::storage::codec::decode_json(&value)?))),
            None => Ok(None),
        }
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
            let reports = Reports::new(Arc::new(Db::open(dir.path()).unwrap())).unwrap();
            reports
                .file(user_id!("@a:x"), first.clone(), Some("spam"))
                .unwrap();
            reports
                .file(user_id!("@b:x"), second.clone(), None)
                .unwrap();
        }
        let reports = Reports::new(Arc::new(Db::open(dir.path()).unwrap())).unwrap();
        let kept: Vec<_> = reports
            .all()
            .unwrap()
            .into_iter()
            .map(|filed| {
                let report = filed.report;
                (
                    filed.id,
                    report.reporter.to_string(),
                    report.reported,
                    report.reason,
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                (1, "@a:x".to_owned(), first, Some("spam".to_owned())),
                (2, "@b:x".to_owned(), second, None),
            ]
        );
    }

    #[test]
    fn reports_kept_by_arrival_time_keep_that_as_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let old = Report {
            reporter: owned_user_id!("@a:x"),
            reported: Reported::Room {
                room_id: owned_room_id!("!r:x"),
            },
            reason: None,
            received_at: MilliSecondsSinceUnixEpoch(1_700_000_000_000u64.try_into().unwrap()),
        };
        let mut batch = db.batch();
        batch.put_json(
            Keyspace::Reports,
            Key::new().u64(1_700_000_000_000).str("abcdefabcdef"),
            &old,
        );
        db.write(batch).unwrap();
        let reports = Reports::new(db).unwrap();
        assert_eq!(reports.get(1_700_000_000_000).unwrap().unwrap().report, old);
        let id = reports
            .file(user_id!("@b:x"), old.reported.clone(), None)
            .unwrap();
        assert_eq!(id, 1_700_000_000_001);
        assert!(reports.delete(1_700_000_000_000).unwrap());
        assert!(reports.get(1_700_000_000_000).unwrap().is_none());
        assert_eq!(reports.all().unwrap().len(), 1);
    }
}
