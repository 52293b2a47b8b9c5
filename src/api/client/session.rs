//! Login, logout, refresh tokens and whoami.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::api::client::{
    account::whoami,
    session::{
        get_login_token, get_login_types,
        get_login_types::v3::{
            ApplicationServiceLoginType, LoginType, PasswordLoginType, TokenLoginType,
        },
        login::{self, v3::LoginInfo},
        logout, logout_all, refresh_token,
    },
};

use super::uia;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

/// How long a login token from `/login/get_token` is valid.
const LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(120);

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(login_types)
        .ruma_route_prepared(login, require_login_type)
        .ruma_route(logout)
        .ruma_route(logout_all)
        .ruma_route(refresh)
        .ruma_route(whoami)
        .ruma_route(login_token)
}

/// # `GET /_matrix/client/v3/login`
async fn login_types(
    _: Arc<Services>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    let mut token = TokenLoginType::new();
    token.get_login_token = true;
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
        LoginType::Token(token),
        LoginType::ApplicationService(ApplicationServiceLoginType::new()),
    ]))
}

/// A login without a `type` is the client's error, answered before ruma's parser (which
/// indexes the field) sees it.
fn require_login_type(
    body: &mut serde_json::Map<String, serde_json::Value>,
    _: &[&str],
) -> Result<()> {
    match body.get("type") {
        Some(serde_json::Value::String(_)) => Ok(()),
        Some(_) => Err(Error::bad_json("The login type must be a string")),
        None => Err(Error::new(
            ruma::api::error::ErrorKind::MissingParam,
            "The login type is missing",
        )),
    }
}

/// # `POST /_matrix/client/v3/login`
async fn login(
    services: Arc<Services>,
    request: Ruma<login::v3::Request>,
) -> Result<login::v3::Response> {
    let appservice = request
        .sender
        .as_ref()
        .and_then(|sender| sender.appservice.clone());
    if appservice.is_none() {
        services
            .login_limiter
            .check(&request.client_ip.to_string())?;
    }
    let body = request.body;
    let server_name = &services.config.server_name;
    let user_id = match &body.login_info {
        LoginInfo::Password(password) => {
            #[allow(deprecated)]
            let legacy_user = &password.user;
            let user_id = match (&password.identifier, legacy_user) {
                (Some(identifier), _) => uia::user_from_identifier(&services, identifier)?,
                (None, Some(user)) => uia::user_from_name(user, server_name)?,
                (None, None) => return Err(Error::bad_json("Missing identifier")),
            };
            services
                .users
                .check_password(&user_id, &password.password)
                .await?;
            user_id
        }
        LoginInfo::Token(token) => {
            let user_id = services.users.consume_login_token(&token.token)?;
            if !services.users.is_active(&user_id)? {
                return Err(Error::new(
                    ruma::api::error::ErrorKind::UserDeactivated,
                    "This account is deactivated",
                ));
            }
            user_id
        }
        LoginInfo::ApplicationService(login) => {
            #[allow(deprecated)]
            let legacy_user = &login.user;
            let user_id = match (&login.identifier, legacy_user) {
                (Some(identifier), _) => uia::user_from_identifier(&services, identifier)?,
                (None, Some(user)) => uia::user_from_name(user, server_name)?,
                (None, None) => return Err(Error::bad_json("Missing identifier")),
            };
            appservice_may_log_in(&services, appservice.as_deref(), &user_id)?;
            user_id
        }
        _ => {
            return Err(Error::new(
                ruma::api::error::ErrorKind::Unknown,
                "Unsupported login type",
            )
            .with_status(http::StatusCode::BAD_REQUEST));
        }
    };
    let session = services.users.create_session(
        &user_id,
        body.device_id,
        body.initial_device_display_name,
        body.refresh_token,
        Some(request.client_ip.to_string()),
    )?;
    if session.new_device {
        services
            .federation
            .device_lists
            .device_added(&user_id, &session.device_id)?;
    }
    tracing::info!(%user_id, device_id = %session.device_id, "logged in");
    let mut response = login::v3::Response::new(user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in_ms.map(Duration::from_millis);
    #[allow(deprecated)]
    {
        response.home_server = Some(server_name.clone());
    }
    response.well_known = Some(login::v3::DiscoveryInfo::new(
        login::v3::HomeserverInfo::new(services.config.client_base_url()),
    ));
    Ok(response)
}

/// Whether the application service whose token came with an `m.login.application_service`
/// login may log in as `user_id`: a registered user of its namespaces.
fn appservice_may_log_in(
    services: &Services,
    appservice: Option<&str>,
    user_id: &ruma::UserId,
) -> Result<()> {
    let Some(appservice) = appservice else {
        return Err(Error::new(
            ruma::api::error::ErrorKind::MissingToken,
            "Logging in as an application service needs its token",
        ));
    };
    let in_namespace = (services.appservices.by_id(appservice))
        .is_some_and(|service| service.is_user_in_namespace(user_id));
    if !in_namespace || !services.users.is_active(user_id)? {
        return Err(Error::forbidden(
            "The application service may not log in as this user",
        ));
    }
    Ok(())
}

/// # `POST /_matrix/client/v3/logout`
async fn logout(
    services: Arc<Services>,
    request: Ruma<logout::v3::Request>,
) -> Result<logout::v3::Response> {
    let sender = request.sender()?;
    super::device::remove_device(&services, &sender.user_id, sender.device()?)?;
    Ok(logout::v3::Response::new())
}

/// # `POST /_matrix/client/v3/logout/all`
async fn logout_all(
    services: Arc<Services>,
    request: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response> {
    let user_id = request.user_id()?;
    for (device_id, _) in services.users.devices(user_id)? {
        super::device::remove_device(&services, user_id, &device_id)?;
    }
    Ok(logout_all::v3::Response::new())
}

/// # `POST /_matrix/client/v3/refresh`
async fn refresh(
    services: Arc<Services>,
    request: Ruma<refresh_token::v3::Request>,
) -> Result<refresh_token::v3::Response> {
    let session = services.users.refresh(&request.body.refresh_token)?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    response.refresh_token = session.refresh_token;
    response.expires_in_ms = session.expires_in_ms.map(Duration::from_millis);
    Ok(response)
}

/// # `GET /_matrix/client/v3/account/whoami`
async fn whoami(
    _: Arc<Services>,
    request: Ruma<whoami::v3::Request>,
) -> Result<whoami::v3::Response> {
    let sender = request.sender()?;
    let mut response = whoami::v3::Response::new(sender.user_id.clone(), sender.guest);
    response.device_id = sender.device_id.clone();
    Ok(response)
}

/// # `POST /_matrix/client/v1/login/get_token`
async fn login_token(
    services: Arc<Services>,
    request: Ruma<get_login_token::v1::Request>,
) -> Result<get_login_token::v1::Response> {
    let user_id = request.user_id()?;
    uia::reauthenticate(
        &services,
        user_id,
        request.body.auth.as_ref(),
        &uia::operation(&request),
    )
    .await?;
    let token = services
        .users
        .create_login_token(user_id, LOGIN_TOKEN_LIFETIME.as_millis() as u64)?;
    Ok(get_login_token::v1::Response::new(
        LOGIN_TOKEN_LIFETIME,
        token,
    ))
}
