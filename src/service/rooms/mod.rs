//! Rooms: the signed event DAG, its state, memberships, aliases and the directory.
//!
//! Reads live here; writing an event goes through [`timeline`] (build, sign, authorise,
//! stage, commit). Every write to a room happens under that room's lock
//! (`Rooms::lock`), taken by the writers only: `timeline/` for local events,
//! `incoming.rs` for other servers' events and joins through them, `remote_invite.rs`
//! for invites and knocks across servers; so a room's events are linear.

pub mod aggregations;
pub mod alias;
pub mod client;
pub mod create;
pub mod event_cache;
pub mod history;
pub mod incoming;
pub mod membership;
pub mod pdu;
mod power;
mod relation_rules;
pub mod relations;
pub mod remote_invite;
mod resolution;
pub mod restricted;
pub mod retention;
pub mod state;
pub mod summary;
pub mod timeline;
mod timestamp;
pub mod upgrade;
pub mod visibility;

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId,
    UserId,
    events::room::{history_visibility::HistoryVisibility, member::MembershipState},
    room_version_rules::RoomVersionRules,
};
use serde::{Deserialize, Serialize};

use self::{
    event_cache::EventCache,
    pdu::{Pdu, Served, StoredPdu},
    state::{StateMap, StateStore},
};
use crate::{
    Error, Result,
    service::{federation::queue::OutgoingQueue, stream::Stream},
    storage::{
        Db, Keyspace,
        codec::{Key, KeyReader, decode_membership},
    },
};

/// Room versions this server can create and join.
pub const ROOM_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// What the server keeps about each room.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: RoomVersionId,
    /// The current state.
    pub state_group: u64,
    /// The forward extremities: the events with no children yet.
    pub extremities: Vec<OwnedEventId>,
    pub depth: u64,
    /// Stream position of the latest event.
    pub last_position: u64,
    /// Stream position of the latest event that moves the room up a room list (a
    /// message, not a reaction or a state change: [`bumps`]); 0 when none was written
    /// since this field exists.
    #[serde(default)]
    pub bump_position: u64,
}

/// Whether an event moves its room to the top of a room list sorted by activity: what
/// people send (messages, stickers, calls, polls, live locations) and a room's creation;
/// not reactions, edits' state, receipts or membership. An event whose content is empty
/// (redacted) does not.
pub fn bumps(
    kind: &ruma::events::TimelineEventType,
    content: &serde_json::value::RawValue,
) -> bool {
    let bumping = matches!(
        kind.to_string().as_str(),
        "m.room.create"
            | "m.room.message"
            | "m.room.encrypted"
            | "m.sticker"
            | "m.call.invite"
            | "m.poll.start"
            | "org.matrix.msc3381.poll.start"
            | "m.beacon_info"
            | "org.matrix.msc3672.beacon_info"
    );
    bumping && content.get().trim() != "{}"
}

/// Who hears of a room's new event: the local users whose syncs it wakes and the other
/// servers it is sent to.
#[derive(Clone, Debug, Default)]
pub struct Audience {
    pub users: Vec<OwnedUserId>,
    pub servers: Vec<OwnedServerName>,
}

/// A user's membership in a room, as indexed for `/sync` and `joined_rooms`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Membership {
    pub membership: MembershipState,
    /// The latest member event (a profile change makes a new one).
    pub event_id: OwnedEventId,
    /// The stream position at which the membership took its current value.
    pub position: u64,
}

pub struct Rooms {
    db: Arc<Db>,
    /// The rooms that set a retention policy (`retention_rooms`), kept in memory: only
    /// these rooms' messages are checked against a lifetime when served.
    retention_rooms: parking_lot::RwLock<std::collections::HashSet<OwnedRoomId>>,
    stream: Arc<Stream>,
    pub state: StateStore,
    server_name: OwnedServerName,
    signing_key: Arc<palisade_federation::SigningKey>,
    queue: Arc<OutgoingQueue>,
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// Messages waiting for their room's next batch (see `append`).
    queues: Mutex<HashMap<OwnedRoomId, Vec<timeline::Queued>>>,
    /// Parsed state events, for authorisation and visibility checks.
    pub(super) state_events: Arc<EventCache<Pdu>>,
    /// Timeline events as clients are served them.
    pub(super) served: Arc<EventCache<Served>>,
    /// Each room's `bump_position` as far as read or written (room lists sort by it).
    bumps: Mutex<HashMap<OwnedRoomId, u64>>,
    /// What every event entering a timeline updates beside it (`timeline/effects.rs`).
    indexes: Arc<[Arc<dyn timeline::TimelineIndex>]>,
    /// Which senders' messages each room's current state authorises.
    authorised: Arc<timeline::Authorised>,
    /// Moved whenever an alias is set, removed or moved: what is kept of a room's
    /// aliases is stale once it moves.
    alias_changes: std::sync::atomic::AtomicU64,
}

/// Bytes of parsed state events kept in memory.
const STATE_EVENTS_KEPT: usize = 8 << 20;
/// Bytes of timeline events kept in memory ready to be served (about 1 KiB a message):
/// the recent history that every member's sync reads.
const SERVED_EVENTS_KEPT: usize = 16 << 20;
/// Events larger than this are served from storage each time: a few big ones would
/// crowd out thousands of messages.
const SERVED_EVENT_MOST: usize = 8 << 10;

impl Rooms {
    pub fn new(
        db: Arc<Db>,
        stream: Arc<Stream>,
        server_name: OwnedServerName,
        signing_key: Arc<palisade_federation::SigningKey>,
        queue: Arc<OutgoingQueue>,
        indexes: Vec<Arc<dyn timeline::TimelineIndex>>,
    ) -> Result<Self> {
        let mut indexes = indexes;
        indexes.insert(0, Arc::new(relations::RelationsIndex));
        let retention_rooms = retention::load_rooms(&db)?;
        Ok(Self {
            retention_rooms: parking_lot::RwLock::new(retention_rooms),
            indexes: indexes.into(),
            state: StateStore::load(db.clone())?,
            db,
            stream,
            server_name,
            signing_key,
            queue,
            locks: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            state_events: Arc::new(EventCache::new(STATE_EVENTS_KEPT, Pdu::weight)),
            served: Arc::new(EventCache::new(SERVED_EVENTS_KEPT, Served::weight)),
            bumps: Mutex::default(),
            authorised: Arc::default(),
            alias_changes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This server's name.
    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    /// The stream position of a room's latest event that moves it up a room list
    /// ([`bumps`]); for a room written before that was kept, its latest event's.
    pub fn bump_position(&self, room_id: &RoomId) -> Result<u64> {
        if let Some(bump) = self.bumps.lock().get(room_id) {
            return Ok(*bump);
        }
        let bump = self.room(room_id)?.map_or(0, |record| {
            if record.bump_position > 0 {
                record.bump_position
            } else {
                record.last_position
            }
        });
        self.bumps.lock().insert(room_id.to_owned(), bump);
        Ok(bump)
    }

    pub(super) fn note_bump(&self, room_id: &RoomId, position: u64) {
        self.bumps.lock().insert(room_id.to_owned(), position);
    }

    pub fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>> {
        Ok(self.db.get_json(Keyspace::Rooms, room_id.as_bytes())?)
    }

    pub fn exists(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.db.contains(Keyspace::Rooms, room_id.as_bytes())?)
    }

    pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules> {
        version
            .rules()
            .ok_or_else(|| Error::internal(format!("unsupported room version {version}")))
    }

    pub fn pdu(&self, event_id: &EventId) -> Result<Option<StoredPdu>> {
        Ok(self.db.get_json(Keyspace::Pdus, event_id.as_bytes())?)
    }

    /// Visits every event of every room's timeline (not outliers, not soft-failed ones),
    /// in no particular order, parsed; for rebuilding what is kept beside the timelines.
    pub fn each_timeline_event(
        &self,
        mut visit: impl FnMut(&StoredPdu, &Pdu) -> Result<()>,
    ) -> Result<()> {
        let mut failure = None;
        self.db
            .for_each_from(Keyspace::Pdus, &[], &[], true, |key, value| {
                let mut step = || -> Result<()> {
                    let stored: StoredPdu = crate::storage::codec::decode_json(value)?;
                    if stored.outlier || stored.soft_failed || stored.position == 0 {
                        return Ok(());
                    }
                    let Ok(event_id) =
                        OwnedEventId::try_from(String::from_utf8_lossy(key).as_ref())
                    else {
                        return Ok(());
                    };
                    let Ok(pdu) = stored.parse(event_id) else {
                        return Ok(());
                    };
                    visit(&stored, &pdu)
                };
                match step() {
                    Ok(()) => true,
                    Err(error) => {
                        failure = Some(error);
                        false
                    }
                }
            })?;
        failure.map_or(Ok(()), Err)
    }

    /// Events as clients are served them (a page of a timeline), in the order asked:
    /// from memory, the others in one batched read. Timeline events are kept in memory;
    /// outliers and soft-failed events, which may still change, are not.
    pub fn served(&self, event_ids: &[&EventId]) -> Result<Vec<Option<Arc<Served>>>> {
        self.served.get_many_or_load(
            event_ids,
            |missing| {
                let keys: Vec<&[u8]> = missing.iter().map(|id| id.as_bytes()).collect();
                let stored: Vec<Option<StoredPdu>> =
                    self.db.get_many_json(Keyspace::Pdus, &keys)?;
                Ok(stored.into_iter().map(|pdu| pdu.map(Served::new)).collect())
            },
            |served| {
                !served.stored.outlier
                    && !served.stored.soft_failed
                    && served.stored.pdu.get().len() <= SERVED_EVENT_MOST
            },
        )
    }

    /// A state event, parsed, from memory when it was read before.
    pub fn state_event(&self, event_id: &EventId) -> Result<Option<Arc<Pdu>>> {
        self.state_events
            .get_or_load(event_id, || self.parsed_pdu(event_id))
    }

    pub fn parsed_pdu(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        match self.pdu(event_id)? {
            Some(stored) => Ok(Some(
                stored.parse(event_id.to_owned()).map_err(Error::internal)?,
            )),
            None => Ok(None),
        }
    }

    /// The current state of a room.
    pub fn current_state(&self, room_id: &RoomId) -> Result<Arc<StateMap>> {
        match self.room(room_id)? {
            Some(room) => self.state.get(room.state_group),
            None => Ok(Arc::default()),
        }
    }

    /// One current state event's content.
    pub fn state_content(
        &self,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<serde_json::Value>> {
        let state = self.current_state(room_id)?;
        self.content_in(&state, kind, state_key)
    }

    /// The current state event of `kind` and `state_key`, if `sender` sent it with
    /// exactly `content`: setting state to what it is already makes no new event.
    pub fn same_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        state_key: &str,
        content: &serde_json::Value,
    ) -> Result<Option<OwnedEventId>> {
        let state = self.current_state(room_id)?;
        let Some(event_id) = state.get(&(kind.to_owned(), state_key.to_owned())) else {
            return Ok(None);
        };
        let Some(pdu) = self.state_event(event_id)? else {
            return Ok(None);
        };
        let same = pdu.sender == sender
            && serde_json::from_str::<serde_json::Value>(pdu.content.get())
                .is_ok_and(|current| current == *content);
        Ok(same.then(|| event_id.clone()))
    }

    /// One state event's content within a given state.
    pub fn content_in(
        &self,
        state: &StateMap,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<serde_json::Value>> {
        let Some(event_id) = state.get(&(kind.to_owned(), state_key.to_owned())) else {
            return Ok(None);
        };
        let Some(pdu) = self.state_event(event_id)? else {
            return Ok(None);
        };
        Ok(Some(
            serde_json::from_str(pdu.content.get()).map_err(Error::internal)?,
        ))
    }

    /// A local user's current membership in a room.
    /// Whether `user_id` is joined in the room state `state_group`.
    pub fn joined_in_state(&self, state_group: u64, user_id: &UserId) -> Result<bool> {
        let state = self.state.get(state_group)?;
        Ok(self
            .content_in(&state, "m.room.member", user_id.as_str())?
            .is_some_and(|content| {
                content.get("membership").and_then(|m| m.as_str()) == Some("join")
            }))
    }

    pub fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<Membership>> {
        let key = Key::new().str(user_id.as_str()).str(room_id.as_str());
        Ok(self.db.get_json(Keyspace::UserRooms, key.bytes())?)
    }

    /// Any user's membership in a room's current state, local or not.
    pub fn member_state(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<MembershipState>> {
        Ok(self
            .state_content(room_id, "m.room.member", user_id.as_str())?
            .and_then(|content| membership::membership_in(&content)))
    }

    /// Whether the room's server ACL (`m.room.server_acl`) lets `server` take part;
    /// without an ACL every server may.
    pub fn server_allowed(&self, room_id: &RoomId, server: &ruma::ServerName) -> Result<bool> {
        let Some(content) = self.state_content(room_id, "m.room.server_acl", "")? else {
            return Ok(true);
        };
        match serde_json::from_value::<ruma::events::room::server_acl::RoomServerAclEventContent>(
            content,
        ) {
            Ok(acl) => Ok(acl.is_allowed(server)),
            // An ACL that cannot be read denies no one (it never passed as one).
            Err(_) => Ok(true),
        }
    }

    pub fn is_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        Ok(self
            .membership(room_id, user_id)?
            .is_some_and(|m| m.membership == MembershipState::Join))
    }

    /// The rooms whose timeline or receipts changed after `since` (and perhaps a few whose
    /// change is still being written), or `None` when that is older than this process
    /// knows: then any room may have.
    pub fn changed_since(&self, since: u64) -> Option<Vec<OwnedRoomId>> {
        self.stream.rooms_changed_since(since)
    }

    /// Every room a user has a membership in, with that membership.
    pub fn user_rooms(&self, user_id: &UserId) -> Result<Vec<(OwnedRoomId, Membership)>> {
        let prefix = Key::new().str(user_id.as_str());
        let mut out = Vec::new();
        for (key, value) in self.db.scan_prefix(Keyspace::UserRooms, prefix.bytes())? {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            let room_id = OwnedRoomId::try_from(reader.str()?).map_err(Error::internal)?;
            out.push((room_id, crate::storage::codec::decode_json(&value)?));
        }
        Ok(out)
    }

    /// Rooms whose membership for this user changed after `since`, up to `until`.
    pub fn membership_changes(
        &self,
        user_id: &UserId,
        since: u64,
        until: u64,
    ) -> Result<Vec<OwnedRoomId>> {
        let prefix = Key::new().str(user_id.as_str());
        let mut rooms = Vec::new();
        for (_, value) in self
            .db
            .stream_range(Keyspace::UserRoomsStream, &prefix, since, until)?
        {
            let room_id = String::from_utf8(value)
                .ok()
                .and_then(|id| OwnedRoomId::try_from(id).ok())
                .ok_or_else(|| Error::internal("invalid room id in the membership stream"))?;
            if !rooms.contains(&room_id) {
                rooms.push(room_id);
            }
        }
        Ok(rooms)
    }

    /// The rooms a user of any server is joined to, as far as this server knows.
    pub fn rooms_joined_by(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        let prefix = Key::new().str(user.as_str());
        let mut rooms = Vec::new();
        for (key, _) in self.db.scan_prefix(Keyspace::JoinedRooms, prefix.bytes())? {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            rooms.push(OwnedRoomId::try_from(reader.str()?).map_err(Error::internal)?);
        }
        Ok(rooms)
    }

    /// The local users sharing a joined room with a user of any server (the user
    /// included if local): who hears of their device changes.
    pub fn local_audience_of(&self, user: &UserId) -> Result<Vec<OwnedUserId>> {
        let mut users: Vec<OwnedUserId> = Vec::new();
        if user.server_name() == self.server_name {
            users.push(user.to_owned());
        }
        for room_id in self.rooms_joined_by(user)? {
            for member in self.members_with(&room_id, MembershipState::Join)? {
                if member.server_name() == self.server_name && !users.contains(&member) {
                    users.push(member);
                }
            }
        }
        Ok(users)
    }

    /// Users whose joined-or-not status in a room changed after `since`, up to `until`.
    pub fn joined_changes(
        &self,
        room_id: &RoomId,
        since: u64,
        until: u64,
    ) -> Result<Vec<OwnedUserId>> {
        let prefix = Key::new().str(room_id.as_str());
        let mut users: Vec<OwnedUserId> = Vec::new();
        for (_, value) in
            self.db
                .stream_range(Keyspace::RoomMembersStream, &prefix, since, until)?
        {
            if let Ok(user) = OwnedUserId::try_from(String::from_utf8_lossy(&value).as_ref())
                && !users.contains(&user)
            {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// Users with the given membership in a room (join, invite or knock: the others are
    /// not indexed).
    pub fn members_with(
        &self,
        room_id: &RoomId,
        membership: MembershipState,
    ) -> Result<Vec<OwnedUserId>> {
        self.members_where(room_id, |value| decode_membership(value) == membership)
    }

    /// Users who should hear about a change in this room right away: everyone joined,
    /// invited or knocking.
    pub fn interested_users(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        self.members_where(room_id, |_| true)
    }

    /// Who hears of a new event in the room: everyone joined, invited or knocking, and
    /// the other servers of joined members.
    pub fn audience(&self, room_id: &RoomId) -> Result<Audience> {
        let prefix = Key::new().str(room_id.as_str());
        let mut audience = Audience::default();
        for (key, membership) in self.db.scan_prefix(Keyspace::RoomMembers, prefix.bytes())? {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            let user = OwnedUserId::try_from(reader.str()?).map_err(Error::internal)?;
            if decode_membership(&membership) == MembershipState::Join
                && user.server_name() != self.server_name
                && !audience.servers.iter().any(|s| s == user.server_name())
            {
                audience.servers.push(user.server_name().to_owned());
            }
            audience.users.push(user);
        }
        Ok(audience)
    }

    /// The rooms a local user is joined to.
    pub fn joined_rooms(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .user_rooms(user)?
            .into_iter()
            .filter(|(_, membership)| membership.membership == MembershipState::Join)
            .map(|(room_id, _)| room_id)
            .collect())
    }

    /// Whether `user` (of any server) is joined to any of `rooms`.
    pub fn joined_any(&self, rooms: &[OwnedRoomId], user: &UserId) -> Result<bool> {
        for room_id in rooms {
            let key = Key::new().str(room_id.as_str()).str(user.as_str());
            let membership = self.db.get(Keyspace::RoomMembers, key.bytes())?;
            if membership.is_some_and(|value| decode_membership(&value) == MembershipState::Join) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Everyone who shares a joined room with `user` (`user` included), and the other
    /// servers of those rooms: who hears of the user's presence.
    pub fn shared_audience(&self, user: &UserId) -> Result<Audience> {
        let mut audience = Audience::default();
        for (room_id, membership) in self.user_rooms(user)? {
            if membership.membership != MembershipState::Join {
                continue;
            }
            let room = self.audience(&room_id)?;
            for member in room.users {
                if !audience.users.contains(&member) {
                    audience.users.push(member);
                }
            }
            for server in room.servers {
                if !audience.servers.contains(&server) {
                    audience.servers.push(server);
                }
            }
        }
        Ok(audience)
    }

    /// Whether this server is in the room: it has a joined member there.
    pub fn is_resident(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.exists(room_id)?
            && self
                .members_with(room_id, MembershipState::Join)?
                .iter()
                .any(|member| member.server_name() == self.server_name))
    }

    /// The other servers with joined members in a room.
    pub fn remote_servers(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        Ok(self.audience(room_id)?.servers)
    }

    fn members_where(
        &self,
        room_id: &RoomId,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<OwnedUserId>> {
        let prefix = Key::new().str(room_id.as_str());
        let mut out = Vec::new();
        for (key, membership) in self.db.scan_prefix(Keyspace::RoomMembers, prefix.bytes())? {
            if !keep(&membership) {
                continue;
            }
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            out.push(OwnedUserId::try_from(reader.str()?).map_err(Error::internal)?);
        }
        Ok(out)
    }

    /// The timeline of a room between two stream positions (exclusive `from`, inclusive
    /// `to` going forwards; going backwards, events below `from` down to above `to`),
    /// at most `limit` events, in the direction walked.
    pub fn timeline(
        &self,
        room_id: &RoomId,
        from: u64,
        to: u64,
        forwards: bool,
        limit: usize,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        let prefix = Key::new().str(room_id.as_str());
        let start = if forwards {
            prefix.clone().u64(from.saturating_add(1))
        } else {
            prefix.clone().u64(from.saturating_sub(1))
        };
        let mut out = Vec::new();
        if !forwards && from == 0 {
            return Ok(out);
        }
        self.db.for_each_from(
            Keyspace::Timeline,
            prefix.bytes(),
            start.bytes(),
            forwards,
            |key, value| {
                let mut reader = KeyReader::new(key);
                let Ok(position) = reader.str().and_then(|_| reader.u64()) else {
                    return false;
                };
                let in_range = if forwards {
                    position <= to
                } else {
                    position > to
                };
                if !in_range || out.len() >= limit {
                    return false;
                }
                if let Ok(event_id) = std::str::from_utf8(value).map(OwnedEventId::try_from)
                    && let Ok(event_id) = event_id
                {
                    out.push((position, event_id));
                }
                true
            },
        )?;
        Ok(out)
    }

    /// The state group in force at a stream position: after the last event at or before it.
    pub fn state_group_at(&self, room_id: &RoomId, position: u64) -> Result<u64> {
        let last = self.timeline(room_id, position.saturating_add(1), 0, false, 1)?;
        match last.first() {
            Some((_, event_id)) => Ok(self.pdu(event_id)?.map_or(0, |pdu| pdu.state_after)),
            None => Ok(0),
        }
    }

    /// The aliases that point at a room.
    pub fn aliases_of(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let prefix = Key::new().str(room_id.as_str());
        let mut out = Vec::new();
        for (key, _) in self.db.scan_prefix(Keyspace::RoomAliases, prefix.bytes())? {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            out.push(reader.str()?.to_owned());
        }
        Ok(out)
    }

    fn lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .entry(room_id.to_owned())
            .or_default()
            .clone()
    }

    /// Fails with `M_FORBIDDEN` unless the user is joined to the room.
    pub fn require_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        if !self.is_joined(room_id, user_id)? {
            return Err(Error::forbidden("You are not in this room"));
        }
        Ok(())
    }

    /// Whether `user` may see events of this room at all now (joined, or world-readable,
    /// or shared history and was ever a member).
    pub fn can_see_room(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        if self.is_joined(room_id, user_id)? {
            return Ok(true);
        }
        Ok(self.history_visibility(room_id)? == HistoryVisibility::WorldReadable)
    }
}
