//! Profiles. A change of display name or avatar is also sent as a new member event into
//! every room the user is in, so other members see it.

use std::sync::Arc;

use axum::Router;
use ruma::events::room::member::MembershipState;
use ruma::{
    UserId,
    api::{
        client::profile::{
            ProfileFieldValue, UserProfile, delete_profile_field, get_profile, get_profile_field,
            set_profile_field,
        },
        error::ErrorKind,
    },
};
use serde_json::{Map, Value};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{Services, rooms::timeline::NewEvent},
};

/// The longest profile key, in bytes (the spec's limit).
const MAX_KEY_BYTES: usize = 255;
/// The largest whole profile, in bytes of JSON (the spec's limit).
const MAX_PROFILE_BYTES: usize = 65_536;
/// Display names and avatar URLs are copied into every member event of the user, so
/// they are held to this, in bytes of JSON.
const MAX_MEMBER_FIELD_BYTES: usize = 4096;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(profile)
        .ruma_route(field)
        .ruma_route_prepared(set_field, only_the_field)
        .ruma_route(delete_field)
}

async fn require_local_user(services: &Services, user_id: &UserId) -> Result<()> {
    if user_id.server_name() != services.config.server_name
        || !super::appservice::local_user_exists(services, user_id).await?
    {
        return Err(Error::not_found("Profile not found"));
    }
    Ok(())
}

/// A profile of another server's user, asked of that server (`field` alone if given).
async fn remote_profile(
    services: &Services,
    user_id: &UserId,
    field: Option<&str>,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    if !services.config.federation.enabled {
        return Err(Error::not_found("Profile not found"));
    }
    let mut request =
        ruma::api::federation::query::get_profile_information::v1::Request::new(user_id.to_owned());
    request.field = field.map(Into::into);
    let response = services
        .federation_client
        .send(user_id.server_name(), request)
        .await
        .map_err(|error| Error::not_found(format!("Profile not found: {error}")))?;
    let value = serde_json::to_value(&response.data).map_err(Error::internal)?;
    Ok(match value {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    })
}

/// # `GET /_matrix/client/v3/profile/{userId}`
async fn profile(
    services: Arc<Services>,
    request: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response> {
    let user_id = &request.body.user_id;
    if user_id.server_name() != services.config.server_name {
        let fields = remote_profile(&services, user_id, None).await?;
        let mut response = get_profile::v3::Response::new();
        response.data = fields.into_iter().collect::<UserProfile>();
        return Ok(response);
    }
    require_local_user(&services, &request.body.user_id).await?;
    let fields = services.users.profile(&request.body.user_id)?;
    let mut response = get_profile::v3::Response::new();
    response.data = fields.into_iter().collect::<UserProfile>();
    Ok(response)
}

/// # `GET /_matrix/client/v3/profile/{userId}/{keyName}`
async fn field(
    services: Arc<Services>,
    request: Ruma<get_profile_field::v3::Request>,
) -> Result<get_profile_field::v3::Response> {
    let name = request.body.field.as_str();
    let user_id = &request.body.user_id;
    let value = if user_id.server_name() != services.config.server_name {
        remote_profile(&services, user_id, Some(name))
            .await?
            .remove(name)
    } else {
        require_local_user(&services, user_id).await?;
        services.users.profile_field(user_id, name)?
    }
    .ok_or_else(|| Error::not_found("Profile field not set"))?;
    let value = ProfileFieldValue::new(name, value).map_err(Error::internal)?;
    Ok(get_profile_field::v3::Response::new(value))
}

/// The body holds the field named in the path, perhaps among others. ruma reads it only
/// when it comes first (failing with "expected , or }" otherwise): it is given that one
/// property alone, and a body without it is the spec's `M_MISSING_PARAM`.
fn only_the_field(body: &mut Map<String, Value>, path_args: &[&str]) -> Result<()> {
    let Some(&name) = path_args.last() else {
        return Ok(());
    };
    let value = body.remove(name).ok_or_else(|| {
        Error::new(
            ErrorKind::MissingParam,
            format!("The body has no `{name}` property"),
        )
    })?;
    body.clear();
    body.insert(name.to_owned(), value);
    Ok(())
}

/// # `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
async fn set_field(
    services: Arc<Services>,
    request: Ruma<set_profile_field::v3::Request>,
) -> Result<set_profile_field::v3::Response> {
    let user_id = request.user_id()?.to_owned();
    if request.body.user_id != user_id {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    let name = request.body.value.field_name();
    let value = request.body.value.value().into_owned();
    if name.as_str().len() > MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorKind::KeyTooLarge,
            format!("Profile keys are at most {MAX_KEY_BYTES} bytes"),
        )
        .with_status(http::StatusCode::BAD_REQUEST));
    }
    let value_bytes = serde_json::to_vec(&value).map_err(Error::internal)?.len();
    if matches!(name.as_str(), "displayname" | "avatar_url") && value_bytes > MAX_MEMBER_FIELD_BYTES
    {
        return Err(Error::new(ErrorKind::TooLarge, "Profile field too large"));
    }
    let mut profile = services.users.profile(&user_id)?;
    profile.insert(name.as_str().to_owned(), value.clone());
    if serde_json::to_vec(&profile).map_err(Error::internal)?.len() > MAX_PROFILE_BYTES {
        return Err(Error::new(
            ErrorKind::ProfileTooLarge,
            "The profile would exceed 64 KiB",
        )
        .with_status(http::StatusCode::BAD_REQUEST));
    }
    services
        .users
        .set_profile_field(&user_id, name.as_str(), Some(&value))?;
    propagate(&services, &user_id, name.as_str()).await?;
    Ok(set_profile_field::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/profile/{userId}/{keyName}`
async fn delete_field(
    services: Arc<Services>,
    request: Ruma<delete_profile_field::v3::Request>,
) -> Result<delete_profile_field::v3::Response> {
    let user_id = request.user_id()?.to_owned();
    if request.body.user_id != user_id {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    let name = request.body.field.as_str().to_owned();
    services.users.set_profile_field(&user_id, &name, None)?;
    propagate(&services, &user_id, &name).await?;
    Ok(delete_profile_field::v3::Response::new())
}

/// Sends an updated member event into each joined room after a display name or avatar
/// change.
async fn propagate(services: &Services, user_id: &UserId, field: &str) -> Result<()> {
    if !matches!(field, "displayname" | "avatar_url") {
        return Ok(());
    }
    let displayname = services.users.displayname(user_id)?;
    let avatar_url = services.users.avatar_url(user_id)?;
    for (room_id, membership) in services.rooms.user_rooms(user_id)? {
        if membership.membership != MembershipState::Join {
            continue;
        }
        let mut content = services
            .rooms
            .state_content(&room_id, "m.room.member", user_id.as_str())?
            .unwrap_or_else(|| serde_json::json!({ "membership": MembershipState::Join.as_str() }));
        let object = content
            .as_object_mut()
            .ok_or_else(|| Error::internal("member content"))?;
        match &displayname {
            Some(name) => object.insert("displayname".to_owned(), name.as_str().into()),
            None => object.remove("displayname"),
        };
        match &avatar_url {
            Some(url) => object.insert("avatar_url".to_owned(), url.as_str().into()),
            None => object.remove("avatar_url"),
        };
        let event = NewEvent::state("m.room.member", user_id.as_str(), content);
        if let Err(error) = services.rooms.append(&room_id, user_id, event, None).await {
            tracing::warn!(%room_id, %error, "could not update the member event");
        }
    }
    Ok(())
}
