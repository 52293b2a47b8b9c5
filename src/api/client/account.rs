//! Password changes, deactivation, third-party ids, and OpenID tokens.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, change_password, deactivate, get_3pids, request_openid_token,
};
use ruma::events::room::member::MembershipState;

use super::uia;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(change_password)
        .ruma_route(deactivate)
        .ruma_route(third_party_ids)
        .ruma_route(openid_token)
}

/// How long an OpenID token vouches for its user.
const OPENID_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// # `POST /_matrix/client/v3/user/{userId}/openid/request_token`
///
/// A token a third party (a widget, a group call's media server) checks with this
/// server's `/_matrix/federation/v1/openid/userinfo` to learn who the user is.
async fn openid_token(
    services: Arc<Services>,
    request: Ruma<request_openid_token::v3::Request>,
) -> Result<request_openid_token::v3::Response> {
    let user = request.user_id()?;
    if *user != request.body.user_id {
        return Err(Error::forbidden(
            "You may only ask for your own OpenID token",
        ));
    }
    let lifetime = OPENID_TOKEN_LIFETIME;
    let token = services
        .users
        .create_openid_token(user, lifetime.as_millis() as u64)?;
    Ok(request_openid_token::v3::Response::new(
        token,
        ruma::authentication::TokenType::Bearer,
        services.config.server_name.clone(),
        lifetime,
    ))
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
            if sender.device_id.as_ref() != Some(&device_id) {
                super::device::remove_device(&services, &sender.user_id, &device_id)?;
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
        super::device::remove_device(&services, &user_id, &device_id)?;
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
