//! Queries about this server's users and aliases, and who an OpenID token is for.

use std::sync::Arc;

use axum::Router;
use ruma::api::{
    client::profile::UserProfile,
    federation::{
        openid::get_openid_userinfo,
        query::{get_profile_information, get_room_information},
    },
};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(profile)
        .ruma_route(directory)
        .ruma_route(openid_userinfo)
}

/// # `GET /_matrix/federation/v1/query/profile`
async fn profile(
    services: Arc<Services>,
    request: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    let body = &request.body;
    if body.user_id.server_name() != services.config.server_name
        || !services.users.exists(&body.user_id)?
    {
        return Err(Error::not_found("Unknown user"));
    }
    let mut fields = services.users.profile(&body.user_id)?;
    if let Some(field) = &body.field {
        fields.retain(|name, _| name == field.as_str());
    }
    let mut response = get_profile_information::v1::Response::new();
    response.data = fields.into_iter().collect::<UserProfile>();
    Ok(response)
}

/// # `GET /_matrix/federation/v1/query/directory`
async fn directory(
    services: Arc<Services>,
    request: Ruma<get_room_information::v1::Request>,
) -> Result<get_room_information::v1::Response> {
    let alias = &request.body.room_alias;
    if alias.server_name() != services.config.server_name {
        return Err(Error::not_found("The alias is not of this server"));
    }
    let record = crate::api::client::appservice::local_alias(&services, alias)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room alias"))?;
    let mut servers = vec![services.config.server_name.clone()];
    servers.extend(services.rooms.remote_servers(&record.room_id)?);
    Ok(get_room_information::v1::Response::new(
        record.room_id,
        servers,
    ))
}

/// # `GET /_matrix/federation/v1/openid/userinfo`
///
/// Who an OpenID token this server handed out is for (asked by third parties, without
/// server signatures); 401 `M_UNKNOWN_TOKEN` for one unknown or expired.
async fn openid_userinfo(
    services: Arc<Services>,
    request: Ruma<get_openid_userinfo::v1::Request>,
) -> Result<get_openid_userinfo::v1::Response> {
    let user = services
        .users
        .openid_user(&request.body.access_token)?
        .ok_or_else(|| Error::unknown_token(false))?;
    Ok(get_openid_userinfo::v1::Response::new(user))
}
