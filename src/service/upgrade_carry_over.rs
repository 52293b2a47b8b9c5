//! What a user set for a room follows them into its upgrade: when they join a room
//! whose create event names a predecessor they were in, the predecessor's tags, its
//! push rules (a muted room stays muted) and its place in `m.direct` (a direct chat
//! stays one) are copied to the new room, unless they already set those there.

use ruma::{RoomId, UserId, push::Ruleset};
use serde_json::Value;

use super::{account_data::AccountData, push::rules::Rulesets, rooms::Rooms};
use crate::Result;

/// Copies `user`'s tags, room push rules and `m.direct` entry of `room_id`'s
/// predecessor to `room_id`, once they have joined it.
pub fn carry_over(
    rooms: &Rooms,
    account_data: &AccountData,
    rulesets: &Rulesets,
    user: &UserId,
    room_id: &RoomId,
) -> Result<()> {
    let Some(predecessor) = rooms
        .state_content(room_id, "m.room.create", "")?
        .and_then(|create| create.pointer("/predecessor/room_id").cloned())
        .and_then(|id| serde_json::from_value::<ruma::OwnedRoomId>(id).ok())
    else {
        return Ok(());
    };
    if rooms.member_state(&predecessor, user)?.is_none() {
        return Ok(());
    }
    copy_tags(account_data, user, &predecessor, room_id)?;
    copy_direct(account_data, user, &predecessor, room_id)?;
    let ruleset = &rulesets.get(user)?.ruleset;
    if let Some(copied) = with_rules_copied(ruleset, &predecessor, room_id) {
        rulesets.set(user, &copied)?;
    }
    Ok(())
}

fn copy_tags(account_data: &AccountData, user: &UserId, from: &RoomId, to: &RoomId) -> Result<()> {
    let tags = |room| -> Result<Option<Value>> {
        Ok(account_data
            .get(user, Some(room), "m.tag")?
            .filter(|content| {
                content
                    .get("tags")
                    .and_then(Value::as_object)
                    .is_some_and(|tags| !tags.is_empty())
            }))
    };
    if let Some(content) = tags(from)?
        && tags(to)?.is_none()
    {
        account_data.set(user, Some(to), "m.tag", content)?;
    }
    Ok(())
}

fn copy_direct(
    account_data: &AccountData,
    user: &UserId,
    from: &RoomId,
    to: &RoomId,
) -> Result<()> {
    let Some(mut direct) = account_data.get(user, None, "m.direct")? else {
        return Ok(());
    };
    let mut changed = false;
    if let Some(chats) = direct.as_object_mut() {
        for rooms in chats.values_mut().filter_map(Value::as_array_mut) {
            if rooms.iter().any(|room| room == from.as_str())
                && !rooms.iter().any(|room| room == to.as_str())
            {
                rooms.push(to.as_str().into());
                changed = true;
            }
        }
    }
    if changed {
        account_data.set(user, None, "m.direct", direct)?;
    }
    Ok(())
}

/// `ruleset` with a copy, for `to`, of each rule that applies to room `from` alone (its
/// room rule, and rules whose conditions match `from`'s id), unless `to` has one of the
/// same id; `None` when nothing was copied.
fn with_rules_copied(ruleset: &Ruleset, from: &RoomId, to: &RoomId) -> Option<Ruleset> {
    let mut value = serde_json::to_value(ruleset).ok()?;
    let mut changed = false;
    for kind in ["override", "room", "underride"] {
        let Some(rules) = value.get_mut(kind).and_then(Value::as_array_mut) else {
            continue;
        };
        let mut copies = Vec::new();
        for rule in rules.iter() {
            let id = rule["rule_id"].as_str().unwrap_or_default();
            let names_room = rule["conditions"].as_array().is_some_and(|conditions| {
                conditions.iter().any(|condition| {
                    condition["kind"] == "event_match"
                        && condition["key"] == "room_id"
                        && condition["pattern"] == from.as_str()
                })
            });
            let is_rooms_own = kind == "room" && id == from.as_str();
            if !is_rooms_own && !names_room {
                continue;
            }
            let mut copy = rule.clone();
            copy["rule_id"] = id.replace(from.as_str(), to.as_str()).into();
            if let Some(conditions) = copy["conditions"].as_array_mut() {
                for condition in conditions {
                    if condition["key"] == "room_id" && condition["pattern"] == from.as_str() {
                        condition["pattern"] = to.as_str().into();
                    }
                }
            }
            copies.push(copy);
        }
        for copy in copies {
            if rules.iter().all(|rule| rule["rule_id"] != copy["rule_id"]) {
                rules.push(copy);
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    serde_json::from_value(value).ok()
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_muted_room_and_a_keyword_rule_of_the_old_room_are_copied_once() {
        let (old, new) = (room_id!("!old:x"), room_id!("!new:x"));
        let mut value = serde_json::to_value(crate::service::push::rules::default_ruleset(
            user_id!("@bob:x"),
        ))
        .unwrap();
        value["room"] = json!([{
            "rule_id": "!old:x", "default": false, "enabled": true, "actions": [],
        }]);
        value["override"].as_array_mut().unwrap().push(json!({
            "rule_id": "quiet-in-!old:x", "default": false, "enabled": true,
            "conditions": [{ "kind": "event_match", "key": "room_id", "pattern": "!old:x" }],
            "actions": [],
        }));
        let ruleset: Ruleset = serde_json::from_value(value).unwrap();
        let copied = with_rules_copied(&ruleset, old, new).expect("copied");
        let copied = serde_json::to_value(copied).unwrap();
        assert!(
            copied["room"]
                .as_array()
                .unwrap()
                .iter()
                .any(|rule| rule["rule_id"] == "!new:x" && rule["actions"] == json!([]))
        );
        let rule = copied["override"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["rule_id"] == "quiet-in-!new:x")
            .expect("the override copied");
        assert_eq!(rule["conditions"][0]["pattern"], "!new:x");
        let again: Ruleset = serde_json::from_value(copied).unwrap();
        assert!(with_rules_copied(&again, old, new).is_none());
    }
}
