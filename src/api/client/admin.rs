//! Server administration through the client API: who a user is connected as.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::admin::get_user_info;
use serde_json::{Map, Value, json};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route_json(whois)
}

/// # `GET /_matrix/client/v3/admin/whois/{userId}`
///
/// A user's devices and where each was last seen from; for the user themselves and for
/// server administrators.
async fn whois(
    services: Arc<Services>,
    request: Ruma<get_user_info::v3::Request>,
) -> Result<Value> {
    let asker = request.user_id()?;
    let target = &request.body.user_id;
    let admin = services.users.is_admin(asker)?;
    if asker != target && !admin {
        return Err(Error::forbidden(
            "Only administrators may look up other users",
        ));
    }
    if target.server_name() != services.config.server_name || !services.users.exists(target)? {
        return Err(Error::not_found("No such user on this server"));
    }
    // Own JSON: ruma writes unknown fields (the user agent, not kept) as `null`, where
    // the spec wants them left out.
    let mut devices = Map::new();
    for (device_id, device) in services.users.devices(target)? {
        let mut connection = Map::new();
        if let Some(ip) = &device.last_seen_ip {
            connection.insert("ip".to_owned(), ip.as_str().into());
        }
        if let Some(ts) = device.last_seen_ts {
            connection.insert("last_seen".to_owned(), ts.into());
        }
        devices.insert(
            device_id.to_string(),
            json!({ "sessions": [{ "connections": [connection] }] }),
        );
    }
    Ok(json!({ "user_id": target, "devices": devices }))
}
