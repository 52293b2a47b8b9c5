//! Push actions, worked out once when an event is written: for each local member of the
//! room (and a local user the event invites), their push rules decide whether it
//! notifies and highlights. Members whose rules differ only in who they are share one
//! evaluation unless the event names them. What notifies is stored with the event, in
//! its batch: unread counts, `/notifications` and the push gateways read it and never
//! evaluate again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, LazyLock},
};

use parking_lot::Mutex;
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
    push::{Action, FlattenedJson, Ruleset},
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::rules::{Member, Naming, RoomContext, Rulesets, UserRules, actions};
use crate::{
    Result,
    service::rooms::{
        Rooms,
        membership::member_profile_in,
        relations::{THREAD, relation_of},
        timeline::{Placed, TimelineIndex, member_change},
    },
    storage::{Batch, Db, Keyspace, codec::Key, runs::RunPrefix},
};

/// An event that notifies a user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub actions: Vec<Action>,
    pub highlight: bool,
    /// The thread root, for an event in a thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<OwnedEventId>,
    /// When the server received it (ms).
    pub ts: u64,
}

pub(super) const NOTIFY: u8 = 1;
pub(super) const HIGHLIGHT: u8 = 2;

pub(super) fn notifications_prefix(user: &UserId) -> Key {
    Key::new().str(user.as_str())
}

pub(super) fn unread_prefix(user: &UserId, room_id: &RoomId) -> Key {
    Key::new().str(user.as_str()).str(room_id.as_str())
}

/// An event that notifies local members, stored once: what their notifications share.
/// Each member's entry names one of `actions` (most members get the same ones).
#[derive(Serialize, Deserialize)]
pub(super) struct NotifyingEvent {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<OwnedEventId>,
    pub ts: u64,
    /// The distinct actions the event has for members it notifies.
    pub actions: Vec<Vec<Action>>,
}

impl NotifyingEvent {
    /// A member's notification from their entry (flags, then the index of their
    /// actions); `None` for an entry that is not one.
    pub(super) fn notification(&self, entry: &[u8]) -> Option<Notification> {
        let [flags, index] = entry else {
            return None;
        };
        Some(Notification {
            room_id: self.room_id.clone(),
            event_id: self.event_id.clone(),
            actions: self.actions.get(usize::from(*index))?.clone(),
            highlight: flags & HIGHLIGHT != 0,
            thread: self.thread.clone(),
            ts: self.ts,
        })
    }
}

pub(super) fn notifying_event_key(position: u64) -> Key {
    Key::new().u64(position)
}

/// A member's entry in the notifications keyspace: an event's notification is shared
/// ([`NotifyingEvent`]) and the entry names its actions; past the 255th distinct set
/// of actions, the whole notification.
#[derive(Clone)]
enum Entry {
    Shared { highlight: bool, index: u8 },
    Whole { highlight: bool, bytes: Vec<u8> },
}

/// Whom the shared part of the rules is evaluated for: no member of any room.
static NO_ONE: LazyLock<OwnedUserId> =
    LazyLock::new(|| OwnedUserId::try_from("@-:no-one.invalid").expect("a valid user id"));

/// A local member of a room with their rules and the prefixes of their notification
/// records.
struct Local {
    member: Member,
    rules: Arc<UserRules>,
    notifications: RunPrefix,
    unread: RunPrefix,
}

impl Local {
    fn new(member: Member, rules: Arc<UserRules>, room_id: &RoomId) -> Self {
        Self {
            notifications: RunPrefix::new(notifications_prefix(&member.user)),
            unread: RunPrefix::new(unread_prefix(&member.user, room_id)),
            rules,
            member,
        }
    }
}

/// The local members of a room.
type LocalMembers = Arc<Vec<Local>>;

/// The local members of a room, their display names and rules, for one state of the
/// room and one generation of everyone's rules.
struct Members {
    state_group: u64,
    generation: u64,
    context: Arc<RoomContext>,
    local: LocalMembers,
}

/// The users a staged event notifies: members of its room (by index) and an invitee.
struct Notified {
    members: LocalMembers,
    indices: Vec<u32>,
    invitee: Option<OwnedUserId>,
}

/// Staged positions remembered until written; more means batches were dropped unwritten.
const STAGED_MOST: usize = 100_000;

/// Rooms whose members are kept between events.
const ROOMS_KEPT: usize = 10_000;

pub struct PushActions {
    /// Read to take a redacted event's entries out of the runs holding them.
    db: Arc<Db>,
    rulesets: Arc<Rulesets>,
    server_name: OwnedServerName,
    rooms: Mutex<HashMap<OwnedRoomId, Members>>,
    /// Users notified by staged events, by position, until the write is known.
    staged: Mutex<BTreeMap<u64, Notified>>,
    /// Where the users with new notifications go once written (the push gateways).
    notified: UnboundedSender<OwnedUserId>,
}

impl PushActions {
    pub fn new(
        db: Arc<Db>,
        rulesets: Arc<Rulesets>,
        server_name: OwnedServerName,
        notified: UnboundedSender<OwnedUserId>,
    ) -> Self {
        Self {
            db,
            rulesets,
            server_name,
            rooms: Mutex::default(),
            staged: Mutex::default(),
            notified,
        }
    }

    /// The local members the event may notify, with the room's context before it;
    /// `None` when the state before it is not written yet.
    fn members(
        &self,
        rooms: &Rooms,
        event: &Placed<'_>,
    ) -> Result<Option<(Arc<RoomContext>, LocalMembers)>> {
        // Read first: rules changed after this are seen by the next event.
        let generation = self.rulesets.generation();
        if let Some(members) = self.rooms.lock().get(event.room_id)
            && members.state_group == event.state_before
            && members.generation == generation
        {
            return Ok(Some((members.context.clone(), members.local.clone())));
        }
        let state = match rooms.state.get(event.state_before) {
            Ok(state) => state,
            // The state before a join through another server is made in the join's
            // own batch: not readable yet, and no one here to notify of one's own join.
            Err(crate::Error::Storage(error)) => return Err(crate::Error::Storage(error)),
            Err(_) => return Ok(None),
        };
        let context = Arc::new(RoomContext::of(rooms, event.room_id, &state)?);
        let mut local = Vec::new();
        for user in rooms.members_with(event.room_id, MembershipState::Join)? {
            if user.server_name() != self.server_name {
                continue;
            }
            let name = display_name(rooms, &state, &user)?;
            let rules = self.rulesets.get(&user)?;
            local.push(Local::new(Member::new(user, name), rules, event.room_id));
        }
        let local = Arc::new(local);
        let mut kept = self.rooms.lock();
        if kept.len() >= ROOMS_KEPT {
            kept.clear();
        }
        kept.insert(
            event.room_id.to_owned(),
            Members {
                state_group: event.state_before,
                generation,
                context: context.clone(),
                local: local.clone(),
            },
        );
        Ok(Some((context, local)))
    }

    /// A redacted event notifies no one any more.
    fn forget(
        &self,
        rooms: &Rooms,
        batch: &mut Batch,
        room_id: &RoomId,
        target: &EventId,
    ) -> Result<()> {
        let Some(stored) = rooms.pdu(target)? else {
            return Ok(());
        };
        if stored.room_id != room_id || stored.position == 0 {
            return Ok(());
        }
        batch.delete(
            Keyspace::NotifyingEvents,
            notifying_event_key(stored.position),
        );
        for user in rooms.members_with(room_id, MembershipState::Join)? {
            if user.server_name() != self.server_name {
                continue;
            }
            batch.remove_from_run(
                &self.db,
                Keyspace::Notifications,
                &RunPrefix::new(notifications_prefix(&user)),
                stored.position,
            )?;
            batch.remove_from_run(
                &self.db,
                Keyspace::UnreadNotifications,
                &RunPrefix::new(unread_prefix(&user, room_id)),
                stored.position,
            )?;
        }
        Ok(())
    }
}

impl TimelineIndex for PushActions {
    fn stage(&self, rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()> {
        if let Some(target) = crate::service::rooms::timeline::redacted_by(event.pdu) {
            self.forget(rooms, batch, event.room_id, &target)?;
        }
        let Some((context, local)) = self.members(rooms, event)? else {
            return Ok(());
        };
        let invited = member_change(event.pdu).filter(|(target, membership)| {
            *membership == MembershipState::Invite && target.server_name() == self.server_name
        });
        if local.is_empty() && invited.is_none() {
            return Ok(());
        }
        let flattened = FlattenedJson::from_raw(&Raw::<()>::from_json(event.json.to_owned()));
        let thread = thread_of(rooms, event)?;
        let naming = Naming::of(&flattened);
        // Members whose rules differ only in who they are, named nowhere in the event,
        // get the actions of their shared part: evaluated once for all of them, as by
        // someone who is no member.
        let shareable = event.pdu.sender != *NO_ONE;
        let mut indices: Vec<u32> = Vec::new();
        let mut shared: Vec<(Arc<Ruleset>, Option<Entry>)> = Vec::new();
        let mut distinct: Vec<(String, Vec<Action>)> = Vec::new();
        let mut entry_for = |actions: &[Action]| -> Option<Entry> {
            if !actions
                .iter()
                .any(|action| matches!(action, Action::Notify))
            {
                return None;
            }
            let highlight = actions.iter().any(Action::is_highlight);
            let json = serde_json::to_string(actions).unwrap_or_default();
            let index = match distinct.iter().position(|(kept, _)| *kept == json) {
                Some(at) => at,
                None => {
                    distinct.push((json, actions.to_vec()));
                    distinct.len() - 1
                }
            };
            Some(match u8::try_from(index) {
                Ok(index) if index < u8::MAX => Entry::Shared { highlight, index },
                _ => Entry::Whole {
                    highlight,
                    bytes: crate::storage::codec::encode_json(&Notification {
                        room_id: event.room_id.to_owned(),
                        event_id: event.event_id.to_owned(),
                        actions: actions.to_vec(),
                        highlight,
                        thread: thread.clone(),
                        ts: crate::service::users::now_ms(),
                    }),
                },
            })
        };
        let invitee = match invited {
            Some((user, _)) => Some(Local::new(
                Member::new(user.clone(), user.localpart().to_owned()),
                self.rulesets.get(&user)?,
                event.room_id,
            )),
            None => None,
        };
        let mut invitee_notified = false;
        // A member's unread entry: its flags, then the thread root if any.
        let unread = |highlight: bool| {
            let mut unread = vec![flags(highlight)];
            if let Some(thread) = &thread {
                unread.extend_from_slice(thread.as_bytes());
            }
            unread
        };
        let unread = [unread(false), unread(true)];
        let members = local.len();
        for (index, local) in local.iter().chain(invitee.iter()).enumerate() {
            let member = &local.member;
            let user = &member.user;
            if *user == event.pdu.sender {
                continue;
            }
            let rules = &local.rules;
            let entry = match &rules.shared {
                Some(part) if shareable && !naming.may_name(member) => {
                    match shared.iter().position(|(kept, _)| Arc::ptr_eq(kept, part)) {
                        Some(at) => shared[at].1.clone(),
                        None => {
                            let no_one = context.for_user(event.room_id, &NO_ONE, String::new());
                            let entry = entry_for(actions(part, &flattened, &no_one));
                            shared.push((part.clone(), entry.clone()));
                            entry
                        }
                    }
                }
                _ => {
                    let context =
                        context.for_user(event.room_id, user, member.display_name.clone());
                    entry_for(actions(&rules.ruleset, &flattened, &context))
                }
            };
            let Some(entry) = entry else {
                continue;
            };
            let shared_entry;
            let (highlight, bytes): (bool, &[u8]) = match &entry {
                Entry::Shared { highlight, index } => {
                    shared_entry = [flags(*highlight), *index];
                    (*highlight, &shared_entry)
                }
                Entry::Whole { highlight, bytes } => (*highlight, bytes),
            };
            // Each member's entries of a batch share one record (`storage::runs`): a
            // batch of many messages to a big room writes one per member, not one per
            // member and message.
            batch.put_in_run(
                Keyspace::Notifications,
                &local.notifications,
                event.position,
                bytes,
            );
            batch.put_in_run(
                Keyspace::UnreadNotifications,
                &local.unread,
                event.position,
                &unread[usize::from(highlight)],
            );
            if index < members {
                indices.push(index as u32);
            } else {
                invitee_notified = true;
            }
        }
        if !indices.is_empty() || invitee_notified {
            batch.put_json(
                Keyspace::NotifyingEvents,
                notifying_event_key(event.position),
                &NotifyingEvent {
                    room_id: event.room_id.to_owned(),
                    event_id: event.event_id.to_owned(),
                    thread,
                    ts: crate::service::users::now_ms(),
                    actions: distinct.into_iter().map(|(_, actions)| actions).collect(),
                },
            );
            let notified = Notified {
                members: local.clone(),
                indices,
                invitee: invitee
                    .filter(|_| invitee_notified)
                    .map(|invitee| invitee.member.user),
            };
            self.staged.lock().insert(event.position, notified);
        }
        Ok(())
    }

    fn written(&self, positions: &[u64], ok: bool) {
        let mut staged = self.staged.lock();
        if staged.len() > STAGED_MOST {
            // Batches dropped before their write leave entries behind; their users
            // are caught up with the next notification anyway.
            staged.clear();
        }
        // Each user once, however many of the events notify them.
        let mut users: BTreeSet<&UserId> = BTreeSet::new();
        let mut taken = Vec::new();
        for position in positions {
            if let Some(notified) = staged.remove(position)
                && ok
            {
                taken.push(notified);
            }
        }
        for notified in &taken {
            for index in &notified.indices {
                if let Some(local) = notified.members.get(*index as usize) {
                    users.insert(&local.member.user);
                }
            }
            users.extend(notified.invitee.as_deref());
        }
        for user in users {
            let _ = self.notified.send(user.to_owned());
        }
    }
}

fn flags(highlight: bool) -> u8 {
    NOTIFY | if highlight { HIGHLIGHT } else { 0 }
}

/// A member's display name in a room (their localpart when they set none).
fn display_name(
    rooms: &Rooms,
    state: &crate::service::rooms::state::StateMap,
    user: &UserId,
) -> Result<String> {
    Ok(rooms
        .content_in(state, "m.room.member", user.as_str())?
        .and_then(|content| member_profile_in(&content).0)
        .unwrap_or_else(|| user.localpart().to_owned()))
}

/// The thread an event belongs to: the root it replies to in a thread, or for an event
/// relating to a threaded event (a reaction, an edit), that event's thread.
fn thread_of(rooms: &Rooms, event: &Placed<'_>) -> Result<Option<OwnedEventId>> {
    if event.pdu.kind == TimelineEventType::RoomRedaction {
        return Ok(None);
    }
    let Some((rel_type, parent)) = relation_of(&event.pdu.content) else {
        return Ok(None);
    };
    if rel_type == THREAD {
        return Ok(Some(parent));
    }
    let Some(parent_pdu) = rooms.pdu(&parent)? else {
        return Ok(None);
    };
    let Ok(parent_pdu) = parent_pdu.parse(parent) else {
        return Ok(None);
    };
    Ok(relation_of(&parent_pdu.content)
        .filter(|(rel_type, _)| rel_type == THREAD)
        .map(|(_, root)| root))
}
