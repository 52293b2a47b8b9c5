//! Account data, global and per room.

use std::sync::Arc;

use axum::Router;
use ruma::{
    UserId,
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data,
        set_room_account_data,
    },
    serde::Raw,
};

use crate::{
    Error, Result,
    router::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(get_global)
        .ruma_route(set_global)
        .ruma_route(get_room)
        .ruma_route(set_room)
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
