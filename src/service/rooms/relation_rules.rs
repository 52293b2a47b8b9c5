//! The relations a local user may not send, checked before their event is built: a
//! second identical annotation (the spec's `M_DUPLICATE_ANNOTATION`) and a thread
//! started from an event that itself relates to another (a reply in a thread, an edit,
//! a reaction), which no client could show as a thread.

use ruma::{EventId, RoomId, UserId, api::error::ErrorKind};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Rooms,
    relations::{RelatesTo, RelationFilter, THREAD, relates_to, relation_of},
};
use crate::{Error, Result};

const ANNOTATION: &str = "m.annotation";

impl Rooms {
    /// Refuses an event of `kind` with `content` that `sender` may not send to
    /// `room_id` because of the relation it declares.
    pub fn check_relation(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        content: &Value,
    ) -> Result<()> {
        let Some(relates_to) = content
            .get("m.relates_to")
            .and_then(|value| RelatesTo::deserialize(value).ok())
        else {
            return Ok(());
        };
        let (Some(rel_type), Some(parent)) = (relates_to.rel_type, relates_to.event_id) else {
            return Ok(());
        };
        match rel_type.as_str() {
            ANNOTATION => {
                let Some(key) = relates_to.key else {
                    return Ok(());
                };
                if self.has_annotated(room_id, &parent, sender, kind, &key)? {
                    return Err(Error::new(
                        ErrorKind::DuplicateAnnotation,
                        "You already sent this annotation to that event",
                    ));
                }
            }
            THREAD => {
                if let Some(root) = self.pdu(&parent)?
                    && root.room_id == room_id
                    && root
                        .parse(parent.clone())
                        .is_ok_and(|root| relation_of(&root.content).is_some())
                {
                    return Err(Error::invalid_param(
                        "A thread cannot start from an event that relates to another",
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether `sender` has an annotation of `kind` with `key` on `parent` that is not
    /// redacted (a redacted one leaves the parent's relations).
    fn has_annotated(
        &self,
        room_id: &RoomId,
        parent: &EventId,
        sender: &UserId,
        kind: &str,
        key: &str,
    ) -> Result<bool> {
        let filter = RelationFilter {
            rel_type: Some(ANNOTATION),
            kind: Some(kind),
        };
        for (_, relation) in self.relations(room_id, parent, &filter)? {
            if relation.sender != sender {
                continue;
            }
            let Some(stored) = self.pdu(&relation.event_id)? else {
                continue;
            };
            let same_key = stored
                .parse(relation.event_id.clone())
                .ok()
                .and_then(|event| relates_to(&event.content)?.key)
                .is_some_and(|found| found == key);
            if same_key {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
