//! Devices.

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt,
    api::client::device::{
        Device, delete_device, delete_devices, get_device, get_devices, update_device,
    },
};

use super::uia;
use crate::{
    Error, Result,
    router::{Ruma, RumaRouter},
    service::{Services, users::DeviceRecord},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(list)
        .ruma_route(get)
        .ruma_route(update)
        .ruma_route(delete)
        .ruma_route(delete_many)
}

fn to_device(device_id: OwnedDeviceId, record: DeviceRecord) -> Device {
    let mut device = Device::new(device_id);
    device.display_name = record.display_name;
    device.last_seen_ip = record.last_seen_ip;
    device.last_seen_ts = record
        .last_seen_ts
        .and_then(UInt::new)
        .map(MilliSecondsSinceUnixEpoch);
    device
}

/// # `GET /_matrix/client/v3/devices`
async fn list(
    services: Arc<Services>,
    request: Ruma<get_devices::v3::Request>,
) -> Result<get_devices::v3::Response> {
    let devices = services.users.devices(request.user_id()?)?;
    Ok(get_devices::v3::Response::new(
        devices
            .into_iter()
            .map(|(id, record)| to_device(id, record))
            .collect(),
    ))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
async fn get(
    services: Arc<Services>,
    request: Ruma<get_device::v3::Request>,
) -> Result<get_device::v3::Response> {
    let record = services
        .users
        .device(request.user_id()?, &request.body.device_id)?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(get_device::v3::Response::new(to_device(
        request.body.device_id.clone(),
        record,
    )))
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
async fn update(
    services: Arc<Services>,
    request: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response> {
    services.users.rename_device(
        request.user_id()?,
        &request.body.device_id,
        request.body.display_name.clone(),
    )?;
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
    uia::require_password(&services, user_id, request.body.auth.as_ref()).await?;
    services
        .users
        .remove_device(user_id, &request.body.device_id)?;
    Ok(delete_device::v3::Response::new())
}

/// # `POST /_matrix/client/v3/delete_devices`
async fn delete_many(
    services: Arc<Services>,
    request: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    let user_id = request.user_id()?;
    uia::require_password(&services, user_id, request.body.auth.as_ref()).await?;
    for device_id in &request.body.devices {
        services.users.remove_device(user_id, device_id)?;
    }
    Ok(delete_devices::v3::Response::new())
}
