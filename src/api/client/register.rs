//! Registration.

use std::sync::Arc;

use axum::Router;
use ruma::api::{
    client::{
        account::{
            check_registration_token_validity, get_username_availability,
            register::{self, LoginType, RegistrationKind},
        },
        uiaa::{AuthData, AuthType, ThirdpartyIdCredentials},
    },
    error::ErrorKind,
};
use ruma::thirdparty::Medium;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        threepids::Verified,
        uiaa::{Operation, Verification},
        users,
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(register)
        .ruma_route(username_available)
        .ruma_route(registration_token_validity)
}

/// The flows offered: the token stage when a token is configured; when registration is
/// open, a verified phone number or email address (where codes can be sent) and, unless
/// the configuration requires one, `m.login.dummy`.
fn flows(services: &Services) -> Vec<Vec<AuthType>> {
    let config = &services.config;
    let mut flows = Vec::new();
    if config.registration_token.is_some() {
        flows.push(vec![AuthType::RegistrationToken]);
    }
    if config.allow_registration {
        if services.threepids.offers(&Medium::Msisdn) {
            flows.push(vec![AuthType::Msisdn]);
        }
        if services.threepids.offers(&Medium::Email) {
            flows.push(vec![AuthType::EmailIdentity]);
        }
        if !services.threepids.required_for_registration() {
            flows.push(vec![AuthType::Dummy]);
        }
    }
    flows
}

fn token_matches(config: &Config, token: &str) -> bool {
    config
        .registration_token
        .as_deref()
        .is_some_and(|expected| bool::from(expected.as_bytes().ct_eq(token.as_bytes())))
}

/// The answer to a registration. ruma's type writes an unset `device_id` as `null`;
/// with `inhibit_login` the spec leaves it out.
#[derive(serde::Serialize)]
struct Registered {
    user_id: ruma::OwnedUserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<ruma::OwnedDeviceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_ms: Option<u64>,
}

/// # `POST /_matrix/client/v3/register`
async fn register(
    services: Arc<Services>,
    request: Ruma<register::v3::Request>,
) -> Result<Registered> {
    let appservice = request
        .sender
        .as_ref()
        .and_then(|sender| sender.appservice.clone());
    if let Some(appservice) = appservice {
        return register_by_appservice(&services, &appservice, request).await;
    }
    if request.body.login_type == Some(LoginType::ApplicationService) {
        return Err(Error::new(
            ErrorKind::MissingToken,
            "Registering as an application service needs its token",
        ));
    }
    services
        .registration_limiter
        .check(&request.client_ip.to_string())?;
    // A client may ask for the flows before the user has filled in the form, so the
    // session is bound to the endpoint, not to the body.
    let operation = Operation::new(None, request.method.as_str(), request.uri.path(), None);
    let guest = upgraded_guest(&services, &request)?;
    let body = request.body;
    if body.kind == RegistrationKind::Guest {
        return register_guest(&services, body, request.client_ip).await;
    }
    let flows = flows(&services);
    if flows.is_empty() {
        return Err(Error::forbidden("Registration is disabled"));
    }
    // A retry of a registration that went through gets the same user, logged in again.
    let finished = body
        .auth
        .as_ref()
        .and_then(AuthData::session)
        .and_then(|session| services.uiaa.outcome(session, &operation));
    if let Some(user_id) = finished {
        let user_id = ruma::OwnedUserId::try_from(user_id).map_err(Error::internal)?;
        return registered(&services, user_id, body, request.client_ip);
    }
    let user_id = match (&guest, &body.username) {
        (Some(guest), Some(username)) if !guest.localpart().eq_ignore_ascii_case(username) => {
            return Err(Error::new(
                ErrorKind::InvalidUsername,
                "An upgraded guest account keeps its user id",
            ));
        }
        (Some(guest), _) => guest.clone(),
        (None, Some(username)) => free_user_id(&services, &username.to_lowercase())?,
        (None, None) => random_free_user_id(&services)?,
    };

    let Some(auth) = &body.auth else {
        return Err(services.uiaa.challenge(&flows, &operation));
    };
    let (session, stage, verification) = registration_stage(&services, auth, &flows, &operation)?;
    let verifications =
        services
            .uiaa
            .complete_stage_verifying(&session, stage, &flows, verification)?;
    let addresses = verified_addresses(&services, &verifications)?;

    if guest.is_some() {
        services
            .users
            .upgrade_guest(&user_id, body.password.as_deref())
            .await?;
        tracing::info!(%user_id, "guest upgraded");
    } else {
        if services.users.exists(&user_id)? {
            return Err(Error::new(ErrorKind::UserInUse, "The user id is taken"));
        }
        services
            .users
            .create(&user_id, body.password.as_deref())
            .await?;
        services.push.rules.init(&user_id)?;
        tracing::info!(%user_id, "registered");
    }
    for (verification, verified) in verifications.iter().zip(&addresses) {
        services.threepids.bind(&user_id, verified)?;
        services.threepids.use_session(&verification.sid)?;
    }
    services
        .uiaa
        .finish(&session, &operation, user_id.to_string());
    registered(&services, user_id, body, request.client_ip)
}

/// `type: m.login.application_service`: an application service makes a user of its
/// namespace, with no interactive authentication, no rate limit, and whether or not
/// registration is open.
async fn register_by_appservice(
    services: &Services,
    appservice: &str,
    request: Ruma<register::v3::Request>,
) -> Result<Registered> {
    let body = request.body;
    if body.login_type != Some(LoginType::ApplicationService) {
        return Err(Error::new(
            ErrorKind::Unknown,
            "An application service registers with type m.login.application_service",
        ));
    }
    let Some(username) = &body.username else {
        return Err(Error::new(
            ErrorKind::MissingParam,
            "An application service names the user it registers",
        ));
    };
    let user_id =
        users::validate_localpart(&username.to_lowercase(), &services.config.server_name)?;
    let own = (services.appservices.by_id(appservice))
        .is_some_and(|service| service.is_user_in_namespace(&user_id));
    let claimed_by_another = (services.appservices.current().registered.iter()).any(|service| {
        service.registration.id != appservice && service.claims_exclusively(&user_id)
    });
    if !own || claimed_by_another {
        return Err(Error::new(
            ErrorKind::Exclusive,
            "The user id is outside the application service's namespaces",
        ));
    }
    if services.users.exists(&user_id)? {
        return Err(Error::new(ErrorKind::UserInUse, "The user id is taken"));
    }
    services.users.create_passwordless(&user_id)?;
    services.push.rules.init(&user_id)?;
    tracing::info!(%user_id, appservice, "registered by an application service");
    registered(services, user_id, body, request.client_ip)
}

/// The guest account a registration upgrades: the caller's, when it authenticates as a
/// guest, or the one the legacy `guest_access_token` field names.
fn upgraded_guest(
    services: &Services,
    request: &Ruma<register::v3::Request>,
) -> Result<Option<ruma::OwnedUserId>> {
    if let Some(sender) = &request.sender {
        return Ok(sender.guest.then(|| sender.user_id.clone()));
    }
    let token = request
        .json
        .as_ref()
        .and_then(|json| json.get("guest_access_token"))
        .and_then(serde_json::Value::as_str);
    match token {
        Some(token) => {
            let sender = services.users.authenticate(token)?;
            Ok(sender.guest.then_some(sender.user_id))
        }
        None => Ok(None),
    }
}

/// `kind=guest`: an account with no password and no UIA, when the configuration allows
/// guests.
async fn register_guest(
    services: &Services,
    body: register::v3::Request,
    client_ip: std::net::IpAddr,
) -> Result<Registered> {
    if !services.config.allow_guest_access {
        return Err(Error::new(
            ErrorKind::GuestAccessForbidden,
            "Guest access is disabled",
        ));
    }
    let user_id = random_free_user_id(services)?;
    services.users.create_guest(&user_id)?;
    services.push.rules.init(&user_id)?;
    tracing::info!(%user_id, "guest registered");
    registered(services, user_id, body, client_ip)
}

/// The answer to a registration that went through: the user, and unless the client
/// asked not to be, a new session on the device it named (or a new one).
fn registered(
    services: &Services,
    user_id: ruma::OwnedUserId,
    body: register::v3::Request,
    client_ip: std::net::IpAddr,
) -> Result<Registered> {
    let mut response = Registered {
        user_id: user_id.clone(),
        access_token: None,
        device_id: None,
        refresh_token: None,
        expires_in_ms: None,
    };
    if !body.inhibit_login {
        let session = services.users.create_session(
            &user_id,
            body.device_id,
            body.initial_device_display_name,
            body.refresh_token,
            Some(client_ip.to_string()),
        )?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
        response.refresh_token = session.refresh_token;
        response.expires_in_ms = session.expires_in_ms;
    }
    Ok(response)
}

/// # `GET /_matrix/client/v3/register/available`
async fn username_available(
    services: Arc<Services>,
    request: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    services
        .registration_limiter
        .check(&request.client_ip.to_string())?;
    free_user_id(&services, &request.body.username)?;
    Ok(get_username_availability::v3::Response::new(true))
}

/// A random user id of this server that is neither taken nor claimed by an application
/// service (a registration without a username, a guest).
fn random_free_user_id(services: &Services) -> Result<ruma::OwnedUserId> {
    loop {
        let localpart = users::random_localpart();
        let user_id = users::validate_localpart(&localpart, &services.config.server_name)?;
        if !services.users.exists(&user_id)? && !services.appservices.claims_user(&user_id) {
            return Ok(user_id);
        }
    }
}

/// The user id a username names on this server, if it is valid, not claimed by an
/// application service and not taken (a claimed id is refused as claimed, taken or not:
/// an application service's own user exists from the start).
fn free_user_id(services: &Services, username: &str) -> Result<ruma::OwnedUserId> {
    let user_id = users::validate_localpart(username, &services.config.server_name)?;
    if services.appservices.claims_user(&user_id) {
        return Err(Error::new(
            ErrorKind::Exclusive,
            "The user id is reserved by an application service",
        ));
    }
    if services.users.exists(&user_id)? {
        return Err(Error::new(ErrorKind::UserInUse, "The user id is taken"));
    }
    Ok(user_id)
}

/// The addresses the verification sessions of a completed registration proved, each
/// still free.
fn verified_addresses(
    services: &Services,
    verifications: &[Verification],
) -> Result<Vec<Verified>> {
    let mut addresses = Vec::new();
    for verification in verifications {
        let verified = services
            .threepids
            .verified(&verification.sid, &verification.client_secret)?;
        if services.threepids.owner(&verified.address)?.is_some() {
            return Err(Error::new(
                ErrorKind::ThreepidInUse,
                "This address is already on an account",
            ));
        }
        addresses.push(verified);
    }
    Ok(addresses)
}

/// The stage a phone number or email stage completes, if its verification session is
/// verified and its address free.
fn verification_stage(
    services: &Services,
    creds: &ThirdpartyIdCredentials,
    medium: Medium,
) -> Result<Verification> {
    let verified = services
        .threepids
        .verified(creds.sid.as_str(), creds.client_secret.as_str())?;
    if verified.address.medium != medium {
        return Err(Error::new(
            ErrorKind::ThreepidAuthFailed,
            "The verification session is for another kind of address",
        ));
    }
    if services.threepids.owner(&verified.address)?.is_some() {
        return Err(Error::new(
            ErrorKind::ThreepidInUse,
            "This address is already on an account",
        ));
    }
    Ok(Verification {
        sid: creds.sid.to_string(),
        client_secret: creds.client_secret.to_string(),
    })
}

/// The session `auth` continues, the stage of the registration flows it completes and
/// the verification session it named, or the answer to give.
fn registration_stage(
    services: &Services,
    auth: &AuthData,
    flows: &[Vec<AuthType>],
    operation: &Operation,
) -> Result<(String, AuthType, Option<Verification>)> {
    let Some(session) = services.uiaa.session_for(auth.session(), operation)? else {
        return Err(services.uiaa.challenge(flows, operation));
    };
    let offered = |stage: &AuthType| flows.iter().any(|flow| flow.contains(stage));
    let verifying = |creds, medium, stage: AuthType| {
        if !offered(&stage) {
            return Err(services.uiaa.failed(
                &session,
                flows,
                Error::forbidden("Unsupported stage"),
            ));
        }
        match verification_stage(services, creds, medium) {
            Ok(verification) => Ok((session.clone(), stage, Some(verification))),
            Err(error) => Err(services.uiaa.failed(&session, flows, error)),
        }
    };
    match auth {
        AuthData::Dummy(_) if offered(&AuthType::Dummy) => Ok((session, AuthType::Dummy, None)),
        AuthData::RegistrationToken(token) if token_matches(&services.config, &token.token) => {
            Ok((session, AuthType::RegistrationToken, None))
        }
        AuthData::Msisdn(msisdn) => verifying(
            &msisdn.thirdparty_id_creds,
            Medium::Msisdn,
            AuthType::Msisdn,
        ),
        AuthData::EmailIdentity(email) => verifying(
            &email.thirdparty_id_creds,
            Medium::Email,
            AuthType::EmailIdentity,
        ),
        AuthData::RegistrationToken(_) => Err(services.uiaa.failed(
            &session,
            flows,
            Error::forbidden("Invalid registration token"),
        )),
        _ => Err(services
            .uiaa
            .failed(&session, flows, Error::forbidden("Unsupported stage"))),
    }
}

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
async fn registration_token_validity(
    services: Arc<Services>,
    request: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    services
        .registration_limiter
        .check(&request.client_ip.to_string())?;
    Ok(check_registration_token_validity::v1::Response::new(
        token_matches(&services.config, &request.body.token),
    ))
}
