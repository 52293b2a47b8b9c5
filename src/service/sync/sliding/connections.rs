//! Sliding sync connections: what each `(user, device, conn_id)` has been sent, so that
//! the next response carries only what changed.
//!
//! A response's `pos` names the state the client will hold once it has that response.
//! The server keeps the state the client confirmed (the `pos` of its latest request)
//! and, for each response sent since, the change it would make (a [`Delta`]). The next
//! request names one of them: the confirmed `pos` again (the client retries: the
//! responses it never got are forgotten) or a pending one (applied, the others
//! forgotten). Anything else is `M_UNKNOWN_POS`, and the client starts over.
//!
//! The confirmed state is kept in the `sliding_sync` keyspace, one key per room sent, so
//! a restart does not cost clients a full resynchronisation; a connection unused for
//! [`EXPIRY_MS`] is forgotten.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use parking_lot::Mutex;
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    service::users::now_ms,
    storage::{Batch, Db, Keyspace, codec::Key},
};

/// How long an unused connection is kept (Synapse's figure).
pub const EXPIRY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Responses not yet confirmed kept per connection (a client retrying with an older one
/// than these starts over).
const PENDING_KEPT: usize = 4;

/// A connection unused this long leaves memory (it stays on disk, and is read again
/// when its client comes back).
const IDLE_IN_MEMORY_MS: u64 = 60 * 60 * 1000;

/// Who holds a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ConnKey {
    pub user: OwnedUserId,
    pub device: OwnedDeviceId,
    pub conn_id: String,
}

impl ConnKey {
    fn prefix(&self) -> Key {
        Key::new()
            .str(self.user.as_str())
            .str(self.device.as_str())
            .str(&self.conn_id)
    }
}

/// What a client has been sent of one room.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SentRoom {
    /// Up to which stream position the client has the room: `None` while the room is in
    /// the client's window ("live"), so it has it up to the connection's position.
    pub since: Option<u64>,
    /// The timeline limit it was first sent with: a larger one sends it afresh.
    pub timeline_limit: u64,
    /// The `required_state` entries it was sent with (their id in
    /// [`ConnState::required_sets`]): new ones send it afresh.
    pub required: u64,
    /// Members sent for `$LAZY` (timeline senders), not to be sent again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub lazy_members: BTreeSet<String>,
}

/// The state a client holds on a connection.
#[derive(Clone, Debug, Default)]
pub struct ConnState {
    /// The stream position live rooms are up to.
    pub position: u64,
    /// The typing serial the client is up to.
    pub typing: u64,
    pub rooms: HashMap<OwnedRoomId, SentRoom>,
    /// The room count of each list, as last sent.
    pub lists: BTreeMap<String, u64>,
    /// The `required_state` entries rooms were sent with, by id (a few per connection,
    /// shared by all its rooms).
    pub required_sets: HashMap<u64, Arc<RequiredSet>>,
}

/// `required_state` entries as a client wrote them.
pub type RequiredSet = BTreeSet<(String, String)>;

/// What one response changes of a connection's state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Delta {
    pub position: u64,
    pub typing: u64,
    /// A room's new entry, or `None` to forget it.
    pub rooms: Vec<(OwnedRoomId, Option<SentRoom>)>,
    pub lists: BTreeMap<String, u64>,
    /// `required_state` entries first used by this response.
    pub required_sets: Vec<(u64, RequiredSet)>,
}

impl ConnState {
    fn apply(&mut self, delta: &Delta) {
        self.position = delta.position;
        self.typing = delta.typing;
        self.lists.clone_from(&delta.lists);
        for (id, set) in &delta.required_sets {
            self.required_sets
                .entry(*id)
                .or_insert_with(|| Arc::new(set.clone()));
        }
        for (room_id, sent) in &delta.rooms {
            match sent {
                Some(sent) => {
                    self.rooms.insert(room_id.clone(), sent.clone());
                }
                None => {
                    self.rooms.remove(room_id);
                }
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ConnectionHeader {
    /// Tells this connection's records from those of one it replaced.
    generation: u64,
    pos: u64,
    position: u64,
    typing: u64,
    lists: BTreeMap<String, u64>,
    #[serde(default)]
    required_sets: Vec<(u64, RequiredSet)>,
    last_used_ms: u64,
}

/// A response sent and not yet confirmed, kept so that a restart in between does not
/// cost the client its connection.
#[derive(Serialize, Deserialize)]
struct PendingRecord {
    generation: u64,
    delta: Delta,
}

struct Connection {
    /// The user's rooms and memberships as last read, and the stream position they are
    /// known to be current at: read again only when the user's membership changed.
    memberships: Option<Arc<Memberships>>,
    generation: u64,
    /// The `pos` the client confirmed.
    pos: u64,
    state: Arc<ConnState>,
    pending: Vec<(u64, Arc<Delta>)>,
    last_used_ms: u64,
}

/// A user's rooms with their membership, current as of a stream position.
pub struct Memberships {
    pub as_of: u64,
    pub rooms: Vec<(OwnedRoomId, crate::service::rooms::Membership)>,
}

/// Where a request starts from: the state its `pos` names.
pub struct Start {
    key: ConnKey,
    pub state: Arc<ConnState>,
    /// No `pos`: a new connection (an initial sync).
    pub fresh: bool,
    /// The connection itself: a response goes to it even when a request without a
    /// position replaced it meanwhile (the client then hears `M_UNKNOWN_POS` next).
    connection: Arc<Mutex<Connection>>,
}

pub struct Connections {
    db: Arc<Db>,
    open: Mutex<HashMap<ConnKey, Arc<Mutex<Connection>>>>,
    /// When idle connections last left memory.
    swept_ms: std::sync::atomic::AtomicU64,
}

impl Connections {
    pub fn new(db: Arc<Db>) -> Self {
        Self {
            db,
            open: Mutex::default(),
            swept_ms: std::sync::atomic::AtomicU64::new(now_ms()),
        }
    }

    /// The state a request's `pos` names; a request without one starts a new connection
    /// (the old one under that name is dropped).
    pub fn start(&self, key: ConnKey, pos: Option<&str>) -> Result<Start> {
        self.sweep();
        let Some(pos) = pos else {
            self.forget(&key)?;
            let connection = Connection {
                memberships: None,
                generation: rand::random(),
                pos: 0,
                state: Arc::default(),
                pending: Vec::new(),
                last_used_ms: now_ms(),
            };
            let mut batch = self.db.batch();
            persist(&mut batch, &key, &connection, &Delta::default());
            self.db.write_unsynced(batch)?;
            let state = connection.state.clone();
            let connection = Arc::new(Mutex::new(connection));
            self.open.lock().insert(key.clone(), connection.clone());
            return Ok(Start {
                key,
                state,
                fresh: true,
                connection,
            });
        };
        let unknown = || {
            tracing::info!(
                user = %key.user,
                device = %key.device,
                conn_id = key.conn_id,
                pos,
                "sliding sync position unknown: the client starts over"
            );
            unknown_pos()
        };
        let connection = super::super::token::decimal(pos)
            .and_then(|pos| Some((pos, self.connection(&key).transpose()?)));
        let Some((pos, connection)) = connection else {
            return Err(unknown());
        };
        let shared = connection?;
        let mut connection = shared.lock();
        if now_ms().saturating_sub(connection.last_used_ms) > EXPIRY_MS {
            drop(connection);
            self.forget(&key)?;
            return Err(unknown());
        }
        if pos != connection.pos {
            let Some(index) = connection.pending.iter().position(|(p, _)| *p == pos) else {
                return Err(unknown());
            };
            let (_, delta) = connection.pending.swap_remove(index);
            Arc::make_mut(&mut connection.state).apply(&delta);
            connection.pos = pos;
            let mut batch = self.db.batch();
            for (other, _) in connection.pending.drain(..) {
                batch.delete(Keyspace::SlidingSync, pending_key(&key, other));
            }
            batch.delete(Keyspace::SlidingSync, pending_key(&key, pos));
            persist(&mut batch, &key, &connection, &delta);
            // Rebuildable: losing it costs the client a fresh start, never data.
            self.db.write_unsynced(batch)?;
        }
        connection.last_used_ms = now_ms();
        let state = connection.state.clone();
        drop(connection);
        Ok(Start {
            key,
            state,
            fresh: false,
            connection: shared,
        })
    }

    /// The user's memberships as this connection last read them.
    pub fn memberships(&self, start: &Start) -> Option<Arc<Memberships>> {
        start.connection.lock().memberships.clone()
    }

    pub fn keep_memberships(&self, start: &Start, memberships: Arc<Memberships>) {
        start.connection.lock().memberships = Some(memberships);
    }

    /// Records a response about to be sent and returns its `pos`.
    pub fn finish(&self, start: &Start, delta: Delta) -> Result<u64> {
        let mut connection = start.connection.lock();
        let pos = connection
            .pending
            .iter()
            .map(|(p, _)| *p)
            .max()
            .unwrap_or(0)
            .max(connection.pos)
            + 1;
        let mut batch = self.db.batch();
        if connection.pending.len() >= PENDING_KEPT {
            let (oldest, _) = connection.pending.remove(0);
            batch.delete(Keyspace::SlidingSync, pending_key(&start.key, oldest));
        }
        let record = PendingRecord {
            generation: connection.generation,
            delta,
        };
        batch.put_json(Keyspace::SlidingSync, pending_key(&start.key, pos), &record);
        self.db.write_unsynced(batch)?;
        connection.pending.push((pos, Arc::new(record.delta)));
        Ok(pos)
    }

    /// Drops connections idle for [`IDLE_IN_MEMORY_MS`] from memory, at most every few
    /// minutes.
    fn sweep(&self) {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        let last = self.swept_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < IDLE_IN_MEMORY_MS / 12
            || self
                .swept_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.open.lock().retain(|_, connection| {
            // One in use (locked) stays.
            connection.try_lock().is_none_or(|connection| {
                now.saturating_sub(connection.last_used_ms) < IDLE_IN_MEMORY_MS
            })
        });
    }

    /// Forgets connections unused for [`EXPIRY_MS`]; returns how many.
    pub fn expire(&self) -> Result<usize> {
        let now = now_ms();
        let mut expired = Vec::new();
        for (key, value) in self.db.scan_prefix(Keyspace::SlidingSync, &[])? {
            let Ok(header) = serde_json::from_slice::<ConnectionHeader>(&value) else {
                continue;
            };
            if now.saturating_sub(header.last_used_ms) > EXPIRY_MS
                && let Some(conn) = parse_header_key(&key)
            {
                expired.push(conn);
            }
        }
        for key in &expired {
            self.forget(key)?;
        }
        Ok(expired.len())
    }

    fn connection(&self, key: &ConnKey) -> Result<Option<Arc<Mutex<Connection>>>> {
        if let Some(connection) = self.open.lock().get(key) {
            return Ok(Some(connection.clone()));
        }
        let Some(connection) = self.load(key)? else {
            return Ok(None);
        };
        let connection = Arc::new(Mutex::new(connection));
        Ok(Some(
            self.open
                .lock()
                .entry(key.clone())
                .or_insert(connection)
                .clone(),
        ))
    }

    fn load(&self, key: &ConnKey) -> Result<Option<Connection>> {
        let prefix = key.prefix();
        let mut header = None;
        let mut rooms = HashMap::new();
        let mut pending = Vec::new();
        for (stored_key, value) in self.db.scan_prefix(Keyspace::SlidingSync, prefix.bytes())? {
            match &stored_key[prefix.bytes().len()..] {
                [0xFF] => header = serde_json::from_slice::<ConnectionHeader>(&value).ok(),
                [0xFF, pos @ ..] => {
                    if let (Ok(pos), Ok(record)) = (
                        crate::storage::codec::decode_u64(pos),
                        serde_json::from_slice::<PendingRecord>(&value),
                    ) {
                        pending.push((pos, record));
                    }
                }
                room => {
                    let room = room.strip_suffix(&[0xFF]).unwrap_or(room);
                    if let Ok(room_id) = std::str::from_utf8(room).map(OwnedRoomId::try_from)
                        && let Ok(room_id) = room_id
                        && let Ok(sent) = serde_json::from_slice::<SentRoom>(&value)
                    {
                        rooms.insert(room_id, sent);
                    }
                }
            }
        }
        Ok(header.map(|header| Connection {
            memberships: None,
            generation: header.generation,
            pos: header.pos,
            state: Arc::new(ConnState {
                position: header.position,
                typing: header.typing,
                rooms,
                lists: header.lists,
                required_sets: header
                    .required_sets
                    .into_iter()
                    .map(|(id, set)| (id, Arc::new(set)))
                    .collect(),
            }),
            pending: pending
                .into_iter()
                .filter(|(_, record)| record.generation == header.generation)
                .map(|(pos, record)| (pos, Arc::new(record.delta)))
                .collect(),
            last_used_ms: header.last_used_ms,
        }))
    }

    fn forget(&self, key: &ConnKey) -> Result<()> {
        self.open.lock().remove(key);
        let prefix = key.prefix();
        let mut batch = self.db.batch();
        for (stored_key, _) in self.db.scan_prefix(Keyspace::SlidingSync, prefix.bytes())? {
            batch.delete(Keyspace::SlidingSync, stored_key);
        }
        if !batch.is_empty() {
            self.db.write_unsynced(batch)?;
        }
        Ok(())
    }
}

fn persist(batch: &mut Batch, key: &ConnKey, connection: &Connection, delta: &Delta) {
    let prefix = key.prefix();
    let header = ConnectionHeader {
        generation: connection.generation,
        pos: connection.pos,
        position: connection.state.position,
        typing: connection.state.typing,
        lists: connection.state.lists.clone(),
        required_sets: connection
            .state
            .required_sets
            .iter()
            .map(|(id, set)| (*id, (**set).clone()))
            .collect(),
        last_used_ms: now_ms(),
    };
    batch.put_json(Keyspace::SlidingSync, prefix.clone().str(""), &header);
    for (room_id, sent) in &delta.rooms {
        let room_key = prefix.clone().str(room_id.as_str());
        match sent {
            Some(sent) => batch.put_json(Keyspace::SlidingSync, room_key, sent),
            None => batch.delete(Keyspace::SlidingSync, room_key),
        }
    }
}

/// Where a response not yet confirmed is kept: `user ‖ device ‖ conn_id ‖ "" ‖ pos`.
fn pending_key(key: &ConnKey, pos: u64) -> Key {
    key.prefix().str("").u64(pos)
}

/// The connection a header key names (`user ‖ device ‖ conn_id ‖ ""`).
fn parse_header_key(key: &[u8]) -> Option<ConnKey> {
    let mut reader = crate::storage::codec::KeyReader::new(key);
    let user = OwnedUserId::try_from(reader.str().ok()?).ok()?;
    let device = OwnedDeviceId::from(reader.str().ok()?);
    let conn_id = reader.str().ok()?.to_owned();
    reader.str().ok()?.is_empty().then_some(ConnKey {
        user,
        device,
        conn_id,
    })
}

fn unknown_pos() -> Error {
    Error::new(
        ErrorKind::UnknownPos,
        "Unknown position: start the connection again without one",
    )
}

#[cfg(test)]
mod tests {
    use ruma::RoomId;

    use super::*;

    fn key() -> ConnKey {
        ConnKey {
            user: ruma::owned_user_id!("@alice:example.org"),
            device: "PHONE".into(),
            conn_id: "room-list".to_owned(),
        }
    }

    fn delta(position: u64, room: &str) -> Delta {
        Delta {
            position,
            rooms: vec![(
                OwnedRoomId::try_from(room).unwrap(),
                Some(SentRoom {
                    timeline_limit: 1,
                    ..SentRoom::default()
                }),
            )],
            ..Delta::default()
        }
    }

    fn is_unknown_pos(result: Result<Start>) -> bool {
        matches!(result, Err(error) if error.kind() == Some(&ErrorKind::UnknownPos))
    }

    #[test]
    fn positions_confirm_retry_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let connections = Connections::new(db.clone());
        let first = connections.start(key(), None).unwrap();
        assert!(first.fresh);
        let pos = connections.finish(&first, delta(10, "!a:x")).unwrap();
        // The client confirms it: the room is now the client's, up to 10.
        let second = connections.start(key(), Some(&pos.to_string())).unwrap();
        assert_eq!(second.state.position, 10);
        assert!(
            second
                .state
                .rooms
                .contains_key(<&RoomId>::try_from("!a:x").unwrap())
        );
        let lost = connections.finish(&second, delta(20, "!b:x")).unwrap();
        // The response `lost` never arrived: the client asks again from `pos`.
        let retry = connections.start(key(), Some(&pos.to_string())).unwrap();
        assert_eq!(retry.state.position, 10);
        assert!(
            !retry
                .state
                .rooms
                .contains_key(<&RoomId>::try_from("!b:x").unwrap())
        );
        let next = connections.finish(&retry, delta(30, "!c:x")).unwrap();
        assert_ne!(next, lost);
        // Anything else starts over.
        assert!(is_unknown_pos(connections.start(key(), Some("999"))));
        assert!(is_unknown_pos(connections.start(key(), Some("01"))));

        // A restart between sending `next` and its confirmation keeps both positions.
        drop(connections);
        let connections = Connections::new(db);
        let resumed = connections.start(key(), Some(&next.to_string())).unwrap();
        assert_eq!(resumed.state.position, 30);
        assert!(
            resumed
                .state
                .rooms
                .contains_key(<&RoomId>::try_from("!c:x").unwrap())
        );
    }

    #[test]
    fn a_new_connection_under_the_same_name_makes_the_old_positions_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let connections = Connections::new(Arc::new(Db::open(dir.path()).unwrap()));
        let old = connections.start(key(), None).unwrap();
        let old_pos = connections.finish(&old, delta(10, "!a:x")).unwrap();
        let old = connections
            .start(key(), Some(&old_pos.to_string()))
            .unwrap();
        let replacement = connections.start(key(), None).unwrap();
        // A response of the old connection, finished after the replacement, is not the
        // new connection's.
        let stale = connections.finish(&old, delta(20, "!b:x")).unwrap();
        let fresh = connections.finish(&replacement, delta(15, "!c:x")).unwrap();
        let resumed = connections.start(key(), Some(&fresh.to_string())).unwrap();
        assert!(
            resumed
                .state
                .rooms
                .contains_key(<&RoomId>::try_from("!c:x").unwrap())
        );
        assert!(
            !resumed
                .state
                .rooms
                .contains_key(<&RoomId>::try_from("!a:x").unwrap())
        );
        if stale != fresh {
            assert!(is_unknown_pos(
                connections.start(key(), Some(&stale.to_string()))
            ));
        }
    }
}
