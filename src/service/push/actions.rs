//! Push actions, worked out once when an event is written: for each local member of the
//! room (and a local user the event invites), their push rules decide whether it
//! notifies and highlights. Members whose rules differ only in who they are share one
//! evaluation unless the event names them. What notifies is stored with the event, in
//! its batch, once per event: what most members get, and the few members who get
//! something else (those it mentions, those with rules of their own). Unread counts,
//! `/notifications` and the push gateways read it and never evaluate again. Only users
//! with a pusher get an entry of their own, in their push queue.

use std::{
    any::Any,
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId,
    RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
    push::{Action, FlattenedJson, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    pushers::Pushers,
    rules::{Member, Naming, RoomContext, Rulesets, UserRules, actions},
};
use crate::{
    Result,
    service::{
        rooms::{
            Rooms,
            membership::member_profile_in,
            relations::{THREAD, relation_of},
            timeline::{Placed, TimelineIndex, Upcoming, member_change},
        },
        thread_subscriptions::ThreadSubscriptions,
    },
    storage::{Batch, Keyspace, codec::Key, runs::RunPrefix},
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

/// What an event means for one member: which of the event's distinct actions they get
/// (an index into [`NotifyingEvent::actions`]) and whether it highlights. Stored as
/// `[index, highlight]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Outcome(pub u32, pub bool);

impl Outcome {
    pub(super) fn highlight(self) -> bool {
        self.1
    }
}

/// An event that notifies local members, stored once under its room (not once per
/// member): what most of its members get, and the members who get something else.
#[derive(Serialize, Deserialize)]
pub(super) struct NotifyingEvent {
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<OwnedEventId>,
    /// When the server received it (ms).
    pub ts: u64,
    /// The room's state before the event: whose joined members [`Self::everyone`] means.
    pub state_before: u64,
    /// The distinct actions the event has for members it notifies.
    pub actions: Vec<Vec<Action>>,
    /// What each local member joined before the event gets, but its sender and those in
    /// `members`; `None`: nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub everyone: Option<Outcome>,
    /// The members (and a user the event invites) who get something else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<(OwnedUserId, Option<Outcome>)>,
}

/// What a member gets from an event: theirs if listed, else everyone's (never for its
/// sender). `None` for a listed member is "nothing"; the member's membership at the
/// event is the reader's to know.
pub(super) fn outcome_for<'a>(
    user: &str,
    sender: &str,
    everyone: Option<Outcome>,
    mut members: impl Iterator<Item = (&'a str, Option<Outcome>)>,
) -> Listed {
    if user == sender {
        return Listed::Named(None);
    }
    match members.find(|(member, _)| *member == user) {
        Some((_, outcome)) => Listed::Named(outcome),
        None => Listed::Everyone(everyone),
    }
}

/// A member's outcome, and whether the event names them or they share everyone's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Listed {
    Named(Option<Outcome>),
    Everyone(Option<Outcome>),
}

impl NotifyingEvent {
    pub(super) fn outcome(&self, user: &UserId) -> Listed {
        outcome_for(
            user.as_str(),
            self.sender.as_str(),
            self.everyone,
            self.members
                .iter()
                .map(|(member, outcome)| (member.as_str(), *outcome)),
        )
    }

    /// The notification an outcome makes in `room_id`.
    pub(super) fn notification(&self, room_id: &RoomId, outcome: Outcome) -> Option<Notification> {
        Some(Notification {
            room_id: room_id.to_owned(),
            event_id: self.event_id.clone(),
            actions: self.actions.get(outcome.0 as usize)?.clone(),
            highlight: outcome.highlight(),
            thread: self.thread.clone(),
            ts: self.ts,
        })
    }
}

/// What the unread counts read of a [`NotifyingEvent`]: its other fields are skipped.
#[derive(Deserialize)]
pub(super) struct CountedEvent<'a> {
    #[serde(borrow)]
    pub sender: Cow<'a, str>,
    #[serde(borrow, default)]
    pub thread: Option<Cow<'a, str>>,
    #[serde(default)]
    pub everyone: Option<Outcome>,
    #[serde(borrow, default)]
    pub members: Vec<(Cow<'a, str>, Option<Outcome>)>,
}

impl CountedEvent<'_> {
    pub(super) fn outcome(&self, user: &UserId) -> Listed {
        outcome_for(
            user.as_str(),
            &self.sender,
            self.everyone,
            self.members
                .iter()
                .map(|(member, outcome)| (member.as_ref(), *outcome)),
        )
    }
}

/// `room_id ‖ position`: where a room's notifying event is kept.
pub(super) fn notifying_event_key(room_id: &RoomId, position: u64) -> Key {
    notifying_events_prefix(room_id).u64(position)
}

pub(super) fn notifying_events_prefix(room_id: &RoomId) -> Key {
    Key::new().str(room_id.as_str())
}

/// `user_id`: the prefix of a user's entries in the push queue.
pub(super) fn push_queue_prefix(user: &UserId) -> Key {
    Key::new().str(user.as_str())
}

/// Whom the shared part of the rules is evaluated for: no member of any room.
static NO_ONE: LazyLock<OwnedUserId> =
    LazyLock::new(|| OwnedUserId::try_from("@-:no-one.invalid").expect("a valid user id"));

/// A local member of a room with their rules and the prefix of their push queue.
struct Local {
    member: Member,
    rules: Arc<UserRules>,
    queue: RunPrefix,
}

impl Local {
    fn new(member: Member, rules: Arc<UserRules>) -> Self {
        Self {
            queue: RunPrefix::new(push_queue_prefix(&member.user)),
            rules,
            member,
        }
    }
}

/// The local members of a room.
type LocalMembers = Arc<Vec<Local>>;

/// The local members of a room, their display names and rules, for one state of the
/// room and one generation of everyone's rules.
#[derive(Clone)]
struct RoomMembers {
    state_group: u64,
    generation: u64,
    context: Arc<RoomContext>,
    /// The conditions' context of the shared part of the rules.
    no_one: Arc<PushConditionRoomCtx>,
    local: LocalMembers,
}

/// An event as its push actions are worked out: before it is built, or as staged.
struct Candidate<'a> {
    room_id: &'a RoomId,
    sender: &'a UserId,
    kind: &'a TimelineEventType,
    /// Its relation (type and parent), if it has one.
    relation: Option<(String, OwnedEventId)>,
    /// What the rules match: flattened only when someone's rules are to be matched.
    client: ClientEvent<'a>,
    /// A local user it invites.
    invited: Option<OwnedUserId>,
}

impl<'a> Candidate<'a> {
    /// A message before it is built (`prepare`).
    fn message(message: &'a Upcoming<'_>) -> Self {
        let client = ClientEvent {
            kind: message.kind,
            content: message.content,
            sender: message.sender,
            state_key: None,
            room_id: message.room_id,
            origin_server_ts: message.origin_server_ts,
            redacts: None,
        };
        Self::new(client, None)
    }

    /// An event as staged.
    fn of(event: &'a Placed<'_>, actions: &PushActions) -> Self {
        let pdu = event.pdu;
        let invited = member_change(pdu)
            .filter(|(target, membership)| {
                *membership == MembershipState::Invite
                    && target.server_name() == actions.server_name
            })
            .map(|(target, _)| target);
        let client = ClientEvent {
            kind: &pdu.kind,
            content: &pdu.content,
            sender: &pdu.sender,
            state_key: pdu.state_key.as_deref(),
            room_id: event.room_id,
            origin_server_ts: pdu.origin_server_ts,
            redacts: pdu.redacts.as_deref(),
        };
        Self::new(client, invited)
    }

    fn new(client: ClientEvent<'a>, invited: Option<OwnedUserId>) -> Self {
        Self {
            room_id: client.room_id,
            sender: client.sender,
            kind: client.kind,
            relation: relation_of(client.content),
            client,
            invited,
        }
    }
}

/// What an event means for the local members of its room at one state of it (and for a
/// local user it invites), with everyone's rules of one generation.
struct Evaluation {
    state_before: u64,
    generation: u64,
    local: LocalMembers,
    invitee: Option<Local>,
    /// Each member's outcome, by index into `local` (the invitee last); none for the
    /// sender.
    outcomes: Vec<(usize, Option<Outcome>)>,
    /// The distinct actions the outcomes index.
    distinct: Vec<Vec<Action>>,
    /// The thread the event belongs to, when it notifies anyone.
    thread: Option<OwnedEventId>,
}

impl Evaluation {
    /// It notifies no one.
    fn nothing(state_before: u64, generation: u64) -> Self {
        Self {
            state_before,
            generation,
            local: Arc::default(),
            invitee: None,
            outcomes: Vec::new(),
            distinct: Vec::new(),
            thread: None,
        }
    }
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
    rulesets: Arc<Rulesets>,
    /// Who follows which thread, where thread subscriptions are on.
    thread_subscriptions: Option<Arc<ThreadSubscriptions>>,
    /// Who has a pusher: only they have a push queue.
    pushers: Arc<Pushers>,
    server_name: OwnedServerName,
    rooms: Mutex<HashMap<OwnedRoomId, RoomMembers>>,
    /// Users notified by staged events, by position, until the write is known.
    staged: Mutex<BTreeMap<u64, Notified>>,
    /// Where the users with new notifications go once written (the push gateways).
    notified: UnboundedSender<OwnedUserId>,
    /// The positions of staged redactions that take notifications away, until written.
    forgetting: Mutex<BTreeSet<u64>>,
    /// Redactions that took notifications away, counted once written: unread counts
    /// kept from before are stale (`counts.rs`).
    redactions: Arc<AtomicU64>,
}

impl PushActions {
    pub fn new(
        rulesets: Arc<Rulesets>,
        thread_subscriptions: Option<Arc<ThreadSubscriptions>>,
        pushers: Arc<Pushers>,
        server_name: OwnedServerName,
        notified: UnboundedSender<OwnedUserId>,
        redactions: Arc<AtomicU64>,
    ) -> Self {
        Self {
            rulesets,
            thread_subscriptions,
            pushers,
            server_name,
            rooms: Mutex::default(),
            staged: Mutex::default(),
            notified,
            forgetting: Mutex::default(),
            redactions,
        }
    }

    /// The local members an event may notify, with the room's context at `state_before`
    /// and the generation of everyone's rules they were read at; `None` when that state
    /// is not written yet.
    fn members(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        state_before: u64,
    ) -> Result<Option<RoomMembers>> {
        // Read first: rules changed after this are seen by the next event.
        let generation = self.rulesets.generation();
        if let Some(members) = self.rooms.lock().get(room_id)
            && members.state_group == state_before
            && members.generation == generation
        {
            return Ok(Some(members.clone()));
        }
        let state = match rooms.state.get(state_before) {
            Ok(state) => state,
            // The state before a join through another server is made in the join's
            // own batch: not readable yet, and no one here to notify of one's own join.
            Err(crate::Error::Storage(error)) => return Err(crate::Error::Storage(error)),
            Err(_) => return Ok(None),
        };
        let context = Arc::new(RoomContext::of(rooms, room_id, &state)?);
        let mut local = Vec::new();
        for user in rooms.members_with(room_id, MembershipState::Join)? {
            if user.server_name() != self.server_name {
                continue;
            }
            let name = display_name(rooms, &state, &user)?;
            let rules = self.rulesets.get(&user)?;
            local.push(Local::new(Member::new(user, name), rules));
        }
        let members = RoomMembers {
            state_group: state_before,
            generation,
            no_one: Arc::new(context.for_user(room_id, &NO_ONE, String::new(), None)),
            context,
            local: Arc::new(local),
        };
        let mut kept = self.rooms.lock();
        if kept.len() >= ROOMS_KEPT {
            kept.clear();
        }
        kept.insert(room_id.to_owned(), members.clone());
        Ok(Some(members))
    }

    /// What an event means for the room's local members (and a local user it invites),
    /// from the room's state before it.
    fn evaluate(
        &self,
        rooms: &Rooms,
        event: &Candidate<'_>,
        state_before: u64,
    ) -> Result<Evaluation> {
        let Some(members) = self.members(rooms, event.room_id, state_before)? else {
            return Ok(Evaluation::nothing(
                state_before,
                self.rulesets.generation(),
            ));
        };
        let local = &members.local;
        // The sender alone (a room of one, or with only other servers' users).
        if local.iter().all(|local| local.member.user == event.sender) && event.invited.is_none() {
            return Ok(Evaluation::nothing(state_before, members.generation));
        }
        let flattened = &flattened(&event.client);
        let naming = Naming::of(flattened);
        // Members whose rules differ only in who they are, named nowhere in the event,
        // get the actions of their shared part: evaluated once for all of them, as by
        // someone who is no member.
        let shareable = event.sender != *NO_ONE;
        // For a message in a thread, who follows the thread: the subscription rules
        // answer per member, and members share an evaluation only with the same answer.
        let subscribers = match (&self.thread_subscriptions, &event.relation) {
            (Some(subscriptions), Some((rel_type, root))) if rel_type == THREAD => {
                Some(subscriptions.subscribers(event.room_id, root)?)
            }
            _ => None,
        };
        let mut shared: Vec<(Arc<Ruleset>, Option<bool>, Option<Outcome>)> = Vec::new();
        let mut distinct: Vec<(String, Vec<Action>)> = Vec::new();
        let mut outcome_of = |actions: &[Action]| -> Option<Outcome> {
            if !actions
                .iter()
                .any(|action| matches!(action, Action::Notify))
            {
                return None;
            }
            let json = serde_json::to_string(actions).unwrap_or_default();
            let index = match distinct.iter().position(|(kept, _)| *kept == json) {
                Some(at) => at,
                None => {
                    distinct.push((json, actions.to_vec()));
                    distinct.len() - 1
                }
            };
            Some(Outcome(
                index as u32,
                actions.iter().any(Action::is_highlight),
            ))
        };
        let invitee = match &event.invited {
            Some(user) => Some(Local::new(
                Member::new(user.clone(), user.localpart().to_owned()),
                self.rulesets.get(user)?,
            )),
            None => None,
        };
        let mut outcomes: Vec<(usize, Option<Outcome>)> = Vec::with_capacity(local.len() + 1);
        for (index, local) in local.iter().chain(invitee.iter()).enumerate() {
            let member = &local.member;
            if member.user == event.sender {
                continue;
            }
            let rules = &local.rules;
            let subscribed = subscribers
                .as_ref()
                .map(|subscribers| subscribers.contains(&member.user));
            let outcome = match &rules.shared {
                Some(part) if shareable && !naming.may_name(member) => {
                    match shared.iter().position(|(kept, answer, _)| {
                        Arc::ptr_eq(kept, part) && *answer == subscribed
                    }) {
                        Some(at) => shared[at].2,
                        None => {
                            let outcome = match subscribed {
                                None => outcome_of(actions(part, flattened, &members.no_one)),
                                Some(_) => {
                                    let no_one = members.context.for_user(
                                        event.room_id,
                                        &NO_ONE,
                                        String::new(),
                                        subscribed,
                                    );
                                    outcome_of(actions(part, flattened, &no_one))
                                }
                            };
                            shared.push((part.clone(), subscribed, outcome));
                            outcome
                        }
                    }
                }
                _ => {
                    let context = members.context.for_user(
                        event.room_id,
                        &member.user,
                        member.display_name.clone(),
                        subscribed,
                    );
                    outcome_of(actions(&rules.ruleset, flattened, &context))
                }
            };
            outcomes.push((index, outcome));
        }
        let thread = if outcomes.iter().any(|(_, outcome)| outcome.is_some()) {
            thread_of(rooms, event)?
        } else {
            None
        };
        Ok(Evaluation {
            state_before,
            generation: members.generation,
            local: members.local.clone(),
            invitee,
            outcomes,
            distinct: distinct.into_iter().map(|(_, actions)| actions).collect(),
            thread,
        })
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
        // The push queues' entries for it find nothing and are skipped.
        batch.delete(
            Keyspace::NotifyingEvents,
            notifying_event_key(room_id, stored.position),
        );
        Ok(())
    }
}

impl TimelineIndex for PushActions {
    fn prepare(&self, rooms: &Rooms, message: &Upcoming<'_>) -> Option<Box<dyn Any + Send>> {
        // The state the message will most likely be built on: the one the room's last
        // event was evaluated at, else the room's current one.
        let kept = self
            .rooms
            .lock()
            .get(message.room_id)
            .map(|members| members.state_group);
        let state_before = match kept {
            Some(state_group) => state_group,
            None => rooms.room(message.room_id).ok()??.state_group,
        };
        let candidate = Candidate::message(message);
        match self.evaluate(rooms, &candidate, state_before) {
            Ok(evaluation) => Some(Box::new(evaluation)),
            // Worked out again when staged.
            Err(_) => None,
        }
    }

    fn stage(&self, rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()> {
        if let Some(target) = crate::service::rooms::timeline::redacted_by(event.pdu) {
            self.forget(rooms, batch, event.room_id, &target)?;
            self.forgetting.lock().insert(event.position);
        }
        let evaluated;
        let evaluation = match event.ahead.get::<Evaluation>() {
            // Worked out on the state the event was built on, with the rules as they are.
            Some(ahead)
                if ahead.state_before == event.state_before
                    && ahead.generation == self.rulesets.generation() =>
            {
                ahead
            }
            _ => {
                evaluated =
                    self.evaluate(rooms, &Candidate::of(event, self), event.state_before)?;
                &evaluated
            }
        };
        let Evaluation {
            local,
            invitee,
            outcomes,
            ..
        } = evaluation;
        if outcomes.iter().all(|(_, outcome)| outcome.is_none()) {
            return Ok(());
        }
        let members = local.len();
        // What most members get is stored once; the others are listed.
        let mut tally: Vec<(Option<Outcome>, usize)> = Vec::new();
        for (_, outcome) in outcomes.iter().filter(|(index, _)| *index < members) {
            match tally.iter_mut().find(|(kept, _)| kept == outcome) {
                Some((_, count)) => *count += 1,
                None => tally.push((*outcome, 1)),
            }
        }
        let everyone = tally
            .iter()
            .max_by_key(|(_, count)| *count)
            .and_then(|(outcome, _)| *outcome);
        let mut listed = Vec::new();
        let mut queued = Vec::new();
        let mut invitee_notified = false;
        for (index, outcome) in outcomes {
            let is_invitee = *index >= members;
            let local = match local.get(*index) {
                Some(local) => local,
                None => invitee.as_ref().expect("the only one past the members"),
            };
            if is_invitee || *outcome != everyone {
                if is_invitee && outcome.is_none() {
                    continue;
                }
                listed.push((local.member.user.clone(), *outcome));
            }
            // Only users with a pusher have a push queue to fill.
            if outcome.is_some() && self.pushers.has_any(&local.member.user) {
                batch.put_in_run(
                    Keyspace::PushQueue,
                    &local.queue,
                    event.position,
                    event.room_id.as_bytes(),
                );
                if is_invitee {
                    invitee_notified = true;
                } else {
                    queued.push(*index as u32);
                }
            }
        }
        batch.put_json(
            Keyspace::NotifyingEvents,
            notifying_event_key(event.room_id, event.position),
            &NotifyingEvent {
                event_id: event.event_id.to_owned(),
                sender: event.pdu.sender.clone(),
                thread: evaluation.thread.clone(),
                ts: crate::service::users::now_ms(),
                state_before: event.state_before,
                actions: evaluation.distinct.clone(),
                everyone,
                members: listed,
            },
        );
        if !queued.is_empty() || invitee_notified {
            let notified = Notified {
                members: local.clone(),
                indices: queued,
                invitee: invitee
                    .as_ref()
                    .filter(|_| invitee_notified)
                    .map(|invitee| invitee.member.user.clone()),
            };
            self.staged.lock().insert(event.position, notified);
        }
        Ok(())
    }

    fn written(&self, positions: &[u64], ok: bool) {
        {
            let mut forgetting = self.forgetting.lock();
            let before = forgetting.len();
            forgetting.retain(|position| !positions.contains(position));
            // Counted even when the write failed: a needless recount is harmless.
            if forgetting.len() != before {
                self.redactions.fetch_add(1, Ordering::AcqRel);
            }
            if forgetting.len() > STAGED_MOST {
                forgetting.clear();
            }
        }
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

/// An event as push rules see it: its client format (the keys a rule's path may name),
/// not the federation fields (hashes, signatures, references) flattening would also
/// read. Without its id, as the event's own JSON has none from room version 3 on: the
/// rules may then be matched before the event is built and named.
#[derive(Serialize)]
struct ClientEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a TimelineEventType,
    content: &'a RawValue,
    sender: &'a UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    room_id: &'a RoomId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a EventId>,
}

fn flattened(event: &ClientEvent<'_>) -> FlattenedJson {
    match serde_json::value::to_raw_value(event) {
        Ok(json) => FlattenedJson::from_raw(&Raw::<()>::from_json(json)),
        Err(_) => FlattenedJson::from_raw(&Raw::<()>::from_json(RawValue::NULL.to_owned())),
    }
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
fn thread_of(rooms: &Rooms, event: &Candidate<'_>) -> Result<Option<OwnedEventId>> {
    if *event.kind == TimelineEventType::RoomRedaction {
        return Ok(None);
    }
    let Some((rel_type, parent)) = &event.relation else {
        return Ok(None);
    };
    if rel_type == THREAD {
        return Ok(Some(parent.clone()));
    }
    let Some(parent_pdu) = rooms.pdu(parent)? else {
        return Ok(None);
    };
    let Ok(parent_pdu) = parent_pdu.parse(parent.clone()) else {
        return Ok(None);
    };
    Ok(relation_of(&parent_pdu.content)
        .filter(|(rel_type, _)| rel_type == THREAD)
        .map(|(_, root)| root))
}
