//! `createRoom`: the sequence of events that makes a room, as the spec orders it.

use ruma::events::room::member::MembershipState;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomVersionId, UserId,
    api::client::room::{Visibility, create_room::v3::RoomPreset},
};
use serde_json::{Value, json};

use super::{Rooms, timeline::NewEvent};
use crate::{Error, Result};

/// What a client asked for, already validated.
pub struct CreateRoom {
    pub version: RoomVersionId,
    pub creation_content: serde_json::Map<String, Value>,
    pub preset: RoomPreset,
    pub visibility: Visibility,
    pub alias: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub initial_state: Vec<NewEvent>,
    pub power_level_override: Option<serde_json::Map<String, Value>>,
    pub creator_profile: (Option<String>, Option<String>),
}

impl Rooms {
    /// Creates the room and sends its initial events; returns the room id.
    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let rules = Self::rules(&request.version)?;
        let privileged_creators = rules.authorization.explicitly_privilege_room_creators;
        let trusted = matches!(request.preset, RoomPreset::TrustedPrivateChat);

        let mut create = request.creation_content.clone();
        create.insert("room_version".to_owned(), request.version.as_str().into());
        if !rules.authorization.use_room_create_sender {
            create.insert("creator".to_owned(), creator.as_str().into());
        }
        if privileged_creators && trusted && !request.invite.is_empty() {
            let mut additional: Vec<Value> = create
                .get("additional_creators")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            additional.extend(request.invite.iter().map(|user| Value::from(user.as_str())));
            create.insert("additional_creators".to_owned(), Value::Array(additional));
        }
        let room_id = self
            .append_create(&request.version, creator, Value::Object(create))
            .await?;

        let (displayname, avatar_url) = request.creator_profile.clone();
        let mut member = json!({ "membership": MembershipState::Join.as_str() });
        if let Some(name) = displayname {
            member["displayname"] = name.into();
        }
        if let Some(url) = avatar_url {
            member["avatar_url"] = url.into();
        }
        self.append(
            &room_id,
            creator,
            NewEvent::state("m.room.member", creator.as_str(), member),
            None,
        )
        .await?;

        let mut users = serde_json::Map::new();
        if !privileged_creators {
            users.insert(creator.to_string(), 100.into());
            if trusted {
                for invitee in &request.invite {
                    users.insert(invitee.to_string(), 100.into());
                }
            }
        }
        let mut power_levels = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": 100,
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "notifications": { "room": 50 },
        });
        if let Some(overrides) = &request.power_level_override {
            let object = power_levels.as_object_mut().expect("an object");
            for (key, value) in overrides {
                object.insert(key.clone(), value.clone());
            }
        }
        self.append(
            &room_id,
            creator,
            NewEvent::state("m.room.power_levels", "", power_levels),
            None,
        )
        .await?;

        if let Some(alias) = &request.alias {
            let alias = ruma::OwnedRoomAliasId::try_from(alias.as_str())
                .map_err(|_| Error::invalid_param("Invalid alias"))?;
            self.set_alias(&alias, &room_id, creator)?;
            self.append(
                &room_id,
                creator,
                NewEvent::state("m.room.canonical_alias", "", json!({ "alias": alias })),
                None,
            )
            .await?;
        }

        let (join_rule, guest_access) = match request.preset {
            RoomPreset::PublicChat => ("public", "forbidden"),
            _ => ("invite", "can_join"),
        };
        let preset_events = [
            NewEvent::state("m.room.join_rules", "", json!({ "join_rule": join_rule })),
            NewEvent::state(
                "m.room.history_visibility",
                "",
                json!({ "history_visibility": "shared" }),
            ),
            NewEvent::state(
                "m.room.guest_access",
                "",
                json!({ "guest_access": guest_access }),
            ),
        ];
        for event in preset_events {
            let overridden = request
                .initial_state
                .iter()
                .any(|initial| initial.kind == event.kind && initial.state_key == event.state_key);
            if !overridden {
                self.append(&room_id, creator, event, None).await?;
            }
        }
        for event in request.initial_state {
            self.append(&room_id, creator, event, None).await?;
        }
        if let Some(name) = request.name {
            self.append(
                &room_id,
                creator,
                NewEvent::state("m.room.name", "", json!({ "name": name })),
                None,
            )
            .await?;
        }
        if let Some(topic) = request.topic {
            let content = json!({
                "topic": topic,
                "m.topic": [{ "mimetype": "text/plain", "body": topic }],
            });
            self.append(
                &room_id,
                creator,
                NewEvent::state("m.room.topic", "", content),
                None,
            )
            .await?;
        }
        // Users of other servers are invited over federation by the caller.
        for invitee in request
            .invite
            .iter()
            .filter(|invitee| invitee.server_name() == self.server_name)
        {
            self.invite(&room_id, creator, invitee, None, request.is_direct)
                .await?;
        }
        if matches!(request.visibility, Visibility::Public) {
            self.set_public(&room_id, true)?;
        }
        Ok(room_id)
    }
}
