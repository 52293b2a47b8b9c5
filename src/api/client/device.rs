//! Devices.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedDeviceId,
    api::client::device::{delete_device, delete_devices, get_device, get_devices, update_device},
};
use serde::Serialize;

use super::uia;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{Services, users::DeviceRecord},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(list)
        .ruma_route_json(get)
        .ruma_route(update)
        .ruma_route(delete)
        .ruma_route(delete_many)
}

/// A device as the spec writes it. ruma's `Device` serialises an unset display name or
/// address as `null`, where the spec leaves the field out.
#[derive(Serialize)]
struct Device {
    device_id: OwnedDeviceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ts: Option<u64>,
}

impl Device {
    fn new(device_id: OwnedDeviceId, record: DeviceRecord) -> Self {
        Self {
            device_id,
            display_name: record.display_name,
            last_seen_ip: record.last_seen_ip,
            last_seen_ts: record.last_seen_ts,
        }
    }
}

#[derive(Serialize)]
struct Devices {
    devices: Vec<Device>,
}

/// # `GET /_matrix/client/v3/devices`
async fn list(services: Arc<Services>, request: Ruma<get_devices::v3::Request>) -> Result<Devices> {
    let devices = services.users.devices(request.user_id()?)?;
    Ok(Devices {
        devices: devices
            .into_iter()
            .map(|(id, record)| Device::new(id, record))
            .collect(),
    })
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
async fn get(services: Arc<Services>, request: Ruma<get_device::v3::Request>) -> Result<Device> {
    let record = services
        .users
        .device(request.user_id()?, &request.body.device_id)?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(Device::new(request.body.device_id.clone(), record))
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
///
/// Without a `display_name` the name stays as it is. An application service makes the
/// device of its user this way when there is none (MSC4190), then acts on it with
/// `device_id`.
async fn update(
    services: Arc<Services>,
    request: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response> {
    let sender = request.sender()?;
    let user_id = &sender.user_id;
    let device_id = &request.body.device_id;
    if sender.appservice.is_some() && services.users.device(user_id, device_id)?.is_none() {
        let name = request.body.display_name.clone();
        services
            .users
            .create_tokenless_device(user_id, device_id, name)?;
        services
            .federation
            .device_lists
            .device_added(user_id, device_id)?;
        return Ok(update_device::v3::Response::new());
    }
    match &request.body.display_name {
        Some(name) => {
            services.users.rename_device(user_id, device_id, name)?;
            services
                .federation
                .device_lists
                .device_renamed(user_id, device_id)?;
        }
        None if services.users.device(user_id, device_id)?.is_none() => {
            return Err(Error::not_found("No such device"));
        }
        None => {}
    }
    Ok(update_device::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
async fn delete(
    services: Arc<Services>,
    request: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response> {
    let user_id = request.user_id()?;
    if services
        .users
        .device(user_id, &request.body.device_id)?
        .is_none()
    {
        return Err(Error::not_found("No such device"));
    }
    // An application service manages its users' devices without their passwords.
    if request.sender()?.appservice.is_none() {
        uia::reauthenticate(
            &services,
            user_id,
            request.body.auth.as_ref(),
            &uia::operation(&request),
        )
        .await?;
    }
    remove_device(&services, user_id, &request.body.device_id)?;
    Ok(delete_device::v3::Response::new())
}

/// # `POST /_matrix/client/v3/delete_devices`
async fn delete_many(
    services: Arc<Services>,
    request: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    let user_id = request.user_id()?;
    if request.sender()?.appservice.is_none() {
        uia::reauthenticate(
            &services,
            user_id,
            request.body.auth.as_ref(),
            &uia::operation(&request),
        )
        .await?;
    }
    for device_id in &request.body.devices {
        remove_device(&services, user_id, device_id)?;
    }
    Ok(delete_devices::v3::Response::new())
}

/// Removes a device with what hangs off it: its keys and tokens (and the device-list
/// update other servers hear of), and the pushers it set.
pub(super) fn remove_device(
    services: &Services,
    user_id: &ruma::UserId,
    device_id: &ruma::DeviceId,
) -> Result<()> {
    services
        .federation
        .device_lists
        .remove_device(user_id, device_id)?;
    services.push.pushers.remove_for_device(user_id, device_id)
}
