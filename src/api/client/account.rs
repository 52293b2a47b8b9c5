//! Password changes, deactivation, third-party ids, and OpenID tokens.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, change_password, deactivate, request_openid_token,
};
use ruma::api::{
    client::uiaa::{AuthData, AuthType},
    error::ErrorKind,
};
use ruma::events::room::member::MembershipState;
use ruma::thirdparty::Medium;

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
///
/// Logged in, the user confirms with their password. Logged out, a forgotten password is
/// reset by proving a phone number or email address on the account (a verified session
/// of `/account/password/{medium}/requestToken`).
async fn change_password(
    services: Arc<Services>,
    request: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let Some(sender) = request.sender.clone() else {
        return reset_password(&services, request).await;
    };
    uia::reauthenticate(
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

/// A password reset: one stage, `m.login.email.identity` or `m.login.msisdn`, naming a
/// verified session of an address on the account. Every device is logged out unless
/// the client asks otherwise.
async fn reset_password(
    services: &Services,
    request: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    services
        .login_limiter
        .check(&request.client_ip.to_string())?;
    let mut flows = Vec::new();
    if services.threepids.offers(&Medium::Email) {
        flows.push(vec![AuthType::EmailIdentity]);
    }
    if services.threepids.offers(&Medium::Msisdn) {
        flows.push(vec![AuthType::Msisdn]);
    }
    if flows.is_empty() {
        return Err(Error::new(
            ErrorKind::MissingToken,
            "Log in to change your password",
        ));
    }
    let operation = uia::operation(&request);
    let (creds, stage) = match &request.body.auth {
        Some(AuthData::EmailIdentity(email)) => {
            (&email.thirdparty_id_creds, AuthType::EmailIdentity)
        }
        Some(AuthData::Msisdn(msisdn)) => (&msisdn.thirdparty_id_creds, AuthType::Msisdn),
        _ => return Err(services.uiaa.challenge(&flows, &operation)),
    };
    let session = request.body.auth.as_ref().and_then(AuthData::session);
    let Some(session) = services.uiaa.session_for(session, &operation)? else {
        return Err(services.uiaa.challenge(&flows, &operation));
    };
    let owner = services
        .threepids
        .verified(creds.sid.as_str(), creds.client_secret.as_str())
        .and_then(|verified| {
            services.threepids.owner(&verified.address)?.ok_or_else(|| {
                Error::new(
                    ErrorKind::ThreepidNotFound,
                    "This address is not on any account",
                )
            })
        });
    let user_id = match owner {
        Ok(user_id) => user_id,
        Err(error) => return Err(services.uiaa.failed(&session, &flows, error)),
    };
    services.uiaa.complete_stage(&session, stage, &flows)?;
    services.threepids.use_session(creds.sid.as_str())?;
    services
        .users
        .set_password(&user_id, &request.body.new_password)
        .await?;
    if request.body.logout_devices {
        for (device_id, _) in services.users.devices(&user_id)? {
            super::device::remove_device(services, &user_id, &device_id)?;
        }
    }
    tracing::info!(%user_id, "password reset through a verified address");
    Ok(change_password::v3::Response::new())
}

/// # `POST /_matrix/client/v3/account/deactivate`
async fn deactivate(
    services: Arc<Services>,
    request: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let user_id = request.user_id()?.to_owned();
    uia::reauthenticate(
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
    services.threepids.unbind_all(&user_id)?;
    services.users.deactivate(&user_id)?;
    tracing::info!(%user_id, "deactivated");
    // Discovery is served from the addresses on accounts: they are gone from it.
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::Success,
    ))
}
