//! Third-party networks (bridged protocols): the protocols the application services
//! declare in their registrations, and lookups of their users and locations (portal
//! rooms), asked of the services and answered with what they say.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};
use serde_json::Value;

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(protocols)
        .ruma_route_json(protocol)
        .ruma_route_json(location_for_protocol)
        .ruma_route_json(user_for_protocol)
        .ruma_route_json(location_for_alias)
        .ruma_route_json(user_for_id)
}

/// # `GET /_matrix/client/v3/thirdparty/protocols`
async fn protocols(
    services: Arc<Services>,
    _: Ruma<get_protocols::v3::Request>,
) -> Result<serde_json::Map<String, Value>> {
    Ok(services.appservices.protocols().await)
}

/// # `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`
async fn protocol(
    services: Arc<Services>,
    request: Ruma<get_protocol::v3::Request>,
) -> Result<Value> {
    services
        .appservices
        .protocol(&request.body.protocol)
        .await
        .ok_or_else(|| Error::not_found("No bridge serves this protocol"))
}

/// # `GET /_matrix/client/v3/thirdparty/location/{protocol}`
async fn location_for_protocol(
    services: Arc<Services>,
    request: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<Vec<Value>> {
    let protocol = &request.body.protocol;
    lookup(&services, &request, Some(protocol), "location").await
}

/// # `GET /_matrix/client/v3/thirdparty/user/{protocol}`
async fn user_for_protocol(
    services: Arc<Services>,
    request: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<Vec<Value>> {
    let protocol = &request.body.protocol;
    lookup(&services, &request, Some(protocol), "user").await
}

/// # `GET /_matrix/client/v3/thirdparty/location?alias=`
async fn location_for_alias(
    services: Arc<Services>,
    request: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<Vec<Value>> {
    let found = lookup(&services, &request, None, "location").await?;
    if found.is_empty() {
        return Err(Error::not_found("No bridge knows this room alias"));
    }
    Ok(found)
}

/// # `GET /_matrix/client/v3/thirdparty/user?userid=`
async fn user_for_id(
    services: Arc<Services>,
    request: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<Vec<Value>> {
    let found = lookup(&services, &request, None, "user").await?;
    if found.is_empty() {
        return Err(Error::not_found("No bridge knows this user"));
    }
    Ok(found)
}

/// Asks the services the lookup's question, with the client's query as it came (less
/// its access token): the protocol's fields are the service's to read.
async fn lookup<T>(
    services: &Services,
    request: &Ruma<T>,
    protocol: Option<&str>,
    kind: &str,
) -> Result<Vec<Value>> {
    let query: Vec<&str> = (request.uri.query().unwrap_or_default().split('&'))
        .filter(|pair| !pair.is_empty() && !pair.starts_with("access_token="))
        .collect();
    let mut path = format!("/_matrix/app/v1/thirdparty/{kind}");
    if let Some(protocol) = protocol {
        path.push('/');
        path.push_str(&palisade_appservice::client::encode(protocol));
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    services
        .appservices
        .thirdparty_lookup(protocol, &path)
        .await
        .ok_or_else(|| Error::not_found("No bridge serves this protocol"))
}
