//! Phone numbers and email addresses on accounts: verification codes (`requestToken`,
//! and the submit URL codes come back to), the addresses on an account, and whether
//! others may find the user by them (bind and unbind with this server's identity
//! service).

use std::sync::Arc;

use axum::{
    Router,
    extract::{Query, State},
    response::{Html, IntoResponse, Redirect, Response},
    routing::post,
};
use ruma::api::{
    client::account::{
        ThirdPartyIdRemovalStatus, add_3pid, bind_3pid, delete_3pid, get_3pids,
        request_3pid_management_token_via_email, request_3pid_management_token_via_msisdn,
        request_password_change_token_via_email, request_password_change_token_via_msisdn,
        request_registration_token_via_email, request_registration_token_via_msisdn, unbind_3pid,
    },
    error::ErrorKind,
};
use serde::{Deserialize, Serialize};

use super::uia;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        threepids::{Address, Purpose, SUBMIT_PATH},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(register_msisdn)
        .ruma_route_json(register_email)
        .ruma_route_json(add_msisdn)
        .ruma_route_json(add_email)
        .ruma_route_json(password_msisdn)
        .ruma_route_json(password_email)
        .ruma_route_json(list)
        .ruma_route(add)
        .ruma_route(delete)
        .ruma_route(bind)
        .ruma_route(unbind)
        .route(SUBMIT_PATH, post(submit_json).get(submit_link))
}

/// The answer to a code request: the session, and where the code goes back.
#[derive(Serialize)]
struct Requested {
    sid: String,
    submit_url: String,
}

/// Opens a verification session and sends a code; the answer every `requestToken` gives.
fn request_code(
    services: &Services,
    purpose: Purpose,
    address: Result<Address>,
    client_secret: &str,
    send_attempt: ruma::UInt,
    next_link: Option<String>,
    client_ip: std::net::IpAddr,
) -> Result<Requested> {
    let address = address?;
    let sid = services.threepids.request_code(
        purpose,
        &address,
        client_secret,
        send_attempt.into(),
        next_link,
        &client_ip.to_string(),
    )?;
    Ok(Requested {
        sid,
        submit_url: services.threepids.submit_url().to_owned(),
    })
}

/// Signing up with an address needs open registration.
fn registration_open(services: &Services) -> Result<()> {
    if services.config.allow_registration {
        Ok(())
    } else {
        Err(Error::forbidden("Registration is disabled"))
    }
}

/// # `POST /_matrix/client/v3/register/msisdn/requestToken`
async fn register_msisdn(
    services: Arc<Services>,
    request: Ruma<request_registration_token_via_msisdn::v3::Request>,
) -> Result<Requested> {
    registration_open(&services)?;
    let body = &request.body;
    request_code(
        &services,
        Purpose::Register,
        Address::phone(&body.country, &body.phone_number),
        body.client_secret.as_str(),
        body.send_attempt,
        body.next_link.clone(),
        request.client_ip,
    )
}

/// # `POST /_matrix/client/v3/register/email/requestToken`
async fn register_email(
    services: Arc<Services>,
    request: Ruma<request_registration_token_via_email::v3::Request>,
) -> Result<Requested> {
    registration_open(&services)?;
    let body = &request.body;
    request_code(
        &services,
        Purpose::Register,
        Address::email(&body.email),
        body.client_secret.as_str(),
        body.send_attempt,
        body.next_link.clone(),
        request.client_ip,
    )
}

/// # `POST /_matrix/client/v3/account/3pid/msisdn/requestToken`
async fn add_msisdn(
    services: Arc<Services>,
    request: Ruma<request_3pid_management_token_via_msisdn::v3::Request>,
) -> Result<Requested> {
    let body = &request.body;
    request_code(
        &services,
        Purpose::Add,
        Address::phone(&body.country, &body.phone_number),
        body.client_secret.as_str(),
        body.send_attempt,
        body.next_link.clone(),
        request.client_ip,
    )
}

/// # `POST /_matrix/client/v3/account/3pid/email/requestToken`
async fn add_email(
    services: Arc<Services>,
    request: Ruma<request_3pid_management_token_via_email::v3::Request>,
) -> Result<Requested> {
    let body = &request.body;
    request_code(
        &services,
        Purpose::Add,
        Address::email(&body.email),
        body.client_secret.as_str(),
        body.send_attempt,
        body.next_link.clone(),
        request.client_ip,
    )
}

/// # `POST /_matrix/client/v3/account/password/msisdn/requestToken`
async fn password_msisdn(
    services: Arc<Services>,
    request: Ruma<request_password_change_token_via_msisdn::v3::Request>,
) -> Result<Requested> {
    let body = &request.body;
    request_code(
        &services,
        Purpose::PasswordReset,
        Address::phone(&body.country, &body.phone_number),
        body.client_secret.as_str(),
        body.send_attempt,
        body.next_link.clone(),
        request.client_ip,
    )
}

/// # `POST /_matrix/client/v3/account/password/email/requestToken`
async fn password_email(
    services: Arc<Services>,
    request: Ruma<request_password_change_token_via_email::v3::Request>,
) -> Result<Requested> {
    let body = &request.body;
    request_code(
        &services,
        Purpose::PasswordReset,
        Address::email(&body.email),
        body.client_secret.as_str(),
        body.send_attempt,
        body.next_link.clone(),
        request.client_ip,
    )
}

/// What the submit URL takes: the identity service API's `submitToken` parameters.
#[derive(Deserialize)]
pub(crate) struct Submitted {
    pub sid: String,
    pub client_secret: String,
    pub token: String,
}

/// # `POST /_palisade/client/v1/threepid/submit_token`
///
/// The `submit_url` of every code request: the identity service API's
/// `POST /validate/{medium}/submitToken`, without an access token.
async fn submit_json(State(services): State<Arc<Services>>, body: axum::body::Bytes) -> Response {
    let submitted: Submitted = match serde_json::from_slice(&body) {
        Ok(submitted) => submitted,
        Err(error) => return Error::bad_json(error.to_string()).into_response(),
    };
    match services
        .threepids
        .submit_code(&submitted.sid, &submitted.client_secret, &submitted.token)
    {
        Ok(_) => axum::Json(serde_json::json!({ "success": true })).into_response(),
        Err(error) => error.into_response(),
    }
}

/// # `GET /_palisade/client/v1/threepid/submit_token`
///
/// The link in a verification mail: a page for people, or the client's `next_link`.
async fn submit_link(
    State(services): State<Arc<Services>>,
    Query(submitted): Query<Submitted>,
) -> Response {
    match services
        .threepids
        .submit_code(&submitted.sid, &submitted.client_secret, &submitted.token)
    {
        Ok(Some(next_link))
            if next_link.starts_with("https://") || next_link.starts_with("http://") =>
        {
            Redirect::to(&next_link).into_response()
        }
        Ok(_) => page(
            http::StatusCode::OK,
            "Your address is verified. You can go back to your app.",
        ),
        Err(error) => {
            let message = match error.kind() {
                Some(ErrorKind::TokenIncorrect) => "This link is not valid.",
                Some(ErrorKind::LimitExceeded(_)) => {
                    "Too many attempts: ask your app for a new code."
                }
                _ => "This link has expired or is not valid: ask your app for a new code.",
            };
            page(http::StatusCode::BAD_REQUEST, message)
        }
    }
}

fn page(status: http::StatusCode, message: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Verification</title></head>\
         <body><p>{message}</p></body></html>"
    );
    (status, Html(html)).into_response()
}

/// One address of `GET /account/3pid`.
#[derive(Serialize)]
struct Listed {
    medium: String,
    address: String,
    validated_at: u64,
    added_at: u64,
}

#[derive(Serialize)]
struct ListedAll {
    threepids: Vec<Listed>,
}

/// # `GET /_matrix/client/v3/account/3pid`
async fn list(services: Arc<Services>, request: Ruma<get_3pids::v3::Request>) -> Result<ListedAll> {
    let user = request.user_id()?;
    let threepids = services
        .threepids
        .of_user(user)?
        .into_iter()
        .map(|(address, bound)| Listed {
            medium: address.medium_str().to_owned(),
            address: address.address,
            validated_at: bound.validated_ms,
            added_at: bound.added_ms,
        })
        .collect();
    Ok(ListedAll { threepids })
}

/// # `POST /_matrix/client/v3/account/3pid/add`
///
/// Puts a verified address on the account, once the user confirmed with their password.
async fn add(
    services: Arc<Services>,
    request: Ruma<add_3pid::v3::Request>,
) -> Result<add_3pid::v3::Response> {
    let sender = request.sender()?;
    if sender.appservice.is_none() {
        uia::reauthenticate(
            &services,
            &sender.user_id,
            request.body.auth.as_ref(),
            &uia::operation(&request),
        )
        .await?;
    }
    let body = &request.body;
    let verified = services
        .threepids
        .verified(body.sid.as_str(), body.client_secret.as_str())?;
    services.threepids.bind(&sender.user_id, &verified)?;
    services.threepids.use_session(body.sid.as_str())?;
    Ok(add_3pid::v3::Response::new())
}

/// # `POST /_matrix/client/v3/account/3pid/delete`
///
/// `success`: the address is off the account and so out of contact discovery;
/// `no-support`: it was not on the account (the spec documents no error here).
async fn delete(
    services: Arc<Services>,
    request: Ruma<delete_3pid::v3::Request>,
) -> Result<delete_3pid::v3::Response> {
    let user = request.user_id()?;
    let address = Address::parse(&request.body.medium, &request.body.address)?;
    let status = if services.threepids.unbind(user, &address)? {
        ThirdPartyIdRemovalStatus::Success
    } else {
        ThirdPartyIdRemovalStatus::NoSupport
    };
    Ok(delete_3pid::v3::Response::new(status))
}

/// Whether `id_server` (a host and optional port, as clients name identity services)
/// is this server's own identity service.
fn own_identity_server(services: &Services, id_server: &str) -> bool {
    if !services.identity.enabled() {
        return false;
    }
    let base = services.config.client_base_url();
    let authority = url::Url::parse(&base).ok().map(|url| {
        let host = url.host_str().unwrap_or_default().to_owned();
        match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    });
    let id_server = id_server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    authority.as_deref() == Some(id_server) || id_server == services.config.server_name.as_str()
}

fn not_our_identity_server() -> Error {
    Error::invalid_param("This server shares addresses only with its own identity service")
}

/// # `POST /_matrix/client/v3/account/3pid/bind`
///
/// Lets others find the user by one of their addresses, through this server's identity
/// service: the verification session (made through either API) must prove the address,
/// and the address must be on the account.
async fn bind(
    services: Arc<Services>,
    request: Ruma<bind_3pid::v3::Request>,
) -> Result<bind_3pid::v3::Response> {
    let user = request.user_id()?;
    let body = &request.body;
    if !own_identity_server(&services, &body.identity_server_info.id_server) {
        return Err(not_our_identity_server());
    }
    let owner = services
        .identity
        .authenticate(Some(&body.identity_server_info.id_access_token))?;
    if owner != *user {
        return Err(Error::forbidden("The identity token is another user's"));
    }
    let verified = services
        .threepids
        .verified(body.sid.as_str(), body.client_secret.as_str())?;
    if !services
        .threepids
        .set_discoverable(user, &verified.address, true)?
    {
        return Err(Error::new(
            ErrorKind::ThreepidNotFound,
            "Add the address to your account first",
        ));
    }
    services.threepids.use_session(body.sid.as_str())?;
    Ok(bind_3pid::v3::Response::new())
}

/// # `POST /_matrix/client/v3/account/3pid/unbind`
async fn unbind(
    services: Arc<Services>,
    request: Ruma<unbind_3pid::v3::Request>,
) -> Result<unbind_3pid::v3::Response> {
    let user = request.user_id()?;
    let body = &request.body;
    if let Some(id_server) = &body.id_server
        && !own_identity_server(&services, id_server)
    {
        return Ok(unbind_3pid::v3::Response::new(
            ThirdPartyIdRemovalStatus::NoSupport,
        ));
    }
    let address = Address::parse(&body.medium, &body.address)?;
    let status = if services.threepids.set_discoverable(user, &address, false)? {
        ThirdPartyIdRemovalStatus::Success
    } else {
        ThirdPartyIdRemovalStatus::NoSupport
    };
    Ok(unbind_3pid::v3::Response::new(status))
}
