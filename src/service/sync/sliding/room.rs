//! One room of a sliding sync response: sent whole (`initial`) the first time a
//! connection sees it or when the client asks more of it, otherwise only what changed
//! since the client last had it.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use ruma::{
    OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, UInt,
    api::client::{
        filter::FilterDefinition,
        sync::sync_events::v5::response::{Hero, Room},
    },
    events::room::member::MembershipState,
};
use serde_json::Value;

use super::{
    connections::{RequiredSet, SentRoom},
    lists::ListedRoom,
    required::{Required, name_from_heroes},
};
use crate::{
    Result,
    service::{
        rooms::{
            pdu::{ClientEvent, ClientFormat},
            state::StateMap,
        },
        sync::{Window, room as v3room},
    },
};

/// What the client asked of a room: the largest timeline and every state entry asked by
/// the lists and the subscription that include it. Shared between the rooms of a list.
#[derive(Clone, Debug, Default)]
pub struct RoomConfig {
    pub timeline_limit: u64,
    pub required: Arc<Required>,
    /// `required.id()`.
    pub required_id: u64,
}

impl RoomConfig {
    pub fn of(timeline_limit: UInt, required: &[(ruma::events::StateEventType, String)]) -> Self {
        let mut entries = Required::default();
        entries.add(required);
        Self {
            timeline_limit: u64::from(timeline_limit),
            required_id: entries.id(),
            required: Arc::new(entries),
        }
    }

    /// Adds what `other` asks (a room in two lists, or in a list and subscribed).
    pub fn merge(&mut self, other: &RoomConfig) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        if !Arc::ptr_eq(&self.required, &other.required)
            && !other.required.within(&self.required.entries)
        {
            Arc::make_mut(&mut self.required)
                .entries
                .extend(other.required.entries.iter().cloned());
            self.required_id = self.required.id();
        }
    }
}

/// Where this request stands for a room.
pub struct RoomInputs<'a> {
    pub listed: &'a ListedRoom,
    pub config: &'a RoomConfig,
    pub prior: Option<&'a SentRoom>,
    /// The `required_state` entries `prior` was sent with, if still known.
    pub prior_required: Option<&'a RequiredSet>,
    /// The connection's position (0 for a new connection).
    pub position: u64,
    /// Rooms changed since the connection's position, when known.
    pub changed: Option<&'a HashSet<OwnedRoomId>>,
}

/// The room's section (`None` when nothing changed) and what the client will then hold.
pub async fn build(base: &Window<'_>, inputs: RoomInputs<'_>) -> Result<(Option<Room>, SentRoom)> {
    let RoomInputs {
        listed,
        config,
        prior,
        prior_required,
        position,
        changed,
    } = inputs;
    let room_id = &listed.room_id;
    let since = prior.map(|prior| prior.since.unwrap_or(position));
    let initial = match (prior, since) {
        (Some(prior), Some(since)) => {
            config.timeline_limit > prior.timeline_limit
                || !prior_required.is_some_and(|sent| config.required.within(sent))
                || listed.membership.position > since
        }
        _ => true,
    };
    let mut sent = SentRoom {
        since: None,
        timeline_limit: config.timeline_limit,
        required: config.required_id,
        lazy_members: match (initial, prior) {
            (false, Some(prior)) => prior.lazy_members.clone(),
            _ => BTreeSet::new(),
        },
    };
    let since = if initial { 0 } else { since.unwrap_or(0) };
    let sync = base.sync;

    if matches!(
        listed.membership.membership,
        MembershipState::Invite | MembershipState::Knock
    ) {
        if !initial {
            return Ok((None, sent));
        }
        let Some(events) = v3room::stripped_state(base, room_id, &listed.membership)? else {
            return Ok((None, sent));
        };
        let mut room = Room::new();
        room.invite_state = Some(events);
        room.initial = Some(true);
        room.bump_stamp = UInt::new(listed.bump);
        return Ok((Some(room), sent));
    }

    let untouched = changed.is_some_and(|changed| !changed.contains(room_id));
    if !initial && untouched {
        return Ok((None, sent));
    }
    let left = listed.membership.membership != MembershipState::Join;
    let until = if left {
        listed.membership.position.min(base.until.position)
    } else {
        base.until.position
    };

    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = UInt::new(config.timeline_limit.max(1));
    let window = Window {
        sync,
        sender: base.sender,
        filter: &filter,
        since: None,
        until: base.until,
        full_state: false,
        use_state_after: false,
        ignored: base.ignored.clone(),
        handed: Default::default(),
    };
    let part = if config.timeline_limit == 0 || until <= since {
        None
    } else {
        Some(v3room::timeline(&window, room_id, since, until)?)
    };
    if let Some(part) = &part {
        v3room::note_handed(base, room_id, part);
    }
    let senders: BTreeSet<String> = part
        .iter()
        .flat_map(|part| &part.events)
        .map(|(_, _, event)| event.sender.clone())
        .collect();

    let end_group = sync.rooms.state_group_at(room_id, until)?;
    let end = sync.rooms.state.get(end_group)?;
    let lazy_new: BTreeSet<String> = if config.required.lazy() {
        senders
            .iter()
            .filter(|sender| !sent.lazy_members.contains(*sender))
            .cloned()
            .collect()
    } else {
        BTreeSet::new()
    };
    let user = base.user();
    let (state_events, touched) = if initial {
        let wanted = end
            .iter()
            .filter(|((kind, key), _)| config.required.wants(kind, key, user, &lazy_new));
        (state_values(&window, wanted)?, true)
    } else {
        let start_group = sync.rooms.state_group_at(room_id, since)?;
        let mut values = Vec::new();
        let mut touched = false;
        if start_group != end_group {
            let start = sync.rooms.state.get(start_group)?;
            let changed_entries: Vec<_> = end
                .iter()
                .filter(|(key, event_id)| start.get(*key) != Some(*event_id))
                .collect();
            touched = changed_entries.iter().any(|((kind, _), _)| {
                matches!(
                    kind.as_str(),
                    "m.room.name" | "m.room.avatar" | "m.room.canonical_alias" | "m.room.member"
                )
            });
            let known: BTreeSet<String> = sent.lazy_members.union(&lazy_new).cloned().collect();
            values = state_values(
                &window,
                changed_entries
                    .into_iter()
                    .filter(|((kind, key), _)| config.required.wants(kind, key, user, &known)),
            )?;
        }
        // Members of new timeline senders the client has not been sent.
        let fresh_members = end.iter().filter(|((kind, key), _)| {
            kind == "m.room.member" && lazy_new.contains(key) && !values_have(&values, kind, key)
        });
        values.extend(state_values(&window, fresh_members)?);
        (values, touched)
    };
    sent.lazy_members.extend(lazy_new);

    let receipts_moved = changed.is_none_or(|changed| changed.contains(room_id));
    let quiet = part.as_ref().is_none_or(|part| part.events.is_empty());
    if !initial && quiet && state_events.is_empty() && !receipts_moved {
        return Ok((None, sent));
    }
    let mut room = Room::new();
    if initial {
        room.initial = Some(true);
    }
    if let Some(part) = part {
        room.limited = part.limited;
        room.prev_batch = Some(part.start.to_string());
        if position > 0 {
            let live = part
                .events
                .iter()
                .filter(|(event_position, _, _)| *event_position > position)
                .count();
            room.num_live = UInt::new(live as u64);
        }
        room.timeline = part
            .events
            .into_iter()
            .map(|(_, _, event)| event.into_raw())
            .collect();
    } else if initial {
        room.prev_batch = Some(until.to_string());
    }
    room.required_state = state_events
        .into_iter()
        .map(ClientEvent::into_raw)
        .collect();
    room.bump_stamp = UInt::new(listed.bump);
    if initial || touched {
        describe(&window, room_id, &end, &mut room)?;
    }
    if !left {
        let (counts, _) = v3room::unread(&window, room_id, listed.membership.position)?;
        room.unread_notifications = counts;
    }
    Ok((Some(room), sent))
}

fn values_have(events: &[ClientEvent], kind: &str, state_key: &str) -> bool {
    events
        .iter()
        .any(|event| event.kind == kind && event.state_key.as_deref() == Some(state_key))
}

fn state_values<'a>(
    window: &Window<'_>,
    entries: impl IntoIterator<Item = (&'a (String, String), &'a ruma::OwnedEventId)>,
) -> Result<Vec<ClientEvent>> {
    let mut out = Vec::new();
    for (_, event_id) in entries {
        if let Some(pdu) = window.sync.rooms.pdu(event_id)? {
            out.push(pdu.to_client(event_id, ClientFormat::Sync, None, None));
        }
    }
    Ok(out)
}

/// The room's name, avatar, heroes and member counts, as the spec's display-name
/// algorithm computes them from the state.
fn describe(
    window: &Window<'_>,
    room_id: &RoomId,
    state: &StateMap,
    room: &mut Room,
) -> Result<()> {
    let sync = window.sync;
    let content = |kind: &str| sync.rooms.content_in(state, kind, "");
    let name = content("m.room.name")?
        .and_then(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .filter(|name| !name.is_empty());
    let alias = content("m.room.canonical_alias")?
        .and_then(|c| c.get("alias").and_then(Value::as_str).map(str::to_owned));
    let avatar = content("m.room.avatar")?.and_then(|c| {
        c.get("url")
            .and_then(Value::as_str)
            .filter(|url| !url.is_empty())
            .map(OwnedMxcUri::from)
    });

    let joined = sync.rooms.members_with(room_id, MembershipState::Join)?;
    let invited = sync.rooms.members_with(room_id, MembershipState::Invite)?;
    room.joined_count = UInt::new(joined.len() as u64);
    room.invited_count = UInt::new(invited.len() as u64);

    let mut heroes: Vec<Hero> = Vec::new();
    if name.is_none() && alias.is_none() {
        let mut candidates: Vec<OwnedUserId> = joined
            .iter()
            .chain(invited.iter())
            .filter(|member| *member != window.user())
            .cloned()
            .collect();
        candidates.sort();
        candidates.truncate(5);
        for user_id in candidates {
            let member = sync
                .rooms
                .content_in(state, "m.room.member", user_id.as_str())?
                .unwrap_or_default();
            let mut hero = Hero::new(user_id);
            let (name, avatar) = crate::service::rooms::membership::member_profile_in(&member);
            hero.name = name.filter(|name| !name.is_empty());
            hero.avatar = avatar;
            heroes.push(hero);
        }
    }
    let others = (joined.len() + invited.len()).saturating_sub(1) as u64;
    room.name = Some(match (name, alias) {
        (Some(name), _) => name,
        (None, Some(alias)) => alias,
        (None, None) => {
            let names: Vec<String> = heroes
                .iter()
                .map(|hero| {
                    hero.name
                        .clone()
                        .unwrap_or_else(|| hero.user_id.to_string())
                })
                .collect();
            name_from_heroes(&names, others)
        }
    });
    room.avatar = match avatar {
        Some(avatar) => ruma::JsOption::Some(avatar),
        // A direct chat shows the other person's avatar.
        None => match heroes.as_slice() {
            [hero] if others == 1 => hero
                .avatar
                .clone()
                .map_or(ruma::JsOption::Null, ruma::JsOption::Some),
            _ => ruma::JsOption::Null,
        },
    };
    if !heroes.is_empty() {
        room.heroes = Some(heroes);
    }
    Ok(())
}
