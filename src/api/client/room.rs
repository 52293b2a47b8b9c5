//! Room creation and upgrades.

use std::sync::Arc;

use axum::Router;
use ruma::{
    RoomVersionId,
    api::client::room::{Visibility, create_room, upgrade_room},
};
use serde_json::Value;

use crate::service::rooms::{ROOM_VERSIONS, membership::Profile};
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        rooms::{
            create::{CreateRoom, story_defaults},
            timeline::NewEvent,
            upgrade::Upgrade,
        },
        users::Sender,
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(create).ruma_route(upgrade)
}

/// The users to invite, each local one with their profile.
fn invitees(
    services: &Services,
    invite: &[ruma::OwnedUserId],
) -> Result<Vec<(ruma::OwnedUserId, Profile)>> {
    invite
        .iter()
        .map(|user| {
            let profile = if user.server_name() == services.config.server_name {
                services.users.member_profile(user)?
            } else {
                (None, None)
            };
            Ok((user.clone(), profile))
        })
        .collect()
}

/// # `POST /_matrix/client/v3/createRoom`
async fn create(
    services: Arc<Services>,
    request: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let sender = request.sender()?.clone();
    let creator = sender.user_id.clone();
    services.message_limiter.check_sender(&sender)?;
    let body = request.body;
    let version = body
        .room_version
        .clone()
        .unwrap_or_else(|| services.config.default_room_version.clone());
    if !ROOM_VERSIONS.contains(&version) {
        return Err(Error::new(
            ruma::api::error::ErrorKind::UnsupportedRoomVersion,
            "Unsupported room version",
        ));
    }
    let creation_content = body.creation_content.as_ref().map(object_of).transpose()?;
    let power_level_override = body
        .power_level_content_override
        .as_ref()
        .map(object_of)
        .transpose()?;
    let initial_state = initial_state(&body)?;
    let alias = match &body.room_alias_name {
        Some(name) => Some(free_alias(&services, name, &sender)?),
        None => None,
    };
    for invitee in &body.invite {
        if invitee.server_name() == services.config.server_name
            && !super::appservice::local_user_exists(&services, invitee).await?
        {
            return Err(Error::not_found(format!("Unknown user {invitee}")));
        }
    }
    let preset = body.preset.clone().unwrap_or(match body.visibility {
        Visibility::Public => create_room::v3::RoomPreset::PublicChat,
        _ => create_room::v3::RoomPreset::PrivateChat,
    });
    let mut request = CreateRoom {
        version: version as RoomVersionId,
        creation_content: creation_content.unwrap_or_default(),
        preset,
        visibility: body.visibility.clone(),
        alias,
        name: body.name.clone(),
        topic: body.topic.clone(),
        invite: invitees(&services, &body.invite)?,
        is_direct: body.is_direct,
        initial_state,
        power_level_override,
        creator_profile: services.users.member_profile(&creator)?,
    };
    story_defaults(&mut request, services.config.stories.lifetime_secs * 1000);
    let room_id = services.rooms.create_room(&creator, request).await?;
    tracing::info!(%room_id, %creator, "room created");
    for invitee in body
        .invite
        .iter()
        .filter(|invitee| invitee.server_name() != services.config.server_name)
    {
        services
            .federation
            .memberships
            .invite_remote(&room_id, &creator, invitee, None, body.is_direct)
            .await?;
    }
    Ok(create_room::v3::Response::new(room_id))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
async fn upgrade(
    services: Arc<Services>,
    request: Ruma<upgrade_room::v3::Request>,
) -> Result<upgrade_room::v3::Response> {
    let user = request.user_id()?.to_owned();
    services.message_limiter.check_sender(request.sender()?)?;
    let body = request.body;
    let profile = services.users.member_profile(&user)?;
    let replacement = services
        .rooms
        .upgrade(Upgrade {
            room_id: &body.room_id,
            user: &user,
            profile: &profile,
            new_version: &body.new_version,
            additional_creators: &body.additional_creators,
        })
        .await?;
    tracing::info!(room_id = %body.room_id, %replacement, %user, "room upgraded");
    Ok(upgrade_room::v3::Response::new(replacement))
}

/// A JSON object a client gave (creation content, power level overrides).
fn object_of<T>(raw: &ruma::serde::Raw<T>) -> Result<serde_json::Map<String, Value>> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

/// The client's `initial_state` events.
fn initial_state(body: &create_room::v3::Request) -> Result<Vec<NewEvent>> {
    let mut events = Vec::new();
    for raw in &body.initial_state {
        let event: Value =
            serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let state_key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        let content = event
            .get("content")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        events.push(NewEvent::state(kind, state_key, content));
    }
    Ok(events)
}

/// The alias a `room_alias_name` makes on this server, if it is valid and free.
fn free_alias(services: &Services, name: &str, sender: &Sender) -> Result<String> {
    if name.contains(':') || name.contains(char::is_whitespace) || name.is_empty() {
        return Err(Error::new(
            ruma::api::error::ErrorKind::InvalidParam,
            "Invalid alias localpart",
        ));
    }
    let alias = format!("#{name}:{}", services.config.server_name);
    let parsed = ruma::OwnedRoomAliasId::try_from(alias.as_str())
        .map_err(|_| Error::invalid_param("Invalid alias"))?;
    super::directory::not_claimed(services, &parsed, sender)?;
    if services.rooms.resolve_alias(&parsed)?.is_some() {
        return Err(Error::new(
            ruma::api::error::ErrorKind::RoomInUse,
            "Alias already taken",
        ));
    }
    Ok(alias)
}
