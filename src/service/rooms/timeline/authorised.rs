//! Which senders' messages a room's current state authorises, so that a busy room's
//! messages are not put through the spec's authorisation rules one by one.
//!
//! A message (an event with no state key that redacts nothing) is authorised by the
//! room's state alone: the sender's membership, the sender's power level against the
//! level its type needs, and the auth events the state gives it. Its content plays no
//! part. So once ruma's rules allowed one message of a type from a sender against a
//! state group, they allow every other: that answer is kept for the room's latest state
//! group, and forgotten when the room's state moves on (a new group) or any event is
//! redacted (a redaction rewrites a state event's content under an unchanged group).
//! Refusals are not kept: they are rare, and each gets the rules' own reason.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::NewEvent;

/// Rooms kept at most; past it, every answer is forgotten and learned again.
const MOST_ROOMS: usize = 10_000;

/// What a room's latest state group was found to authorise.
struct Allowed {
    state_group: u64,
    /// The types of message each sender may send (looked up without copying either).
    messages: HashMap<OwnedUserId, HashSet<String>>,
}

#[derive(Default)]
pub(in crate::service::rooms) struct Authorised {
    rooms: Mutex<HashMap<OwnedRoomId, Allowed>>,
}

/// Whether the event is a message, whose authorisation depends on the state only.
fn is_message(event: &NewEvent) -> bool {
    event.state_key.is_none() && event.redacts.is_none() && event.kind != "m.room.redaction"
}

impl Authorised {
    /// Whether the rules already allowed such a message from `sender` against this state
    /// group of the room.
    pub fn knows(
        &self,
        room_id: &RoomId,
        state_group: u64,
        sender: &UserId,
        event: &NewEvent,
    ) -> bool {
        if !is_message(event) {
            return false;
        }
        self.rooms.lock().get(room_id).is_some_and(|allowed| {
            allowed.state_group == state_group
                && allowed
                    .messages
                    .get(sender)
                    .is_some_and(|kinds| kinds.contains(event.kind.as_str()))
        })
    }

    /// The rules allowed this event from `sender` against this state group.
    pub fn note(&self, room_id: &RoomId, state_group: u64, sender: &UserId, event: &NewEvent) {
        if !is_message(event) {
            return;
        }
        let mut rooms = self.rooms.lock();
        if rooms.len() >= MOST_ROOMS && !rooms.contains_key(room_id) {
            rooms.clear();
        }
        let allowed = rooms.entry(room_id.to_owned()).or_insert_with(|| Allowed {
            state_group,
            messages: HashMap::new(),
        });
        if allowed.state_group != state_group {
            allowed.state_group = state_group;
            allowed.messages.clear();
        }
        allowed
            .messages
            .entry(sender.to_owned())
            .or_default()
            .insert(event.kind.clone());
    }

    /// An event was redacted: its content, if it was state, is not what was checked.
    pub fn forget_all(&self) {
        self.rooms.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};
    use serde_json::json;

    use super::*;

    #[test]
    fn kept_per_sender_type_and_state_group_for_messages_only() {
        let authorised = Authorised::default();
        let (room, alice, bob) = (room_id!("!r:x"), user_id!("@alice:x"), user_id!("@bob:x"));
        let text = NewEvent::message("m.room.message", json!({ "body": "hi" }));
        let other_text = NewEvent::message("m.room.message", json!({ "body": "bye" }));
        let reaction = NewEvent::message("m.reaction", json!({}));
        assert!(!authorised.knows(room, 1, alice, &text));
        authorised.note(room, 1, alice, &text);
        // The content plays no part; the sender, type and state group do.
        assert!(authorised.knows(room, 1, alice, &other_text));
        assert!(!authorised.knows(room, 1, bob, &text));
        assert!(!authorised.knows(room, 1, alice, &reaction));
        assert!(!authorised.knows(room_id!("!other:x"), 1, alice, &text));
        // The state moved on: nothing is known of the new group.
        assert!(!authorised.knows(room, 2, alice, &text));
        authorised.note(room, 2, bob, &text);
        assert!(!authorised.knows(room, 1, alice, &text));
        assert!(!authorised.knows(room, 2, alice, &text));
        assert!(authorised.knows(room, 2, bob, &text));
        // State events and redactions are always checked.
        let topic = NewEvent::state("m.room.topic", "", json!({ "topic": "t" }));
        authorised.note(room, 2, bob, &topic);
        assert!(!authorised.knows(room, 2, bob, &topic));
        let redaction = NewEvent::redaction(ruma::owned_event_id!("$e"), json!({}));
        authorised.note(room, 2, bob, &redaction);
        assert!(!authorised.knows(room, 2, bob, &redaction));
        authorised.forget_all();
        assert!(!authorised.knows(room, 2, bob, &text));
    }
}
