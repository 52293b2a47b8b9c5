//! Room upgrades: a room of a newer version takes an old room's place.
//!
//! The new room names the old one as its predecessor and starts with the old room's
//! name, topic, avatar, encryption, join rules, history visibility, guest access,
//! server ACL, power levels, bans and (for a space) children. The old room's local
//! aliases, its canonical alias and its place in the directory move to the new room;
//! the old room gets a tombstone pointing at the new one, and its power levels stop
//! ordinary members from talking or inviting there.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::{ROOM_VERSIONS, Rooms, membership::Profile, state::StateMap, timeline::NewEvent};
use crate::{Error, Result};

/// The single-key state the new room starts with, copied from the old room.
const COPIED: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.canonical_alias",
];

/// Create content keys that belong to the old room alone.
const NOT_INHERITED: &[&str] = &[
    "creator",
    "room_version",
    "predecessor",
    "additional_creators",
];

/// What upgrading asks for.
pub struct Upgrade<'a> {
    pub room_id: &'a RoomId,
    pub user: &'a UserId,
    pub profile: &'a Profile,
    pub new_version: &'a RoomVersionId,
    /// Further creators of the new room, for versions that privilege creators.
    pub additional_creators: &'a [OwnedUserId],
}

impl Rooms {
    /// Upgrades a room; returns the new room's id.
    pub async fn upgrade(&self, upgrade: Upgrade<'_>) -> Result<OwnedRoomId> {
        let Upgrade { room_id, user, .. } = upgrade;
        if !ROOM_VERSIONS.contains(upgrade.new_version) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                "This server does not support that room version",
            ));
        }
        self.require_joined(room_id, user)?;
        if !self.may_send_state(room_id, user, "m.room.tombstone")? {
            return Err(Error::forbidden(
                "You do not have the power to upgrade this room",
            ));
        }
        let old_state = self.current_state(room_id)?;
        let new_rules = Self::rules(upgrade.new_version)?;
        let privileged = new_rules.authorization.explicitly_privilege_room_creators;
        let old = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let old_privileged = Self::rules(&old.version)?
            .authorization
            .explicitly_privilege_room_creators;

        let create = self.successor_create(&upgrade, &old_state, &old.extremities, privileged)?;
        let new_room = self
            .append_create(upgrade.new_version, user, Value::Object(create))
            .await?;
        self.join(&new_room, user, upgrade.profile, None).await?;

        // The power levels first, with the upgrader able to send everything that follows;
        // the old room's own levels once the state is in place.
        let mut creators: Vec<OwnedUserId> = vec![user.to_owned()];
        if privileged {
            creators.extend(upgrade.additional_creators.iter().cloned());
        }
        let old_creators = self.creators_in(&old_state)?;
        let levels = self.content_in(&old_state, "m.room.power_levels", "")?;
        let (final_levels, interim) = successor_levels(
            levels,
            (&creators, privileged),
            (&old_creators, old_privileged),
        );
        self.append(
            &new_room,
            user,
            NewEvent::state(
                "m.room.power_levels",
                "",
                interim.clone().unwrap_or_else(|| final_levels.clone()),
            ),
            None,
        )
        .await?;
        for event in self.copied_state(room_id, &new_room, &old_state)? {
            let kind = event.kind.clone();
            if let Err(error) = self.append(&new_room, user, event, None).await {
                tracing::warn!(%room_id, %new_room, %kind, %error, "state not carried over in upgrade");
            }
        }
        if interim.is_some() {
            self.append(
                &new_room,
                user,
                NewEvent::state("m.room.power_levels", "", final_levels),
                None,
            )
            .await?;
        }

        self.append(
            room_id,
            user,
            NewEvent::state(
                "m.room.tombstone",
                "",
                json!({
                    "body": "This room has been replaced",
                    "replacement_room": new_room,
                }),
            ),
            None,
        )
        .await?;
        self.move_addresses(room_id, &new_room, user).await?;
        self.silence(room_id, user).await;
        Ok(new_room)
    }

    /// The new room's create content: the old one's (its type, `m.federate`) with the
    /// predecessor named.
    fn successor_create(
        &self,
        upgrade: &Upgrade<'_>,
        old_state: &StateMap,
        old_extremities: &[ruma::OwnedEventId],
        privileged: bool,
    ) -> Result<Map<String, Value>> {
        let mut create = match self.content_in(old_state, "m.room.create", "")? {
            Some(Value::Object(content)) => content,
            _ => Map::new(),
        };
        for key in NOT_INHERITED {
            create.remove(*key);
        }
        create.insert(
            "room_version".to_owned(),
            upgrade.new_version.as_str().into(),
        );
        create.insert("creator".to_owned(), upgrade.user.as_str().into());
        let mut predecessor = json!({ "room_id": upgrade.room_id });
        if let Some(last) = old_extremities.last() {
            predecessor["event_id"] = last.as_str().into();
        }
        create.insert("predecessor".to_owned(), predecessor);
        if privileged && !upgrade.additional_creators.is_empty() {
            let additional = upgrade
                .additional_creators
                .iter()
                .filter(|creator| *creator != upgrade.user)
                .map(|creator| Value::from(creator.as_str()))
                .collect();
            create.insert("additional_creators".to_owned(), Value::Array(additional));
        }
        Ok(create)
    }

    /// The old room's state the new room starts with, as events to send there.
    fn copied_state(
        &self,
        old_room: &RoomId,
        new_room: &RoomId,
        state: &StateMap,
    ) -> Result<Vec<NewEvent>> {
        let mut events = Vec::new();
        for kind in COPIED {
            let Some(mut content) = self.content_in(state, kind, "")? else {
                continue;
            };
            if *kind == "m.room.join_rules" {
                point_allow_list_at(&mut content, old_room, new_room);
            }
            events.push(NewEvent::state(kind, "", content));
        }
        let is_space = self
            .content_in(state, "m.room.create", "")?
            .and_then(|create| create.get("type").cloned())
            .is_some_and(|kind| kind == "m.space");
        for ((kind, state_key), _) in state.iter() {
            let wanted = kind == "m.room.member" || (is_space && kind == "m.space.child");
            if !wanted {
                continue;
            }
            let Some(content) = self.content_in(state, kind, state_key)? else {
                continue;
            };
            let keep = if kind == "m.room.member" {
                content.get("membership").and_then(Value::as_str) == Some("ban")
            } else {
                content.as_object().is_some_and(|object| !object.is_empty())
            };
            if keep {
                events.push(NewEvent::state(kind, state_key, content));
            }
        }
        Ok(events)
    }

    /// Moves the old room's local aliases and directory listing to the new room, and
    /// its canonical alias (copied into the new room already) away from the old one.
    async fn move_addresses(&self, old: &RoomId, new: &RoomId, user: &UserId) -> Result<()> {
        for alias in self.aliases_of(old)? {
            let Ok(alias) = ruma::OwnedRoomAliasId::try_from(alias) else {
                continue;
            };
            self.move_alias(&alias, new)?;
        }
        if self.is_public(old)? {
            self.set_public(new, true)?;
            self.set_public(old, false)?;
        }
        let has_canonical = self
            .state_content(old, "m.room.canonical_alias", "")?
            .and_then(|content| content.as_object().map(|object| !object.is_empty()))
            .unwrap_or(false);
        if has_canonical
            && let Err(error) = self
                .append(
                    old,
                    user,
                    NewEvent::state("m.room.canonical_alias", "", json!({})),
                    None,
                )
                .await
        {
            tracing::warn!(room_id = %old, %error, "canonical alias not removed from the old room");
        }
        Ok(())
    }

    /// Stops ordinary members of the old room sending messages or inviting, where the
    /// upgrader may change its power levels.
    async fn silence(&self, room_id: &RoomId, user: &UserId) {
        let result: Result<()> = async {
            if !self.may_send_state(room_id, user, "m.room.power_levels")? {
                return Ok(());
            }
            let Some(Value::Object(mut levels)) =
                self.state_content(room_id, "m.room.power_levels", "")?
            else {
                return Ok(());
            };
            let users_default = levels
                .get("users_default")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let needed = (users_default + 1).max(50);
            let mut changed = false;
            for key in ["events_default", "invite"] {
                let current = levels.get(key).and_then(Value::as_i64).unwrap_or(0);
                if current < needed {
                    levels.insert(key.to_owned(), needed.into());
                    changed = true;
                }
            }
            if changed {
                self.append(
                    room_id,
                    user,
                    NewEvent::state("m.room.power_levels", "", Value::Object(levels)),
                    None,
                )
                .await?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%room_id, %error, "old room's power levels not restricted after upgrade");
        }
    }
}

/// The new room's power levels, and an interim version to send first when the upgrader
/// needs more power than the old levels give to copy the state over.
///
/// Where the new version privileges creators, they must not appear among the users; where
/// the old one did and the new one does not, the old creators keep their power as 100.
fn successor_levels(
    old: Option<Value>,
    (creators, privileged): (&[OwnedUserId], bool),
    (old_creators, old_privileged): (&[OwnedUserId], bool),
) -> (Value, Option<Value>) {
    let mut levels = match old {
        Some(Value::Object(levels)) => levels,
        _ => Map::new(),
    };
    let users = levels
        .entry("users")
        .or_insert_with(|| Value::Object(Map::new()));
    if !users.is_object() {
        *users = Value::Object(Map::new());
    }
    let users = users.as_object_mut().expect("an object");
    if privileged {
        for creator in creators {
            users.remove(creator.as_str());
        }
        return (Value::Object(levels), None);
    }
    if old_privileged {
        for creator in old_creators {
            users.insert(creator.to_string(), 100.into());
        }
    }
    let upgrader = &creators[0];
    let has = users
        .get(upgrader.as_str())
        .and_then(Value::as_i64)
        .unwrap_or_else(|| levels_number(&levels, "users_default").unwrap_or(0));
    let needed = needed_power(&levels);
    if has >= needed {
        return (Value::Object(levels), None);
    }
    let mut interim = levels.clone();
    if let Some(Value::Object(users)) = interim.get_mut("users") {
        users.insert(upgrader.to_string(), needed.into());
    }
    (Value::Object(levels), Some(Value::Object(interim)))
}

fn levels_number(levels: &Map<String, Value>, key: &str) -> Option<i64> {
    levels.get(key).and_then(Value::as_i64)
}

/// The most power any state event of the levels asks for (at least 100).
fn needed_power(levels: &Map<String, Value>) -> i64 {
    let events = levels
        .get("events")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|events| events.values().filter_map(Value::as_i64));
    ["state_default", "ban", "events_default"]
        .iter()
        .filter_map(|key| levels_number(levels, key))
        .chain(events)
        .fold(100, i64::max)
}

/// A restricted room that let members of the old room in lets members of the new one.
fn point_allow_list_at(join_rules: &mut Value, old: &RoomId, new: &RoomId) {
    let Some(allow) = join_rules.get_mut("allow").and_then(Value::as_array_mut) else {
        return;
    };
    for rule in allow {
        if rule.get("room_id").and_then(Value::as_str) == Some(old.as_str()) {
            rule["room_id"] = new.as_str().into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> OwnedUserId {
        OwnedUserId::try_from(id).unwrap()
    }

    #[test]
    fn an_upgrader_without_full_power_gets_it_while_copying() {
        let old = json!({ "users": { "@a:x": 100, "@b:x": 60 }, "state_default": 50 });
        let (levels, interim) = successor_levels(Some(old), (&[user("@b:x")], false), (&[], false));
        assert_eq!(levels["users"]["@b:x"], 60);
        assert_eq!(interim.unwrap()["users"]["@b:x"], 100);
    }

    #[test]
    fn creators_leave_the_users_of_a_version_that_privileges_them() {
        let old = json!({ "users": { "@a:x": 100, "@b:x": 50 } });
        let (levels, interim) =
            successor_levels(Some(old), (&[user("@a:x")], true), (&[user("@a:x")], false));
        assert!(levels["users"].get("@a:x").is_none());
        assert_eq!(levels["users"]["@b:x"], 50);
        assert!(interim.is_none());
    }

    #[test]
    fn allow_lists_follow_the_room() {
        let old = RoomId::parse("!old:x").unwrap();
        let new = RoomId::parse("!new:x").unwrap();
        let mut rules = json!({ "join_rule": "restricted", "allow": [
            { "type": "m.room_membership", "room_id": "!old:x" },
            { "type": "m.room_membership", "room_id": "!other:x" },
        ]});
        point_allow_list_at(&mut rules, &old, &new);
        assert_eq!(rules["allow"][0]["room_id"], "!new:x");
        assert_eq!(rules["allow"][1]["room_id"], "!other:x");
    }
}
