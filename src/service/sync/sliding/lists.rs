//! The rooms of a user's room list: which rooms a list holds (its filters), in which
//! order (most recent activity first), and which of them fall in the asked ranges.

use std::collections::{BTreeMap, HashSet};

use ruma::{
    OwnedRoomId, UserId, api::client::sync::sync_events::v5::request::ListFilters,
    directory::RoomTypeFilter, events::room::member::MembershipState,
};
use serde_json::Value;

use crate::{
    Result,
    service::{rooms::Membership, sync::Syncer},
};

/// One room of the user's, as the lists see it.
#[derive(Clone, Debug)]
pub struct ListedRoom {
    pub room_id: OwnedRoomId,
    pub membership: Membership,
    /// The sort key and the response's `bump_stamp`: the latest bumping event for a
    /// joined room, the membership's position otherwise.
    pub bump: u64,
}

/// The rooms a list may show, most recent first: joined, invited, knocked; rooms left,
/// kicked from or banned from only when that happened after `since` (the client still
/// shows them and must hear of it).
pub fn user_rooms(
    sync: &Syncer,
    memberships: &[(OwnedRoomId, Membership)],
    since: Option<u64>,
) -> Result<Vec<ListedRoom>> {
    let mut out = Vec::with_capacity(memberships.len());
    for (room_id, membership) in memberships {
        let bump = match membership.membership {
            MembershipState::Join => match sync.rooms.bump_position(room_id)? {
                0 => membership.position,
                bump => bump,
            },
            MembershipState::Invite | MembershipState::Knock => membership.position,
            MembershipState::Leave | MembershipState::Ban
                if since.is_some_and(|since| membership.position > since) =>
            {
                membership.position
            }
            _ => continue,
        };
        out.push(ListedRoom {
            room_id: room_id.clone(),
            membership: membership.clone(),
            bump,
        });
    }
    out.sort_by(|a, b| b.bump.cmp(&a.bump).then_with(|| a.room_id.cmp(&b.room_id)));
    Ok(out)
}

/// What the filters look at, read once per request and only for the filters asked.
pub struct FilterFacts<'a> {
    sync: &'a Syncer,
    user: &'a UserId,
    direct: Option<HashSet<OwnedRoomId>>,
}

impl<'a> FilterFacts<'a> {
    pub fn new(sync: &'a Syncer, user: &'a UserId) -> Self {
        Self {
            sync,
            user,
            direct: None,
        }
    }

    /// The rooms `m.direct` names.
    fn direct(&mut self) -> Result<&HashSet<OwnedRoomId>> {
        if self.direct.is_none() {
            let content = self.sync.account_data.get(self.user, None, "m.direct")?;
            let rooms = content
                .as_ref()
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|users| users.values())
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|room| OwnedRoomId::try_from(room).ok())
                .collect();
            self.direct = Some(rooms);
        }
        Ok(self.direct.get_or_insert_default())
    }

    /// Whether a room is a direct chat: named in `m.direct`, or an invite marked
    /// `is_direct`.
    pub fn is_dm(&mut self, room: &ListedRoom) -> Result<bool> {
        if self.direct()?.contains(&room.room_id) {
            return Ok(true);
        }
        if room.membership.membership != MembershipState::Invite {
            return Ok(false);
        }
        let Some(pdu) = self.sync.rooms.pdu(&room.membership.event_id)? else {
            return Ok(false);
        };
        let content: Value = serde_json::from_str(pdu.pdu.get())
            .ok()
            .and_then(|event: Value| event.get("content").cloned())
            .unwrap_or_default();
        Ok(content.get("is_direct").and_then(Value::as_bool) == Some(true))
    }

    fn state(&self, room: &ListedRoom, kind: &str) -> Result<Option<Value>> {
        if !self.sync.rooms.exists(&room.room_id)? {
            // A room only known from an invite: its stripped state.
            let stripped = self
                .sync
                .rooms
                .remote_invite_state(self.user, &room.room_id)?;
            return Ok(stripped
                .into_iter()
                .find(|event| event.get("type").and_then(Value::as_str) == Some(kind))
                .and_then(|event| event.get("content").cloned()));
        }
        self.sync.rooms.state_content(&room.room_id, kind, "")
    }

    fn room_type(&self, room: &ListedRoom) -> Result<Option<String>> {
        Ok(self.state(room, "m.room.create")?.and_then(|content| {
            content
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }))
    }

    fn is_encrypted(&self, room: &ListedRoom) -> Result<bool> {
        Ok(self.state(room, "m.room.encryption")?.is_some())
    }

    /// The rooms the given spaces list as children.
    pub fn space_children(&self, spaces: &[OwnedRoomId]) -> Result<HashSet<OwnedRoomId>> {
        let mut children = HashSet::new();
        for space in spaces {
            if !self.sync.rooms.exists(space)? {
                continue;
            }
            let state = self.sync.rooms.current_state(space)?;
            for ((kind, state_key), event_id) in state.range(
                ("m.space.child".to_owned(), String::new())
                    ..("m.space.child\u{0}".to_owned(), String::new()),
            ) {
                let _ = kind;
                let valid = self.sync.rooms.state_event(event_id)?.is_some_and(|pdu| {
                    serde_json::from_str::<Value>(pdu.content.get())
                        .ok()
                        .and_then(|content| content.get("via").cloned())
                        .is_some_and(|via| via.as_array().is_some_and(|v| !v.is_empty()))
                });
                if valid && let Ok(room_id) = OwnedRoomId::try_from(state_key.as_str()) {
                    children.insert(room_id);
                }
            }
        }
        Ok(children)
    }

    /// Whether a room passes a list's filters (`spaces` given apart: ruma's type has no
    /// field for them).
    pub fn passes(
        &mut self,
        room: &ListedRoom,
        filters: &ListFilters,
        in_spaces: Option<&HashSet<OwnedRoomId>>,
    ) -> Result<bool> {
        let invited = room.membership.membership == MembershipState::Invite;
        if filters.is_invite.is_some_and(|wanted| wanted != invited) {
            return Ok(false);
        }
        if let Some(wanted) = filters.is_dm
            && self.is_dm(room)? != wanted
        {
            return Ok(false);
        }
        if let Some(wanted) = filters.is_encrypted
            && self.is_encrypted(room)? != wanted
        {
            return Ok(false);
        }
        if !filters.room_types.is_empty() || !filters.not_room_types.is_empty() {
            let room_type = self.room_type(room)?;
            let matches = |filter: &RoomTypeFilter| filter.as_str() == room_type.as_deref();
            if !filters.room_types.is_empty() && !filters.room_types.iter().any(matches) {
                return Ok(false);
            }
            if filters.not_room_types.iter().any(matches) {
                return Ok(false);
            }
        }
        if let Some(children) = in_spaces
            && !children.contains(&room.room_id)
        {
            return Ok(false);
        }
        Ok(true)
    }
}

/// The `spaces` filter of each list, read from the request body as sent.
pub fn space_filters(body: Option<&Value>) -> BTreeMap<String, Vec<OwnedRoomId>> {
    let mut out = BTreeMap::new();
    let Some(lists) = body
        .and_then(|body| body.get("lists"))
        .and_then(Value::as_object)
    else {
        return out;
    };
    for (name, list) in lists {
        if let Some(spaces) = list.pointer("/filters/spaces").and_then(Value::as_array) {
            out.insert(
                name.clone(),
                spaces
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|room| OwnedRoomId::try_from(room).ok())
                    .collect(),
            );
        }
    }
    out
}

/// The indexes a list's ranges cover (inclusive, as MSC4186 writes them), within `len`.
pub fn in_ranges(ranges: &[(ruma::UInt, ruma::UInt)], len: usize) -> Vec<usize> {
    let mut indexes = std::collections::BTreeSet::new();
    for (start, end) in ranges {
        let start = usize::try_from(u64::from(*start)).unwrap_or(usize::MAX);
        let end = usize::try_from(u64::from(*end)).unwrap_or(usize::MAX);
        if start >= len || end < start {
            continue;
        }
        indexes.extend(start..=end.min(len - 1));
    }
    indexes.into_iter().collect()
}
