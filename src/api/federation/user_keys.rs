//! This server's users' devices and keys, for other servers.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    UserId,
    api::federation::{
        device::get_devices,
        keys::{claim_keys, get_keys},
    },
};
use serde_json::{Value, json};

use crate::config::Config;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(devices)
        .ruma_route_json(keys)
        .ruma_route_json(claim)
}

fn is_local(config: &Config, user: &UserId) -> bool {
    user.server_name() == config.server_name
}

/// # `GET /_matrix/federation/v1/user/devices/{userId}`
///
/// The devices that published keys, under the user's current device-list stream id
/// (the one its `m.device_list_update` EDUs carry).
async fn devices(
    services: Arc<Services>,
    request: Ruma<get_devices::v1::Request>,
) -> Result<Value> {
    let user = &request.body.user_id;
    if !is_local(&services.config, user) || !services.users.exists(user)? {
        return Err(Error::not_found("Unknown user"));
    }
    let keys = services.e2ee.local_keys(&services.users, user, &[], None)?;
    let devices: Vec<Value> = keys
        .devices
        .into_iter()
        .map(|(device_id, mut keys)| {
            let name = keys
                .as_object_mut()
                .and_then(|object| object.remove("unsigned"))
                .and_then(|unsigned| unsigned.get("device_display_name").cloned());
            let mut device = json!({ "device_id": device_id, "keys": keys });
            if let Some(name) = name {
                device["device_display_name"] = name;
            }
            device
        })
        .collect();
    let mut response = json!({
        "user_id": user,
        "stream_id": services.e2ee.device_list_version(user)?.unwrap_or(0),
        "devices": devices,
    });
    if let Some(master) = keys.master_key {
        response["master_key"] = master;
    }
    if let Some(self_signing) = keys.self_signing_key {
        response["self_signing_key"] = self_signing;
    }
    Ok(response)
}

/// # `POST /_matrix/federation/v1/user/keys/query`
async fn keys(services: Arc<Services>, request: Ruma<get_keys::v1::Request>) -> Result<Value> {
    let mut device_keys = BTreeMap::new();
    let mut master_keys = BTreeMap::new();
    let mut self_signing_keys = BTreeMap::new();
    for (user, devices) in &request.body.device_keys {
        if !is_local(&services.config, user) {
            continue;
        }
        let keys = services
            .e2ee
            .local_keys(&services.users, user, devices, None)?;
        device_keys.insert(user.to_string(), json!(keys.devices));
        if let Some(key) = keys.master_key {
            master_keys.insert(user.to_string(), key);
        }
        if let Some(key) = keys.self_signing_key {
            self_signing_keys.insert(user.to_string(), key);
        }
    }
    Ok(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
    }))
}

/// # `POST /_matrix/federation/v1/user/keys/claim`
async fn claim(services: Arc<Services>, request: Ruma<claim_keys::v1::Request>) -> Result<Value> {
    let mut one_time_keys = BTreeMap::new();
    for (user, devices) in &request.body.one_time_keys {
        if !is_local(&services.config, user) {
            continue;
        }
        let claimed = services.e2ee.claim_local(user, devices)?;
        if !claimed.is_empty() {
            one_time_keys.insert(user.to_string(), claimed);
        }
    }
    Ok(json!({ "one_time_keys": one_time_keys }))
}
