//! The per-room parts of a sync response.

use std::collections::{BTreeMap, BTreeSet};

use ruma::events::room::member::MembershipState;
use ruma::{
    EventId, OwnedEventId, OwnedUserId, RoomId, UInt,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v3::{
            Ephemeral, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom,
            RoomAccountData, RoomSummary, State, StateEvents, Timeline,
        },
    },
};
use serde_json::{Value, json};

use super::Window;
use crate::{
    Result,
    json::raw,
    service::{
        filters,
        push::counts::read_marks,
        rooms::{
            Membership,
            pdu::{ClientEvent, ClientFormat},
            state::StateMap,
            visibility::Viewer,
        },
    },
};

/// The default number of timeline events per room.
const DEFAULT_TIMELINE_LIMIT: usize = 10;

/// The most timeline events a room's section holds, whatever the filter asks.
const MAX_TIMELINE_LIMIT: usize = 1000;

pub(super) struct TimelinePart {
    pub events: Vec<(u64, OwnedEventId, ClientEvent)>,
    pub limited: bool,
    /// The `prev_batch` boundary: back-pagination from it returns the events before the
    /// first one shown.
    pub start: u64,
    state_at_start: u64,
    /// The state group at the section's end, when a state event after `start` was left
    /// out (history the viewer may not see, the timeline filter, an ignored sender): the
    /// state section then carries what the timeline does not.
    end_state_if_hidden: Option<u64>,
}

/// Reads a room's timeline in `(from, to]`, newest `limit` events the viewer may see.
pub(super) fn timeline(
    window: &Window<'_>,
    room_id: &RoomId,
    from: u64,
    to: u64,
) -> Result<TimelinePart> {
    let sync = window.sync;
    let filter = &window.filter.room.timeline;
    let limit = filter
        .limit
        .map_or(DEFAULT_TIMELINE_LIMIT, |limit| {
            usize::try_from(u64::from(limit)).unwrap_or(DEFAULT_TIMELINE_LIMIT)
        })
        .clamp(1, MAX_TIMELINE_LIMIT);
    let mut viewer = Viewer::new(
        &sync.rooms,
        window.user(),
        window.sender.device_id.as_deref(),
    );
    let mut events = Vec::new();
    let mut cursor = to.saturating_add(1);
    let mut limited = false;
    // The position of the newest state event left out, if any.
    let mut hidden_state_at = None;
    'walk: loop {
        let page = sync
            .rooms
            .timeline(room_id, cursor, from, false, limit + 1)?;
        if page.is_empty() {
            break;
        }
        let ids: Vec<&EventId> = page.iter().map(|(_, event_id)| &**event_id).collect();
        for ((position, event_id), served) in page.iter().zip(sync.rooms.served(&ids)?) {
            cursor = *position;
            let Some(served) = served else {
                continue;
            };
            let pdu = &served.stored;
            if !viewer.can_see(&served)? {
                if pdu.state_after != pdu.state_before {
                    hidden_state_at.get_or_insert(*position);
                }
                continue;
            }
            let event = viewer.show(event_id, &served, ClientFormat::Sync)?;
            if !filters::allows_event(filter, &event) || window.is_ignored(&event) {
                if event.state_key.is_some() {
                    hidden_state_at.get_or_insert(*position);
                }
                continue;
            }
            if events.len() == limit {
                limited = true;
                break 'walk;
            }
            events.push((*position, event_id.clone(), event));
        }
        if page.len() <= limit {
            break;
        }
    }
    events.reverse();
    let (start, state_at_start) = match events.first() {
        Some((position, event_id, _)) => {
            let before = sync.rooms.pdu(event_id)?.map_or(0, |pdu| pdu.state_before);
            (position.saturating_sub(1), before)
        }
        None => (to, sync.rooms.state_group_at(room_id, to)?),
    };
    let end_state_if_hidden = match hidden_state_at {
        Some(position) if position > start => Some(sync.rooms.state_group_at(room_id, to)?),
        _ => None,
    };
    Ok(TimelinePart {
        events,
        limited,
        start,
        state_at_start,
        end_state_if_hidden,
    })
}

/// State events as the client sees them, keeping what the state filter allows; with lazy
/// loading, members only for `senders` (and the viewer).
fn state_events(
    window: &Window<'_>,
    entries: impl IntoIterator<Item = ((String, String), OwnedEventId)>,
    senders: &BTreeSet<String>,
) -> Result<Vec<ClientEvent>> {
    let sync = window.sync;
    let filter = &window.filter.room.state;
    let lazy = !filter.lazy_load_options.is_disabled();
    let mut out = Vec::new();
    for ((kind, state_key), event_id) in entries {
        if lazy
            && kind == "m.room.member"
            && state_key != window.user().as_str()
            && !senders.contains(&state_key)
        {
            continue;
        }
        let Some(pdu) = sync.rooms.pdu(&event_id)? else {
            continue;
        };
        let event = pdu.to_client(&event_id, ClientFormat::Sync, None, None);
        if filters::allows_event(filter, &event) {
            out.push(event);
        }
    }
    Ok(out)
}

/// The state section: everything at the timeline's start for a first sight of the room,
/// otherwise what changed between the since token and the timeline's start.
fn state_section(
    window: &Window<'_>,
    room_id: &RoomId,
    part: &TimelinePart,
    first_sight: bool,
) -> Result<Vec<ClientEvent>> {
    let mut values = state_at_start(window, room_id, part, first_sight)?;
    if let Some(end) = part.end_state_if_hidden {
        values.extend(hidden_state(window, part, end)?);
    }
    Ok(values)
}

/// The state the timeline leaves out: where the state at the section's end differs from
/// what the client has once it applied the state at the start and then the timeline's
/// own state events.
fn hidden_state(window: &Window<'_>, part: &TimelinePart, end: u64) -> Result<Vec<ClientEvent>> {
    let sync = window.sync;
    let mut seen: StateMap = (*sync.rooms.state.get(part.state_at_start)?).clone();
    for (_, event_id, event) in &part.events {
        if let Some(state_key) = &event.state_key {
            seen.insert((event.kind.clone(), state_key.clone()), event_id.clone());
        }
    }
    let end = sync.rooms.state.get(end)?;
    let missing = end
        .iter()
        .filter(|(key, event_id)| seen.get(*key) != Some(*event_id))
        .map(|(k, v)| (k.clone(), v.clone()));
    state_events(window, missing, &timeline_senders(part))
}

fn timeline_senders(part: &TimelinePart) -> BTreeSet<String> {
    part.events
        .iter()
        .map(|(_, _, event)| event.sender.clone())
        .collect()
}

/// The state section as of the timeline's start: all of it on first sight (or
/// `full_state`), else what changed since the last sync, when there was a gap.
fn state_at_start(
    window: &Window<'_>,
    room_id: &RoomId,
    part: &TimelinePart,
    first_sight: bool,
) -> Result<Vec<ClientEvent>> {
    let sync = window.sync;
    let senders = timeline_senders(part);
    let at_start = sync.rooms.state.get(part.state_at_start)?;
    if first_sight || window.full_state {
        return state_events(
            window,
            at_start.iter().map(|(k, v)| (k.clone(), v.clone())),
            &senders,
        );
    }
    if !part.limited {
        return Ok(Vec::new());
    }
    let since_group = sync
        .rooms
        .state_group_at(room_id, window.since_position())?;
    let before: std::sync::Arc<StateMap> = sync.rooms.state.get(since_group)?;
    let changed = at_start
        .iter()
        .filter(|(key, event_id)| before.get(*key) != Some(*event_id))
        .map(|(k, v)| (k.clone(), v.clone()));
    let mut values = state_events(window, changed, &senders)?;
    if !window.filter.room.state.lazy_load_options.is_disabled() {
        // Members of timeline senders the client may never have seen.
        let known: BTreeSet<String> = values
            .iter()
            .filter_map(|event| event.state_key.clone())
            .collect();
        let members = senders
            .iter()
            .filter(|sender| !known.contains(*sender))
            .filter_map(|sender| {
                let key = ("m.room.member".to_owned(), sender.clone());
                at_start.get(&key).map(|id| (key, id.clone()))
            });
        values.extend(state_events(window, members, &senders)?);
    }
    Ok(values)
}

fn summary(window: &Window<'_>, room_id: &RoomId) -> Result<RoomSummary> {
    let sync = window.sync;
    let joined = sync.rooms.members_with(room_id, MembershipState::Join)?;
    let invited = sync.rooms.members_with(room_id, MembershipState::Invite)?;
    let mut summary = RoomSummary::new();
    let name_set = sync
        .rooms
        .state_content(room_id, "m.room.name", "")?
        .is_some()
        || sync
            .rooms
            .state_content(room_id, "m.room.canonical_alias", "")?
            .is_some();
    if !name_set {
        let mut heroes: Vec<OwnedUserId> = joined
            .iter()
            .chain(invited.iter())
            .filter(|user| *user != window.user())
            .cloned()
            .collect();
        heroes.sort();
        heroes.truncate(5);
        summary.heroes = heroes;
    }
    summary.joined_member_count = UInt::try_from(joined.len() as u64).ok();
    summary.invited_member_count = UInt::try_from(invited.len() as u64).ok();
    Ok(summary)
}

/// The stored notifications of a room after the user's read receipts (and after they
/// joined): all of them, or, when the filter asks for `unread_thread_notifications`, the
/// main timeline's and each thread's apart.
pub(super) fn unread(
    window: &Window<'_>,
    room_id: &RoomId,
    joined_at: u64,
) -> Result<(
    UnreadNotificationsCount,
    BTreeMap<OwnedEventId, UnreadNotificationsCount>,
)> {
    let sync = window.sync;
    let user = window.user();
    let marks = read_marks(&sync.rooms, &sync.receipts, room_id, user, joined_at)?;
    let found = sync
        .push_counts
        .room(user, room_id, &marks, window.until.position)?;
    let by_thread = window.filter.room.timeline.unread_thread_notifications;
    if !by_thread {
        let total = found.total();
        return Ok((
            counts(total.notifications, total.highlights),
            BTreeMap::new(),
        ));
    }
    let threads = found
        .threads
        .iter()
        .filter(|(_, count)| !count.is_zero())
        .map(|(root, count)| (root.clone(), counts(count.notifications, count.highlights)))
        .collect();
    Ok((
        counts(found.main.notifications, found.main.highlights),
        threads,
    ))
}

fn counts(notifications: u64, highlights: u64) -> UnreadNotificationsCount {
    let mut counts = UnreadNotificationsCount::new();
    counts.notification_count = UInt::new(notifications);
    counts.highlight_count = UInt::new(highlights);
    counts
}

fn ephemeral(window: &Window<'_>, room_id: &RoomId, first_sight: bool) -> Result<Vec<Value>> {
    let sync = window.sync;
    let mut events = Vec::new();
    let typing_since = if first_sight {
        0
    } else {
        window.since.map_or(0, |since| since.typing)
    };
    if let Some(users) = sync.typing.changed_since(room_id, typing_since)
        && (!users.is_empty() || !first_sight)
    {
        events.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
    }
    let receipts_since = if first_sight {
        0
    } else {
        window.since_position()
    };
    if let Some(content) = sync.receipts.content_since(
        room_id,
        window.user(),
        receipts_since,
        window.until.position,
        || sync.rooms.receipts_only_own(room_id, window.user()),
    )? {
        events.push(json!({ "type": "m.receipt", "content": content }));
    }
    let filter = &window.filter.room.ephemeral;
    Ok(events
        .into_iter()
        .filter(|event| {
            let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
            filters::allows(filter, kind, "")
        })
        .collect())
}

impl TimelinePart {
    /// The section as sync sends it; `gap_before` marks it limited even when it holds
    /// everything since `start` (a room seen for the first time mid-history).
    fn into_timeline(self, gap_before: bool) -> Timeline {
        let mut timeline = Timeline::new();
        timeline.limited = self.limited || gap_before;
        timeline.prev_batch = Some(self.start.to_string());
        timeline.events = self
            .events
            .into_iter()
            .map(|(_, _, event)| event.into_raw())
            .collect();
        timeline
    }
}

/// The state section as the state before the timeline.
fn state_before(events: Vec<ClientEvent>) -> State {
    State::Before(state_events_of(events))
}

fn state_events_of(events: Vec<ClientEvent>) -> StateEvents {
    let mut state = StateEvents::new();
    state.events = events.into_iter().map(ClientEvent::into_raw).collect();
    state
}

/// The state at the section's end (`state_after`, MSC4222): all of it on first sight
/// (or `full_state`), else what differs from the state at the last sync, the timeline's
/// own state events included; with lazy loading, the timeline senders' members too.
fn state_after(
    window: &Window<'_>,
    room_id: &RoomId,
    part: &TimelinePart,
    first_sight: bool,
    end: u64,
) -> Result<Vec<ClientEvent>> {
    let sync = window.sync;
    let senders = timeline_senders(part);
    let at_end = sync
        .rooms
        .state
        .get(sync.rooms.state_group_at(room_id, end)?)?;
    if first_sight || window.full_state {
        return state_events(
            window,
            at_end.iter().map(|(k, v)| (k.clone(), v.clone())),
            &senders,
        );
    }
    let before = sync.rooms.state.get(
        sync.rooms
            .state_group_at(room_id, window.since_position())?,
    )?;
    let changed = at_end
        .iter()
        .filter(|(key, event_id)| before.get(*key) != Some(*event_id))
        .map(|(k, v)| (k.clone(), v.clone()));
    let mut values = state_events(window, changed, &senders)?;
    if !window.filter.room.state.lazy_load_options.is_disabled() {
        let known: BTreeSet<String> = values
            .iter()
            .filter_map(|event| event.state_key.clone())
            .collect();
        let members = senders
            .iter()
            .filter(|sender| !known.contains(*sender))
            .filter_map(|sender| {
                let key = ("m.room.member".to_owned(), sender.clone());
                at_end.get(&key).map(|id| (key, id.clone()))
            });
        values.extend(state_events(window, members, &senders)?);
    }
    Ok(values)
}

fn account_data_events(events: Vec<(String, Value)>) -> RoomAccountData {
    let mut data = RoomAccountData::new();
    data.events = events
        .into_iter()
        .map(|(kind, content)| raw(json!({ "type": kind, "content": content })))
        .collect();
    data
}

/// Notes the room's newest message (not state) from someone else that the sync hands
/// over, for the user's delivered receipt.
pub(super) fn note_handed(window: &Window<'_>, room_id: &RoomId, part: &TimelinePart) {
    let newest_from_others =
        part.events.iter().rev().find(|(_, _, event)| {
            event.state_key.is_none() && event.sender != window.user().as_str()
        });
    if let Some((position, event_id, event)) = newest_from_others
        && let Ok(sender) = OwnedUserId::try_from(event.sender.as_str())
    {
        window.handed.lock().push(crate::service::delivery::Handed {
            room_id: room_id.to_owned(),
            event_id: event_id.clone(),
            position: *position,
            sender,
        });
    }
}

/// A joined room's section, or `None` when nothing changed in it.
pub async fn joined(
    window: &Window<'_>,
    room_id: &RoomId,
    membership: &Membership,
    account_data: Vec<(String, Value)>,
) -> Result<Option<JoinedRoom>> {
    let since = window.since_position();
    let first_sight = window.since.is_none() || membership.position > since;
    // A room joined since the last sync shows its recent history as an initial sync
    // would (what the user may see of it), not only what came after the join.
    let part = timeline(
        window,
        room_id,
        if first_sight { 0 } else { since },
        window.until.position,
    )?;
    let ephemeral = ephemeral(window, room_id, first_sight)?;
    let quiet = part.events.is_empty() && ephemeral.is_empty() && account_data.is_empty();
    if quiet && !first_sight && !window.full_state {
        return Ok(None);
    }
    let mut room = JoinedRoom::new();
    let state = if window.use_state_after {
        State::After(state_events_of(state_after(
            window,
            room_id,
            &part,
            first_sight,
            window.until.position,
        )?))
    } else {
        state_before(state_section(window, room_id, &part, first_sight)?)
    };
    let state_changed = part
        .events
        .iter()
        .any(|(_, _, event)| event.kind == "m.room.member");
    let gap_before = first_sight && window.since.is_some() && part.start > 0;
    note_handed(window, room_id, &part);
    room.timeline = part.into_timeline(gap_before);
    room.state = state;
    let mut ephemeral_events = Ephemeral::new();
    ephemeral_events.events = ephemeral.into_iter().map(raw).collect();
    room.ephemeral = ephemeral_events;
    room.account_data = account_data_events(account_data);
    let (counts, thread_counts) = unread(window, room_id, membership.position)?;
    room.unread_notifications = counts;
    room.unread_thread_notifications = thread_counts;
    if first_sight || state_changed {
        room.summary = summary(window, room_id)?;
    }
    Ok(Some(room))
}

/// An invite: the stripped state that lets the client show the room; `None` when the
/// inviter is ignored.
pub fn invited(
    window: &Window<'_>,
    room_id: &RoomId,
    membership: &Membership,
) -> Result<Option<InvitedRoom>> {
    Ok(stripped_state(window, room_id, membership)?.map(|events| {
        let mut invite_state = InviteState::new();
        invite_state.events = events;
        let mut room = InvitedRoom::new();
        room.invite_state = invite_state;
        room
    }))
}

/// A knock: the stripped state of the room knocked on.
pub fn knocked(
    window: &Window<'_>,
    room_id: &RoomId,
    membership: &Membership,
) -> Result<Option<KnockedRoom>> {
    Ok(stripped_state(window, room_id, membership)?.map(|events| {
        let mut knock_state = KnockState::new();
        knock_state.events = events;
        let mut room = KnockedRoom::new();
        room.knock_state = knock_state;
        room
    }))
}

/// The stripped state shown with an invite or a knock (`membership`'s event); `None`
/// when the inviter is ignored.
pub(super) fn stripped_state(
    window: &Window<'_>,
    room_id: &RoomId,
    membership: &Membership,
) -> Result<Option<Vec<ruma::serde::Raw<ruma::events::AnyStrippedStateEvent>>>> {
    let sync = window.sync;
    let invite = sync.rooms.pdu(&membership.event_id)?;
    if let Some(pdu) = &invite
        && let Ok(parsed) = pdu.parse(membership.event_id.clone())
        && window.is_ignored_sender(parsed.sender.as_str())
    {
        return Ok(None);
    }
    // A room this server is not in: the stripped state its server sent.
    if invite.as_ref().is_some_and(|pdu| pdu.outlier) {
        return Ok(Some(
            sync.rooms
                .remote_invite_state(window.user(), room_id)?
                .into_iter()
                .map(raw)
                .collect(),
        ));
    }
    let state = match &invite {
        Some(pdu) => sync.rooms.state.get(pdu.state_after)?,
        None => sync.rooms.current_state(room_id)?,
    };
    let mut events = Vec::new();
    let mut wanted: Vec<(String, String)> =
        crate::service::rooms::remote_invite::STRIPPED_STATE_TYPES
            .iter()
            .map(|kind| ((*kind).to_owned(), String::new()))
            .collect();
    wanted.push(("m.room.member".to_owned(), window.user().to_string()));
    if let Some(inviter) = invite
        .as_ref()
        .and_then(|pdu| pdu.parse(membership.event_id.clone()).ok())
    {
        wanted.push(("m.room.member".to_owned(), inviter.sender.to_string()));
    }
    for key in wanted {
        let Some(event_id) = state.get(&key) else {
            continue;
        };
        let Some(event) = sync.rooms.state_event(event_id)? else {
            continue;
        };
        events.push(raw(json!({
            "type": event.kind,
            "state_key": event.state_key,
            "content": event.content,
            "sender": event.sender,
        })));
    }
    Ok(Some(events))
}

/// A room the user left or was removed from: the timeline up to that moment.
pub fn left(
    window: &Window<'_>,
    room_id: &RoomId,
    membership: &Membership,
) -> Result<Option<LeftRoom>> {
    let since = window.since_position();
    let until = membership.position.min(window.until.position);
    let part = timeline(window, room_id, since, until)?;
    let mut room = LeftRoom::new();
    let first_sight = window.since.is_none();
    room.state = if window.use_state_after {
        State::After(state_events_of(state_after(
            window,
            room_id,
            &part,
            first_sight,
            until,
        )?))
    } else {
        state_before(state_section(window, room_id, &part, first_sight)?)
    };
    room.timeline = part.into_timeline(false);
    Ok(Some(room))
}
