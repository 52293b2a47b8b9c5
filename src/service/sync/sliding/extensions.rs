//! The extensions of a sliding sync response: to-device messages, end-to-end encryption
//! (device lists, key counts), account data, receipts, typing and thread subscriptions.

use std::collections::{HashMap, HashSet};

use ruma::{
    OwnedRoomId, RoomId,
    api::client::sync::sync_events::v5::{
        request::{self, ExtensionRoomConfig},
        response,
    },
};
use serde_json::json;

use super::InWindow;
use crate::{
    Result,
    json::raw,
    service::{
        e2ee,
        sync::{Window, key_counts, token::decimal},
        thread_subscriptions::{CHANGES_LIMIT, CHANGES_MOST, listed},
    },
};

/// Where the extensions start from.
pub struct Since {
    /// The connection's stream position (`None` on a new connection).
    pub position: Option<u64>,
    /// The typing serial the client is up to.
    pub typing: u64,
    /// Rooms sent whole in this response: their receipts and account data go whole too.
    pub initial_rooms: HashSet<OwnedRoomId>,
}

/// The rooms an extension covers: those of the lists and subscriptions it names (all by
/// default), among the rooms in the client's window.
pub struct Coverage<'a, 'w> {
    pub lists: Option<&'a [String]>,
    pub rooms: Option<&'a [ExtensionRoomConfig]>,
    pub window: &'a HashMap<&'w RoomId, InWindow<'w>>,
}

impl<'a, 'w> Coverage<'a, 'w> {
    pub fn new(
        lists: &'a Option<Vec<String>>,
        rooms: &'a Option<Vec<ExtensionRoomConfig>>,
        window: &'a HashMap<&'w RoomId, InWindow<'w>>,
    ) -> Self {
        Self {
            lists: lists.as_deref(),
            rooms: rooms.as_deref(),
            window,
        }
    }

    pub fn covers(&self, room_id: &RoomId) -> bool {
        let Some(entry) = self.window.get(room_id) else {
            return false;
        };
        let by_list = match self.lists {
            None => !entry.lists.is_empty(),
            Some(names) => names
                .iter()
                .any(|name| name == "*" || entry.lists.contains(&name.as_str())),
        };
        let by_room = match self.rooms {
            None => entry.subscribed,
            Some(configs) => configs.iter().any(|config| match config {
                ExtensionRoomConfig::AllSubscribed => entry.subscribed,
                ExtensionRoomConfig::Room(room) => room == room_id,
                _ => false,
            }),
        };
        by_list || by_room
    }
}

/// The to-device messages waiting for the device, after acknowledging those up to the
/// client's `since`.
pub fn to_device(
    window: &Window<'_>,
    config: &request::ToDevice,
) -> Result<Option<response::ToDevice>> {
    if config.enabled != Some(true) {
        return Ok(None);
    }
    let sync = window.sync;
    let user = window.user();
    let Some(device) = window.sender.device_id.as_deref() else {
        return Ok(None);
    };
    if let Some(since) = config.since.as_deref().and_then(decimal) {
        sync.to_device
            .acknowledge(user, device, since.min(sync.stream.frontier()))?;
    }
    let (events, cut) = sync
        .to_device
        .pending(user, device, window.until.position)?;
    let mut out = response::ToDevice::default();
    out.next_batch = cut.unwrap_or(window.until.position).to_string();
    out.events = events.into_iter().map(raw).collect();
    Ok(Some(out))
}

/// Device-list changes since the connection's position and the device's key counts.
pub fn e2ee(window: &Window<'_>, config: &request::E2EE, since: &Since) -> Result<response::E2EE> {
    let mut out = response::E2EE::default();
    if config.enabled != Some(true) {
        return Ok(out);
    }
    let sync = window.sync;
    let user = window.user();
    if let Some(position) = since.position {
        let delta = e2ee::device_lists::delta(
            &sync.e2ee,
            &sync.rooms,
            user,
            position,
            window.until.position,
        )?;
        out.device_lists.changed = delta.changed;
        out.device_lists.left = delta.left;
    }
    if let Some(device) = window.sender.device_id.as_deref() {
        let (counts, fallback) = key_counts(sync, user, device)?;
        out.device_one_time_keys_count = counts;
        out.device_unused_fallback_key_types = Some(fallback);
    }
    Ok(out)
}

/// Global account data changed since the connection's position (all of it on a new
/// connection) and the covered rooms' (all of a room's when it is sent whole).
pub fn account_data(
    window: &Window<'_>,
    config: &request::AccountData,
    since: &Since,
    coverage: &Coverage<'_, '_>,
) -> Result<response::AccountData> {
    let mut out = response::AccountData::default();
    if config.enabled != Some(true) {
        return Ok(out);
    }
    let sync = window.sync;
    let user = window.user();
    let changes = sync.account_data.changes_since(
        user,
        since.position.unwrap_or(0),
        window.until.position,
    )?;
    for (room_id, kind, content) in changes {
        let event = json!({ "type": kind, "content": content });
        match room_id.and_then(|room| OwnedRoomId::try_from(room).ok()) {
            None => out.global.push(raw(event)),
            Some(room_id)
                if coverage.covers(&room_id) && !since.initial_rooms.contains(&room_id) =>
            {
                out.rooms.entry(room_id).or_default().push(raw(event));
            }
            Some(_) => {}
        }
    }
    for room_id in since
        .initial_rooms
        .iter()
        .filter(|room| coverage.covers(room))
    {
        let events: Vec<_> = sync
            .account_data
            .of_room(user, room_id)?
            .into_iter()
            .map(|(kind, content)| raw(json!({ "type": kind, "content": content })))
            .collect();
        if !events.is_empty() {
            out.rooms.insert(room_id.clone(), events);
        }
    }
    Ok(out)
}

/// Read receipts of the covered rooms: all of a room sent whole, else what changed.
pub fn receipts(
    window: &Window<'_>,
    config: &request::Receipts,
    since: &Since,
    coverage: &Coverage<'_, '_>,
    changed: Option<&HashSet<OwnedRoomId>>,
) -> Result<response::Receipts> {
    let mut out = response::Receipts::default();
    if config.enabled != Some(true) {
        return Ok(out);
    }
    let sync = window.sync;
    // The rooms that can have news: those that moved (or every room of the window when
    // that is not known) and those sent whole.
    let candidates: Vec<&RoomId> = match (since.position, changed) {
        (Some(_), Some(changed)) => changed
            .iter()
            .chain(since.initial_rooms.iter())
            .map(|room| room.as_ref())
            .collect(),
        _ => coverage.window.keys().copied().collect(),
    };
    for room_id in candidates {
        if !coverage.covers(room_id) || out.rooms.contains_key(room_id) {
            continue;
        }
        let whole = since.initial_rooms.contains(room_id) || since.position.is_none();
        let from = if whole {
            0
        } else {
            since.position.unwrap_or(0)
        };
        if let Some(content) = sync.receipts.content_since(
            room_id,
            window.user(),
            from,
            window.until.position,
            || sync.rooms.receipts_only_own(room_id, window.user()),
        )? {
            out.rooms.insert(
                room_id.to_owned(),
                raw(json!({ "type": "m.receipt", "content": content })),
            );
        }
    }
    Ok(out)
}

/// Who is typing in the covered rooms where that changed (or that are sent whole).
pub fn typing(
    window: &Window<'_>,
    config: &request::Typing,
    since: &Since,
    coverage: &Coverage<'_, '_>,
) -> Result<response::Typing> {
    let mut out = response::Typing::default();
    if config.enabled != Some(true) {
        return Ok(out);
    }
    let typing = &window.sync.typing;
    // Rooms with any typing state at all; each is then asked from where the client is.
    for room_id in typing.rooms_changed_since(0) {
        if !coverage.covers(&room_id) {
            continue;
        }
        let whole = since.initial_rooms.contains(&room_id) || since.position.is_none();
        let from = if whole { 0 } else { since.typing };
        if let Some(users) = typing.changed_since(&room_id, from)
            && (!users.is_empty() || !whole)
        {
            out.rooms.insert(
                room_id,
                raw(json!({ "type": "m.typing", "content": { "user_ids": users } })),
            );
        }
    }
    Ok(out)
}

/// The user's thread subscription changes since the connection's position (all of them
/// on a new connection), newest first up to the limit asked; `prev_batch` pages back
/// through the rest with `/thread_subscriptions` (MSC4308).
pub fn thread_subscriptions(
    window: &Window<'_>,
    config: &request::ThreadSubscriptions,
    since: &Since,
) -> Result<response::ThreadSubscriptions> {
    let mut out = response::ThreadSubscriptions::default();
    let Some(subscriptions) = &window.sync.thread_subscriptions else {
        return Ok(out);
    };
    if config.enabled != Some(true) {
        return Ok(out);
    }
    let limit = config
        .limit
        .map_or(CHANGES_LIMIT, |limit| u64::from(limit) as usize)
        .clamp(1, CHANGES_MOST);
    let (changes, rest) = subscriptions.changes(
        window.user(),
        since.position.unwrap_or(0),
        window.until.position.saturating_add(1),
        limit,
    )?;
    out.prev_batch = rest;
    (out.subscribed, out.unsubscribed) = listed(changes);
    Ok(out)
}

/// Whether a response says anything the client must hear now (else a long-poll waits).
pub fn has_news(extensions: &response::Extensions) -> bool {
    extensions
        .to_device
        .as_ref()
        .is_some_and(|to_device| !to_device.events.is_empty())
        || !extensions.e2ee.device_lists.is_empty()
        || !extensions.account_data.is_empty()
        || !extensions.receipts.is_empty()
        || !extensions.typing.is_empty()
        || !extensions.thread_subscriptions.is_empty()
}
