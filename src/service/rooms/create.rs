//! `createRoom`: the sequence of events that makes a room, as the spec orders it.

use ruma::{
    OwnedRoomId, OwnedUserId, RoomVersionId, UserId,
    api::client::room::{Visibility, create_room::v3::RoomPreset},
    events::room::{
        guest_access::GuestAccess,
        history_visibility::HistoryVisibility,
        join_rules::{JoinRule, RoomJoinRulesEventContent},
        member::MembershipState,
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::{Value, json};

use super::{Rooms, membership::Profile, timeline::NewEvent};
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
    /// The users to invite, with the profile of each local one (the invite carries it).
    pub invite: Vec<(OwnedUserId, Profile)>,
    pub is_direct: bool,
    pub initial_state: Vec<NewEvent>,
    pub power_level_override: Option<serde_json::Map<String, Value>>,
    pub creator_profile: (Option<String>, Option<String>),
}

impl Rooms {
    /// Creates the room and sends its initial events, in the spec's order; returns the
    /// room id.
    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let rules = Self::rules(&request.version)?;
        let privileged_creators = rules.authorization.explicitly_privilege_room_creators;
        let create = create_content(creator, &request, &rules);
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
        let power_levels = power_levels(creator, &request, privileged_creators);
        let mut events = vec![
            NewEvent::state("m.room.member", creator.as_str(), member),
            NewEvent::state("m.room.power_levels", "", power_levels),
        ];
        if let Some(alias) = &request.alias {
            let alias = ruma::OwnedRoomAliasId::try_from(alias.as_str())
                .map_err(|_| Error::invalid_param("Invalid alias"))?;
            self.set_alias(&alias, &room_id, creator)?;
            let content = json!({ "alias": alias });
            events.push(NewEvent::state("m.room.canonical_alias", "", content));
        }
        events.extend(preset_events(&request)?);
        events.extend(request.initial_state.iter().cloned());
        if let Some(name) = &request.name {
            events.push(NewEvent::state("m.room.name", "", json!({ "name": name })));
        }
        if let Some(topic) = &request.topic {
            let mut content = json!({ "topic": topic });
            super::summary::complete_topic(&mut content);
            events.push(NewEvent::state("m.room.topic", "", content));
        }
        for event in events {
            self.append(&room_id, creator, event, None).await?;
        }
        // Users of other servers are invited over federation by the caller.
        for (invitee, profile) in request
            .invite
            .iter()
            .filter(|(invitee, _)| invitee.server_name() == self.server_name)
        {
            self.invite(
                &room_id,
                creator,
                (invitee, profile),
                None,
                request.is_direct,
            )
            .await?;
        }
        if matches!(request.visibility, Visibility::Public) {
            self.set_public(&room_id, true)?;
        }
        Ok(room_id)
    }
}

/// Makes a story of a room whose create event has the story type: its audience may
/// only react (and send receipts, which are not events), everything else is its
/// author's; its messages expire after `lifetime_ms` unless the client set
/// `m.room.retention` itself. The client's own power level overrides win.
pub fn story_defaults(request: &mut CreateRoom, lifetime_ms: u64) {
    let story = request.creation_content.get("type").and_then(Value::as_str)
        == Some(super::retention::STORY_ROOM_TYPE);
    if !story {
        return;
    }
    let mut levels = json!({
        "events_default": 100,
        "state_default": 100,
        "invite": 100,
        "kick": 100,
        "ban": 100,
        "redact": 100,
        "events": { "m.reaction": 0, "m.room.redaction": 0 },
    });
    let object = levels.as_object_mut().expect("an object");
    for (key, value) in request.power_level_override.take().unwrap_or_default() {
        match (key.as_str(), value, object.get_mut("events")) {
            ("events", Value::Object(events), Some(Value::Object(defaults))) => {
                defaults.extend(events);
            }
            (_, value, _) => {
                object.insert(key, value);
            }
        }
    }
    request.power_level_override = Some(object.clone());
    let has_retention = (request.initial_state.iter())
        .any(|event| event.kind == "m.room.retention" && event.state_key.as_deref() == Some(""));
    if !has_retention {
        request.initial_state.push(NewEvent::state(
            "m.room.retention",
            "",
            json!({ "max_lifetime": lifetime_ms }),
        ));
    }
}

/// The `m.room.create` content: the client's, with the room version, the creator, and
/// (from room version 12) a trusted private chat's invitees as additional creators.
/// From room version 11 on `creator` means nothing to the server (the sender is the
/// creator) but it is still written: clients of the versions before (Nheko 0.11, as
/// Debian ships it) fail to read a create event without it.
fn create_content(
    creator: &UserId,
    request: &CreateRoom,
    rules: &RoomVersionRules,
) -> serde_json::Map<String, Value> {
    let mut create = request.creation_content.clone();
    create.insert("room_version".to_owned(), request.version.as_str().into());
    create.insert("creator".to_owned(), creator.as_str().into());
    let trusted = matches!(request.preset, RoomPreset::TrustedPrivateChat);
    if rules.authorization.explicitly_privilege_room_creators
        && trusted
        && !request.invite.is_empty()
    {
        let mut additional: Vec<Value> = create
            .get("additional_creators")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        additional.extend(
            request
                .invite
                .iter()
                .map(|(user, _)| Value::from(user.as_str())),
        );
        create.insert("additional_creators".to_owned(), Value::Array(additional));
    }
    create
}

/// The initial `m.room.power_levels` content, with the client's overrides. Where the
/// room version privileges creators, they need no entry.
fn power_levels(creator: &UserId, request: &CreateRoom, privileged_creators: bool) -> Value {
    let mut users = serde_json::Map::new();
    if !privileged_creators {
        users.insert(creator.to_string(), 100.into());
        if matches!(request.preset, RoomPreset::TrustedPrivateChat) {
            for (invitee, _) in &request.invite {
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
    power_levels
}

/// The join rules, history visibility and guest access of the preset, but for those
/// the client's initial state sets itself.
fn preset_events(request: &CreateRoom) -> Result<Vec<NewEvent>> {
    let (join_rule, guest_access) = match request.preset {
        RoomPreset::PublicChat => (JoinRule::Public, GuestAccess::Forbidden),
        _ => (JoinRule::Invite, GuestAccess::CanJoin),
    };
    let join_rules =
        serde_json::to_value(RoomJoinRulesEventContent::new(join_rule)).map_err(Error::internal)?;
    let history_visibility = json!({ "history_visibility": HistoryVisibility::Shared.as_str() });
    let guest_access = json!({ "guest_access": guest_access.as_str() });
    Ok([
        NewEvent::state("m.room.join_rules", "", join_rules),
        NewEvent::state("m.room.history_visibility", "", history_visibility),
        NewEvent::state("m.room.guest_access", "", guest_access),
    ]
    .into_iter()
    .filter(|event| {
        !request
            .initial_state
            .iter()
            .any(|initial| initial.kind == event.kind && initial.state_key == event.state_key)
    })
    .collect())
}
