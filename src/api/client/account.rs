//! Password changes, deactivation and third-party ids.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, change_password, deactivate, get_3pids,
};
use ruma::events::room::member::MembershipState;

use super::uia;
use crate::{
    Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(change_password)
        .ruma_route(deactivate)
        .ruma_route(third_party_ids)
}

/// # `POST /_matrix/client/v3/account/password`
async fn change_password(
    services: Arc<Services>,
    request: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let sender = request.sender()?;
    uia::require_password(
        &services,
        &sender.user_id,
        request.body.auth.as_ref(),
        &uia::operation(&request),
    )
    .await?;
    services
        .users
        .set_password(&sender.user_id, &request.body.new_password)
        .await?;
    if request.body.logout_devices {
        for (device_id, _) in services.users.devices(&sender.user_id)? {
            if device_id != sender.device_id {
                services
                    .federation
                    .device_lists
                    .remove_device(&sender.user_id, &device_id)?;
            }
        }
    }
    Ok(change_password::v3::Response::new())
}

/// # `POST /_matrix/client/v3/account/deactivate`
async fn deactivate(
    services: Arc<Services>,
    request: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let user_id = request.user_id()?.to_owned();
    uia::require_password(
        &services,
        &user_id,
        request.body.auth.as_ref(),
        &uia::operation(&request),
    )
    .await?;
    for (room_id, membership) in services.rooms.user_rooms(&user_id)? {
        if matches!(
            membership.membership,
            MembershipState::Join | MembershipState::Invite | MembershipState::Knock
        ) {
            services.rooms.leave(&room_id, &user_id, None).await?;
        }
    }
    for (device_id, _) in services.users.devices(&user_id)? {
        services
            .federation
            .device_lists
            .remove_device(&user_id, &device_id)?;
    }
    services.users.deactivate(&user_id)?;
    tracing::info!(%user_id, "deactivated");
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

/// # `GET /_matrix/client/v3/account/3pid`
async fn third_party_ids(
    _: Arc<Services>,
    _: Ruma<get_3pids::v3::Request>,
) -> Result<get_3pids::v3::Response> {
    Ok(get_3pids::v3::Response::new(Vec::new()))
}
