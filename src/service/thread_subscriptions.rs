//! Thread subscriptions (MSC4306) and their change stream (MSC4308): the threads each
//! user follows. A subscription is manual (the user chose it) or automatic (their client
//! made it because of an event in the thread, named in the request); an unsubscription
//! remembers when it was made, so an automatic subscription caused by an event the user
//! had already seen when they unsubscribed is refused. With subscriptions on, a message in
//! a thread notifies only its subscribers (and those it mentions), through the
//! `postcontent` push rules (`push/rules.rs`).

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use parking_lot::Mutex;
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    api::client::threads::get_thread_subscriptions_changes::unstable::{
        ThreadSubscription, ThreadUnsubscription,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    Result,
    service::stream::Stream,
    storage::{
        Db, Keyspace,
        codec::{Key, KeyReader, decode_json},
    },
};

/// A user's standing with one thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Subscribed {
        automatic: bool,
    },
    /// Unsubscribed when the stream stood at `at`: automatic subscriptions caused by
    /// events up to there are refused.
    Unsubscribed {
        at: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Stored {
    standing: Standing,
    /// The stream position of the change: its bump stamp.
    position: u64,
}

#[derive(Serialize, Deserialize)]
struct ChangeRecord {
    room_id: OwnedRoomId,
    root: OwnedEventId,
}

/// The latest change of one thread's subscription.
#[derive(Clone, Debug)]
pub struct Change {
    pub room_id: OwnedRoomId,
    pub root: OwnedEventId,
    pub standing: Standing,
    pub position: u64,
}

/// How a subscription is asked for.
#[derive(Clone, Copy, Debug)]
pub enum Asked {
    Manual,
    /// By the client, because of an event in the thread at this stream position.
    Automatic {
        cause: u64,
    },
}

/// What a subscription request did.
#[derive(Debug, PartialEq, Eq)]
pub enum Subscribed {
    Changed,
    /// Already subscribed (an automatic request never turns a manual subscription into
    /// an automatic one).
    Unchanged,
    /// An automatic request caused by an event from before the user unsubscribed.
    ConflictsWithUnsubscription,
}

/// Changes per page when the client names no limit, and the most it may ask.
pub const CHANGES_LIMIT: usize = 100;
pub const CHANGES_MOST: usize = 1000;

/// A page of changes: `ts_{before}_{after}`, the changes with a position in
/// `(after, before)`. A token of another shape (a sliding sync `pos` a client gives as
/// `to`) bounds nothing: the lower bound then comes from the page token itself.
fn page_token(before: u64, after: u64) -> String {
    format!("ts_{before}_{after}")
}

/// `(before, after)` of a [`page_token`].
pub fn parse_page_token(token: &str) -> Option<(u64, u64)> {
    let (before, after) = token.strip_prefix("ts_")?.split_once('_')?;
    Some((before.parse().ok()?, after.parse().ok()?))
}

type ByThread<T> = BTreeMap<OwnedRoomId, BTreeMap<OwnedEventId, T>>;

/// Changes as clients receive them: subscriptions and unsubscriptions, by room and root,
/// each with its bump stamp.
pub fn listed(
    changes: Vec<Change>,
) -> (ByThread<ThreadSubscription>, ByThread<ThreadUnsubscription>) {
    let (mut subscribed, mut unsubscribed) = (ByThread::new(), ByThread::new());
    for change in changes {
        let bump_stamp = UInt::new(change.position).unwrap_or(UInt::MAX);
        match change.standing {
            Standing::Subscribed { automatic } => {
                subscribed
                    .entry(change.room_id)
                    .or_default()
                    .insert(change.root, ThreadSubscription::new(automatic, bump_stamp));
            }
            Standing::Unsubscribed { .. } => {
                unsubscribed
                    .entry(change.room_id)
                    .or_default()
                    .insert(change.root, ThreadUnsubscription::new(bump_stamp));
            }
        }
    }
    (subscribed, unsubscribed)
}

pub struct ThreadSubscriptions {
    db: Arc<Db>,
    stream: Arc<Stream>,
    /// Serialises read-modify-writes of a subscription.
    writing: Mutex<()>,
}

fn subscription_key(user: &UserId, room_id: &RoomId, root: &EventId) -> Key {
    Key::new()
        .str(user.as_str())
        .str(room_id.as_str())
        .str(root.as_str())
}

fn subscribers_prefix(room_id: &RoomId, root: &EventId) -> Key {
    Key::new().str(room_id.as_str()).str(root.as_str())
}

impl ThreadSubscriptions {
    pub fn new(db: Arc<Db>, stream: Arc<Stream>) -> Self {
        Self {
            db,
            stream,
            writing: Mutex::new(()),
        }
    }

    fn stored(&self, user: &UserId, room_id: &RoomId, root: &EventId) -> Result<Option<Stored>> {
        Ok(self.db.get_json(
            Keyspace::ThreadSubscriptions,
            subscription_key(user, room_id, root).bytes(),
        )?)
    }

    /// The user's standing with a thread, if they ever subscribed or unsubscribed.
    pub fn standing(
        &self,
        user: &UserId,
        room_id: &RoomId,
        root: &EventId,
    ) -> Result<Option<Standing>> {
        Ok(self
            .stored(user, room_id, root)?
            .map(|stored| stored.standing))
    }

    pub fn subscribe(
        &self,
        user: &UserId,
        room_id: &RoomId,
        root: &EventId,
        asked: Asked,
    ) -> Result<Subscribed> {
        let _writing = self.writing.lock();
        let previous = self.stored(user, room_id, root)?;
        let automatic = match (asked, previous.as_ref().map(|stored| stored.standing)) {
            (_, Some(Standing::Subscribed { automatic: false }))
            | (Asked::Automatic { .. }, Some(Standing::Subscribed { .. })) => {
                return Ok(Subscribed::Unchanged);
            }
            (Asked::Automatic { cause }, Some(Standing::Unsubscribed { at })) if cause <= at => {
                return Ok(Subscribed::ConflictsWithUnsubscription);
            }
            (Asked::Automatic { .. }, _) => true,
            (Asked::Manual, _) => false,
        };
        self.record(
            user,
            room_id,
            root,
            previous,
            Standing::Subscribed { automatic },
        )?;
        Ok(Subscribed::Changed)
    }

    /// Unsubscribes the user; `false` when they were not subscribed.
    pub fn unsubscribe(&self, user: &UserId, room_id: &RoomId, root: &EventId) -> Result<bool> {
        let _writing = self.writing.lock();
        let previous = self.stored(user, room_id, root)?;
        if !matches!(
            previous.as_ref().map(|stored| stored.standing),
            Some(Standing::Subscribed { .. })
        ) {
            return Ok(false);
        }
        // Every event the user could have seen is at or below the frontier.
        let at = self.stream.frontier();
        self.record(user, room_id, root, previous, Standing::Unsubscribed { at })?;
        Ok(true)
    }

    fn record(
        &self,
        user: &UserId,
        room_id: &RoomId,
        root: &EventId,
        previous: Option<Stored>,
        standing: Standing,
    ) -> Result<()> {
        let permit = self.stream.next();
        let position = permit.position();
        let mut batch = self.db.batch();
        if let Some(previous) = previous {
            batch.delete(
                Keyspace::ThreadSubscriptionChanges,
                Key::new().str(user.as_str()).u64(previous.position),
            );
        }
        batch.put_json(
            Keyspace::ThreadSubscriptions,
            subscription_key(user, room_id, root),
            &Stored { standing, position },
        );
        batch.put_json(
            Keyspace::ThreadSubscriptionChanges,
            Key::new().str(user.as_str()).u64(position),
            &ChangeRecord {
                room_id: room_id.to_owned(),
                root: root.to_owned(),
            },
        );
        let subscriber = subscribers_prefix(room_id, root).str(user.as_str());
        match standing {
            Standing::Subscribed { .. } => batch.put(Keyspace::ThreadSubscribers, subscriber, []),
            Standing::Unsubscribed { .. } => batch.delete(Keyspace::ThreadSubscribers, subscriber),
        }
        permit.persist_in(&mut batch);
        self.db.write(batch)?;
        drop(permit);
        self.stream.notify([user]);
        Ok(())
    }

    /// The users subscribed to a thread.
    pub fn subscribers(&self, room_id: &RoomId, root: &EventId) -> Result<HashSet<OwnedUserId>> {
        let prefix = subscribers_prefix(room_id, root);
        let mut out = HashSet::new();
        for (key, _) in self
            .db
            .scan_prefix(Keyspace::ThreadSubscribers, prefix.bytes())?
        {
            let rest = &key[prefix.bytes().len()..];
            if let Ok(user) = OwnedUserId::try_from(KeyReader::new(rest).str()?) {
                out.insert(user);
            }
        }
        Ok(out)
    }

    /// The user's latest change per thread with a position in `(after, before)`, newest
    /// first, at most `limit`; and the [`page_token`] of the rest when older ones remain
    /// in that range.
    pub fn changes(
        &self,
        user: &UserId,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<(Vec<Change>, Option<String>)> {
        let prefix = Key::new().str(user.as_str());
        let start = prefix.clone().u64(before.saturating_sub(1));
        let mut records = Vec::new();
        let mut more = false;
        let mut failure = None;
        self.db.for_each_from(
            Keyspace::ThreadSubscriptionChanges,
            prefix.bytes(),
            start.bytes(),
            false,
            |key, value| {
                let position = match KeyReader::new(&key[prefix.bytes().len()..]).u64() {
                    Ok(position) => position,
                    Err(error) => {
                        failure = Some(error);
                        return false;
                    }
                };
                // The walk starts below `before`.
                if position <= after {
                    return false;
                }
                if records.len() >= limit {
                    more = true;
                    return false;
                }
                records.push((position, value.to_vec()));
                true
            },
        )?;
        if let Some(error) = failure {
            return Err(error.into());
        }
        let rest = records
            .last()
            .filter(|_| more)
            .map(|(oldest, _)| page_token(*oldest, after));
        let mut out = Vec::with_capacity(records.len());
        for (position, value) in records {
            let record: ChangeRecord = decode_json(&value)?;
            let Some(stored) = self.stored(user, &record.room_id, &record.root)? else {
                continue;
            };
            out.push(Change {
                room_id: record.room_id,
                root: record.root,
                standing: stored.standing,
                position,
            });
        }
        Ok((out, rest))
    }
}

#[cfg(test)]
mod tests {
    use ruma::{event_id, room_id, user_id};

    use super::*;

    fn open() -> (tempfile::TempDir, ThreadSubscriptions) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let stream = Stream::load(&db).unwrap();
        (dir, ThreadSubscriptions::new(db, stream))
    }

    #[test]
    fn manual_wins_over_automatic_and_an_unsubscription_refuses_older_causes() {
        let (_dir, subscriptions) = open();
        let (alice, room, root) = (user_id!("@alice:x"), room_id!("!r:x"), event_id!("$root"));
        let automatic = |cause| Asked::Automatic { cause };
        assert_eq!(
            subscriptions
                .subscribe(alice, room, root, automatic(1))
                .unwrap(),
            Subscribed::Changed
        );
        assert_eq!(
            subscriptions.standing(alice, room, root).unwrap(),
            Some(Standing::Subscribed { automatic: true })
        );
        subscriptions
            .subscribe(alice, room, root, Asked::Manual)
            .unwrap();
        assert_eq!(
            subscriptions
                .subscribe(alice, room, root, automatic(2))
                .unwrap(),
            Subscribed::Unchanged
        );
        assert_eq!(
            subscriptions.standing(alice, room, root).unwrap(),
            Some(Standing::Subscribed { automatic: false })
        );
        assert!(
            subscriptions
                .subscribers(room, root)
                .unwrap()
                .contains(alice)
        );

        assert!(subscriptions.unsubscribe(alice, room, root).unwrap());
        assert!(!subscriptions.unsubscribe(alice, room, root).unwrap());
        assert!(subscriptions.subscribers(room, root).unwrap().is_empty());
        let Some(Standing::Unsubscribed { at }) =
            subscriptions.standing(alice, room, root).unwrap()
        else {
            panic!("unsubscribed");
        };
        assert_eq!(
            subscriptions
                .subscribe(alice, room, root, automatic(at))
                .unwrap(),
            Subscribed::ConflictsWithUnsubscription
        );
        assert_eq!(
            subscriptions
                .subscribe(alice, room, root, automatic(at + 100))
                .unwrap(),
            Subscribed::Changed
        );
    }

    #[test]
    fn changes_page_backwards_with_the_latest_change_per_thread() {
        let (_dir, subscriptions) = open();
        let (alice, room) = (user_id!("@alice:x"), room_id!("!r:x"));
        let roots = [event_id!("$a"), event_id!("$b"), event_id!("$c")];
        for root in roots {
            subscriptions
                .subscribe(alice, room, root, Asked::Manual)
                .unwrap();
        }
        subscriptions.unsubscribe(alice, room, roots[0]).unwrap();
        let (all, rest) = subscriptions.changes(alice, 0, u64::MAX, 10).unwrap();
        assert!(rest.is_none());
        let order: Vec<&str> = all.iter().map(|change| change.root.as_str()).collect();
        assert_eq!(order, ["$a", "$c", "$b"]);
        assert!(matches!(all[0].standing, Standing::Unsubscribed { .. }));

        let (first, token) = subscriptions.changes(alice, 0, u64::MAX, 2).unwrap();
        assert_eq!(first.len(), 2);
        let (before, after) = parse_page_token(&token.expect("more to come")).unwrap();
        assert_eq!((before, after), (first[1].position, 0));
        let (rest, token) = subscriptions.changes(alice, after, before, 2).unwrap();
        assert!(token.is_none());
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].root, "$b");
        let (bounded, _) = subscriptions
            .changes(alice, rest[0].position, u64::MAX, 10)
            .unwrap();
        assert_eq!(bounded.len(), 2);
    }
}
