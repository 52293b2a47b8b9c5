//! A room seen from outside: its summary (name, topic, members, join rule...) for room
//! previews and the space hierarchy, the children a space lists, and who may see them.

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, ServerName, UInt, UserId,
    events::{
        room::{
            history_visibility::HistoryVisibility, join_rules::JoinRule, member::MembershipState,
        },
        space::child::HierarchySpaceChildEvent,
    },
    room::{JoinRuleSummary, RoomSummary, RoomType},
    serde::Raw,
};
use serde_json::{Value, json};

use super::Rooms;
use crate::{Error, Result};

/// The longest `order` of an `m.space.child` event that counts (the spec's limit).
const MAX_ORDER_LEN: usize = 50;

/// One child a space lists: an `m.space.child` state event with a non-empty `via`.
#[derive(Debug, Clone)]
pub struct SpaceChild {
    pub room_id: OwnedRoomId,
    pub via: Vec<OwnedServerName>,
    pub suggested: bool,
    /// The event stripped to what the hierarchy shows (`children_state`).
    pub event: Raw<HierarchySpaceChildEvent>,
    order: Option<String>,
    origin_server_ts: UInt,
}

impl SpaceChild {
    /// A stripped `m.space.child` event as another server sent it; `None` if it names
    /// no room or no server to reach it through.
    pub fn from_stripped(event: Raw<HierarchySpaceChildEvent>) -> Option<Self> {
        Self::from_value(event.deserialize_as_unchecked::<Value>().ok()?)
    }

    fn from_value(stripped: Value) -> Option<Self> {
        let room_id = RoomId::parse(stripped.get("state_key")?.as_str()?).ok()?;
        let content = stripped.get("content")?;
        let via: Vec<OwnedServerName> = content
            .get("via")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|server| server.as_str()?.try_into().ok())
            .collect();
        if via.is_empty() {
            return None;
        }
        let order = content
            .get("order")
            .and_then(Value::as_str)
            .filter(|order| {
                order.len() <= MAX_ORDER_LEN && order.bytes().all(|b| (0x20..=0x7e).contains(&b))
            })
            .map(str::to_owned);
        Some(Self {
            room_id,
            via,
            suggested: content.get("suggested").and_then(Value::as_bool) == Some(true),
            order,
            origin_server_ts: stripped
                .get("origin_server_ts")
                .and_then(Value::as_u64)
                .and_then(|ts| UInt::try_from(ts).ok())
                .unwrap_or_default(),
            event: Raw::new(&stripped).ok()?.cast_unchecked(),
        })
    }
}

/// The spec's order of a space's children: those with a valid `order` first (by it),
/// then by the age of their `m.space.child` event, then by room id.
pub fn sort_children(children: &mut [SpaceChild]) {
    children.sort_by(|a, b| {
        let key = |child: &SpaceChild| {
            (
                child.order.is_none(),
                child.order.clone(),
                child.origin_server_ts,
                child.room_id.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

impl Rooms {
    /// The summary of a room this server is in, from its current state.
    pub fn summary(&self, room_id: &RoomId) -> Result<RoomSummary> {
        let state = self.current_state(room_id)?;
        let content = |kind: &str| self.content_in(&state, kind, "");
        let text = |kind: &str, field: &str| -> Result<Option<String>> {
            Ok(content(kind)?.and_then(|content| {
                content
                    .get(field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }))
        };
        let join_rule = match content("m.room.join_rules")? {
            Some(content) => serde_json::from_value::<JoinRule>(content)
                .map(JoinRuleSummary::from)
                .unwrap_or(JoinRuleSummary::Invite),
            None => JoinRuleSummary::Invite,
        };
        let joined = self.members_with(room_id, MembershipState::Join)?.len();
        let mut summary = RoomSummary::new(
            room_id.to_owned(),
            join_rule,
            text("m.room.guest_access", "guest_access")?.as_deref() == Some("can_join"),
            UInt::try_from(joined as u64).unwrap_or_default(),
            self.history_visibility_in(&state)? == HistoryVisibility::WorldReadable,
        );
        summary.name = text("m.room.name", "name")?.filter(|name| !name.is_empty());
        summary.topic = content("m.room.topic")?.as_ref().and_then(topic_of);
        summary.canonical_alias =
            text("m.room.canonical_alias", "alias")?.and_then(|alias| alias.try_into().ok());
        summary.avatar_url = text("m.room.avatar", "url")?
            .filter(|url| !url.is_empty())
            .map(Into::into);
        let create = content("m.room.create")?;
        summary.room_type = create
            .as_ref()
            .and_then(|create| create.get("type"))
            .and_then(Value::as_str)
            .map(RoomType::from);
        summary.encryption = text("m.room.encryption", "algorithm")?.map(Into::into);
        summary.room_version = self.room(room_id)?.map(|room| room.version);
        Ok(summary)
    }

    /// The children a space lists, in the spec's order.
    pub fn space_children(&self, room_id: &RoomId) -> Result<Vec<SpaceChild>> {
        let state = self.current_state(room_id)?;
        let mut children = Vec::new();
        let first = ("m.space.child".to_owned(), String::new());
        for ((kind, state_key), event_id) in state.range(first..) {
            if kind != "m.space.child" {
                break;
            }
            let Some(pdu) = self.state_event(event_id)? else {
                continue;
            };
            let content: Value =
                serde_json::from_str(pdu.content.get()).map_err(Error::internal)?;
            let stripped = json!({
                "type": "m.space.child",
                "state_key": state_key,
                "sender": pdu.sender,
                "origin_server_ts": pdu.origin_server_ts,
                "content": content,
            });
            children.extend(SpaceChild::from_value(stripped));
        }
        sort_children(&mut children);
        Ok(children)
    }

    /// Whether a local user (or, with `None`, anyone) may see a room's summary: members,
    /// invitees and knockers may; anyone may for a public, knockable or world-readable
    /// room; a member of one of the rooms a restricted room allows may too.
    pub fn may_preview(&self, summary: &RoomSummary, user: Option<&UserId>) -> Result<bool> {
        if summary.world_readable {
            return Ok(true);
        }
        let allowed = match &summary.join_rule {
            JoinRuleSummary::Public
            | JoinRuleSummary::Knock
            | JoinRuleSummary::KnockRestricted(_) => {
                return Ok(true);
            }
            JoinRuleSummary::Restricted(restricted) => restricted.allowed_room_ids.as_slice(),
            _ => &[],
        };
        let Some(user) = user else {
            return Ok(false);
        };
        let member = self.membership(&summary.room_id, user)?.is_some_and(|m| {
            matches!(
                m.membership,
                MembershipState::Join | MembershipState::Invite | MembershipState::Knock
            )
        });
        Ok(member || self.joined_any(allowed, user)?)
    }

    /// Whether another server may see a room's summary over federation: as for anyone,
    /// and restricted rooms too (with their allowed rooms, the asking server judges its
    /// users), and any room it has a member in.
    pub fn may_preview_from(&self, summary: &RoomSummary, server: &ServerName) -> Result<bool> {
        if matches!(summary.join_rule, JoinRuleSummary::Restricted(_))
            || self.may_preview(summary, None)?
        {
            return Ok(true);
        }
        Ok(self
            .members_with(&summary.room_id, MembershipState::Join)?
            .iter()
            .any(|member| member.server_name() == server))
    }
}

/// A topic's plain text: `topic`, else the first plain-text `m.topic` representation
/// (rooms made by clients that send only the newer shape).
pub fn topic_of(content: &Value) -> Option<String> {
    if let Some(topic) = content.get("topic").and_then(Value::as_str) {
        return Some(topic.to_owned()).filter(|topic| !topic.is_empty());
    }
    content
        .pointer("/m.topic/m.text")
        .and_then(Value::as_array)?
        .iter()
        .find(|text| {
            text.get("mimetype")
                .and_then(Value::as_str)
                .is_none_or(|mime| mime == "text/plain")
        })
        .and_then(|text| text.get("body")?.as_str())
        .map(str::to_owned)
}

/// Gives a topic set as plain `topic` alone its `m.topic` form too (the spec's shape
/// since v1.15, which newer clients read first).
pub fn complete_topic(content: &mut Value) {
    let Some(topic) = content.get("topic").and_then(Value::as_str) else {
        return;
    };
    if content.get("m.topic").is_none() {
        content["m.topic"] = json!({ "m.text": [{ "mimetype": "text/plain", "body": topic }] });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_reads_in_either_shape_and_gains_the_newer_one() {
        let mut plain = json!({ "topic": "Lunch at noon" });
        complete_topic(&mut plain);
        assert_eq!(plain["m.topic"]["m.text"][0]["body"], "Lunch at noon");
        assert_eq!(topic_of(&plain).as_deref(), Some("Lunch at noon"));
        let newer = json!({ "m.topic": { "m.text": [
            { "mimetype": "text/html", "body": "<b>Lunch</b>" },
            { "body": "Lunch" },
        ] } });
        assert_eq!(topic_of(&newer).as_deref(), Some("Lunch"));
        let mut both = json!({ "topic": "a", "m.topic": { "m.text": [{ "body": "b" }] } });
        complete_topic(&mut both);
        assert_eq!(
            both["m.topic"]["m.text"][0]["body"], "b",
            "a given m.topic stays"
        );
        assert_eq!(topic_of(&json!({ "topic": "" })), None);
    }
}
