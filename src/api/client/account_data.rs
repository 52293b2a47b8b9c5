//! Account data, global and per room.

use std::sync::Arc;

use axum::Router;
use ruma::{
    UserId,
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        tag::{create_tag, delete_tag, get_tags},
    },
    serde::Raw,
};

use crate::service::account_data::AccountData;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(get_global)
        .ruma_route(set_global)
        .ruma_route(get_room)
        .ruma_route(set_room)
        .ruma_route(tags)
        .ruma_route(set_tag)
        .ruma_route(remove_tag)
}

fn own(sender: &UserId, target: &UserId) -> Result<()> {
    if sender != target {
        return Err(Error::forbidden(
            "You can only access your own account data",
        ));
    }
    Ok(())
}

/// Types the server manages itself and clients may not write.
fn server_managed(event_type: &str) -> bool {
    matches!(event_type, "m.fully_read" | "m.push_rules")
}

fn to_raw<T>(value: serde_json::Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

fn parse_content(raw: &str) -> Result<serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| Error::bad_json(e.to_string()))?;
    if !value.is_object() {
        return Err(Error::bad_json("Account data must be a JSON object"));
    }
    Ok(value)
}

/// # `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn get_global(
    services: Arc<Services>,
    request: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    own(request.user_id()?, &request.body.user_id)?;
    let content = services
        .account_data
        .get(
            &request.body.user_id,
            None,
            &request.body.event_type.to_string(),
        )?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(get_global_account_data::v3::Response::new(to_raw(content)?))
}

/// # `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn set_global(
    services: Arc<Services>,
    request: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    own(request.user_id()?, &request.body.user_id)?;
    let event_type = request.body.event_type.to_string();
    if server_managed(&event_type) {
        return Err(
            Error::bad_json(format!("Cannot set {event_type} through this API"))
                .with_status(http::StatusCode::METHOD_NOT_ALLOWED),
        );
    }
    let content = parse_content(request.body.data.json().get())?;
    services
        .account_data
        .set(&request.body.user_id, None, &event_type, content)?;
    Ok(set_global_account_data::v3::Response::new())
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn get_room(
    services: Arc<Services>,
    request: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    own(request.user_id()?, &request.body.user_id)?;
    let content = services
        .account_data
        .get(
            &request.body.user_id,
            Some(&request.body.room_id),
            &request.body.event_type.to_string(),
        )?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(get_room_account_data::v3::Response::new(to_raw(content)?))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn set_room(
    services: Arc<Services>,
    request: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    own(request.user_id()?, &request.body.user_id)?;
    let event_type = request.body.event_type.to_string();
    if server_managed(&event_type) {
        return Err(
            Error::bad_json(format!("Cannot set {event_type} through this API"))
                .with_status(http::StatusCode::METHOD_NOT_ALLOWED),
        );
    }
    let content = parse_content(request.body.data.json().get())?;
    services.account_data.set(
        &request.body.user_id,
        Some(&request.body.room_id),
        &event_type,
        content,
    )?;
    Ok(set_room_account_data::v3::Response::new())
}

/// A room's `m.tag` account data content (`{"tags": {...}}`).
fn load_tags(
    account_data: &AccountData,
    user: &UserId,
    room_id: &ruma::RoomId,
) -> Result<serde_json::Value> {
    let content = account_data.get(user, Some(room_id), "m.tag")?;
    Ok(content.unwrap_or_else(|| serde_json::json!({ "tags": {} })))
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
async fn tags(
    services: Arc<Services>,
    request: Ruma<get_tags::v3::Request>,
) -> Result<get_tags::v3::Response> {
    own(request.user_id()?, &request.body.user_id)?;
    let content = load_tags(
        &services.account_data,
        &request.body.user_id,
        &request.body.room_id,
    )?;
    let tags = serde_json::from_value(content["tags"].clone()).map_err(Error::internal)?;
    Ok(get_tags::v3::Response::new(tags))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn set_tag(
    services: Arc<Services>,
    request: Ruma<create_tag::v3::Request>,
) -> Result<create_tag::v3::Response> {
    own(request.user_id()?, &request.body.user_id)?;
    let body = &request.body;
    let mut content = load_tags(&services.account_data, &body.user_id, &body.room_id)?;
    let info = serde_json::to_value(&body.tag_info).map_err(Error::internal)?;
    content["tags"][body.tag.as_str()] = info;
    services
        .account_data
        .set(&body.user_id, Some(&body.room_id), "m.tag", content)?;
    Ok(create_tag::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn remove_tag(
    services: Arc<Services>,
    request: Ruma<delete_tag::v3::Request>,
) -> Result<delete_tag::v3::Response> {
    own(request.user_id()?, &request.body.user_id)?;
    let body = &request.body;
    let mut content = load_tags(&services.account_data, &body.user_id, &body.room_id)?;
    if let Some(tags) = content["tags"].as_object_mut() {
        tags.remove(&body.tag);
    }
    services
        .account_data
        .set(&body.user_id, Some(&body.room_id), "m.tag", content)?;
    Ok(delete_tag::v3::Response::new())
}
