//! Whose devices a user must fetch again: the `device_lists` of sync and
//! `/keys/changes`.
//!
//! Between two stream positions a user's client must hear of
//! - every user sharing a room with them whose devices or cross-signing keys changed
//!   (the user included: their own other devices);
//! - everyone in a room they joined, and everyone who joined one of their rooms (new
//!   people to encrypt for);
//! - in `left`, the users they no longer share any room with (no longer encrypted for).

use std::collections::BTreeSet;

use ruma::events::room::member::MembershipState;
use ruma::{OwnedUserId, UserId};

use super::E2ee;
use crate::{Result, service::rooms::Rooms};

#[derive(Debug, Default)]
pub struct DeviceListDelta {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

impl DeviceListDelta {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

/// The device-list changes `user` must hear of in `(since, until]`.
pub fn delta(
    e2ee: &E2ee,
    rooms: &Rooms,
    user: &UserId,
    since: u64,
    until: u64,
) -> Result<DeviceListDelta> {
    let joined = rooms.joined_rooms(user)?;
    let mut changed = BTreeSet::new();
    let mut gone = BTreeSet::new();

    for other in e2ee.device_list_changes(since, until)? {
        if other == user || rooms.joined_any(&joined, &other)? {
            changed.insert(other);
        }
    }
    let own_changes = rooms.membership_changes(user, since, until)?;
    for room_id in &own_changes {
        if joined.contains(room_id) {
            changed.extend(rooms.members_with(room_id, MembershipState::Join)?);
        } else if rooms
            .membership(room_id, user)?
            .is_some_and(|m| matches!(m.membership, MembershipState::Leave | MembershipState::Ban))
        {
            gone.extend(rooms.members_with(room_id, MembershipState::Join)?);
        }
    }
    // Joins and leaves are timeline events: only rooms whose timeline moved can hold one.
    let moved: Option<std::collections::HashSet<_>> = rooms
        .changed_since(since)
        .map(|moved| moved.into_iter().collect());
    for room_id in joined.iter().filter(|room| {
        !own_changes.contains(room) && moved.as_ref().is_none_or(|moved| moved.contains(*room))
    }) {
        for other in rooms.joined_changes(room_id, since, until)? {
            if rooms.joined_any(std::slice::from_ref(room_id), &other)? {
                changed.insert(other);
            } else {
                gone.insert(other);
            }
        }
    }
    let mut left = Vec::new();
    for other in gone {
        if other != user && !changed.contains(&other) && !rooms.joined_any(&joined, &other)? {
            left.push(other);
        }
    }
    Ok(DeviceListDelta {
        changed: changed.into_iter().collect(),
        left,
    })
}
