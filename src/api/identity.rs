//! The identity service API (`/_matrix/identity/v2`), served by this server for contact
//! discovery when `identity.enabled` is on: accounts (an identity token for an OpenID
//! token of this server), terms, and lookups of hashed addresses. Verifying an address
//! for discovery goes through the same verification sessions as the client API.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Query, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::{HeaderMap, Uri};
use ruma::api::error::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{client::threepid::Submitted, ruma::access_token_in};
use crate::{
    Error, Result,
    service::{
        Services,
        identity::Algorithm,
        threepids::{Address, Purpose},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/identity/v2", get(status))
        .route("/_matrix/identity/v2/account/register", post(register))
        .route("/_matrix/identity/v2/account", get(account))
        .route("/_matrix/identity/v2/account/logout", post(logout))
        .route("/_matrix/identity/v2/terms", get(terms).post(accept_terms))
        .route("/_matrix/identity/v2/hash_details", get(hash_details))
        .route("/_matrix/identity/v2/lookup", post(lookup))
        .route(
            "/_matrix/identity/v2/validate/msisdn/requestToken",
            post(request_msisdn),
        )
        .route(
            "/_matrix/identity/v2/validate/email/requestToken",
            post(request_email),
        )
        .route(
            "/_matrix/identity/v2/validate/msisdn/submitToken",
            post(submit),
        )
        .route(
            "/_matrix/identity/v2/validate/email/submitToken",
            post(submit),
        )
        .route("/_matrix/identity/v2/3pid/getValidated3pid", get(validated))
}

/// Runs a handler when the identity service is on; 404 `M_UNRECOGNIZED` otherwise.
fn answer(services: &Services, handler: impl FnOnce() -> Result<Value>) -> Response {
    if !services.identity.enabled() {
        return Error::unrecognized(http::StatusCode::NOT_FOUND).into_response();
    }
    super::synapse_admin::answer(handler())
}

/// The user of the request's identity token, who accepted the terms.
fn user(services: &Services, headers: &HeaderMap, uri: &Uri) -> Result<ruma::OwnedUserId> {
    let token = access_token_in(headers, uri);
    let user = services.identity.authenticate(token.as_deref())?;
    services.identity.require_terms(&user)?;
    Ok(user)
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|error| Error::bad_json(error.to_string()))
}

/// # `GET /_matrix/identity/v2`
async fn status(State(services): State<Arc<Services>>) -> Response {
    answer(&services, || Ok(json!({})))
}

#[derive(Deserialize)]
struct OpenIdToken {
    access_token: String,
    matrix_server_name: String,
}

/// # `POST /_matrix/identity/v2/account/register`
async fn register(State(services): State<Arc<Services>>, body: Bytes) -> Response {
    if !services.identity.enabled() {
        return Error::unrecognized(http::StatusCode::NOT_FOUND).into_response();
    }
    let registered = async {
        let openid: OpenIdToken = json_body(&body)?;
        services
            .identity
            .register(&openid.access_token, &openid.matrix_server_name)
            .await
    };
    super::synapse_admin::answer(registered.await.map(|token| json!({ "token": token })))
}

/// # `GET /_matrix/identity/v2/account`
async fn account(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Response {
    answer(&services, || {
        let token = access_token_in(&headers, &uri);
        let user = services.identity.authenticate(token.as_deref())?;
        Ok(json!({ "user_id": user }))
    })
}

/// # `POST /_matrix/identity/v2/account/logout`
async fn logout(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Response {
    answer(&services, || {
        let token = access_token_in(&headers, &uri);
        services.identity.authenticate(token.as_deref())?;
        if let Some(token) = token {
            services.identity.logout(&token)?;
        }
        Ok(json!({}))
    })
}

/// # `GET /_matrix/identity/v2/terms`
async fn terms(State(services): State<Arc<Services>>) -> Response {
    answer(&services, || Ok(services.identity.terms()))
}

#[derive(Deserialize)]
struct Accepted {
    user_accepts: Vec<String>,
}

/// # `POST /_matrix/identity/v2/terms`
async fn accept_terms(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    answer(&services, || {
        let token = access_token_in(&headers, &uri);
        let user = services.identity.authenticate(token.as_deref())?;
        let accepted: Accepted = json_body(&body)?;
        services
            .identity
            .accept_terms(&user, &accepted.user_accepts)?;
        Ok(json!({}))
    })
}

/// # `GET /_matrix/identity/v2/hash_details`
async fn hash_details(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    answer(&services, || {
        user(&services, &headers, &uri)?;
        Ok(json!({
            "lookup_pepper": services.identity.pepper(),
            "algorithms": ["none", "sha256"],
        }))
    })
}

#[derive(Deserialize)]
struct Lookup {
    algorithm: String,
    pepper: String,
    addresses: Vec<String>,
}

/// # `POST /_matrix/identity/v2/lookup`
async fn lookup(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    answer(&services, || {
        let user = user(&services, &headers, &uri)?;
        let lookup: Lookup = json_body(&body)?;
        let algorithm = match lookup.algorithm.as_str() {
            "sha256" => Algorithm::Sha256,
            "none" => Algorithm::None,
            _ => return Err(Error::invalid_param("Unsupported lookup algorithm")),
        };
        if lookup.pepper != services.identity.pepper() {
            return Err(invalid_pepper(&services));
        }
        let found = services
            .identity
            .lookup(&user, algorithm, &lookup.addresses)?;
        let mappings: serde_json::Map<String, Value> = found
            .into_iter()
            .map(|(address, user_id)| (address, Value::String(user_id.to_string())))
            .collect();
        Ok(json!({ "mappings": mappings }))
    })
}

/// 400 `M_INVALID_PEPPER`, with the pepper and algorithm to use.
fn invalid_pepper(services: &Services) -> Error {
    Error::custom(
        http::StatusCode::BAD_REQUEST,
        "M_INVALID_PEPPER",
        "Unknown or invalid pepper: it may have been rotated",
        json!({ "algorithm": "sha256", "lookup_pepper": services.identity.pepper() }),
    )
}

/// `send_attempt` as a number, or as the text older clients (matrix-js-sdk among them)
/// send to identity services.
fn number_or_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    match Either::deserialize(deserializer)? {
        Either::Number(number) => Ok(number),
        Either::Text(text) => text.trim().parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
struct RequestMsisdn {
    client_secret: String,
    country: String,
    phone_number: String,
    #[serde(deserialize_with = "number_or_text")]
    send_attempt: u64,
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct RequestEmail {
    client_secret: String,
    email: String,
    #[serde(deserialize_with = "number_or_text")]
    send_attempt: u64,
    next_link: Option<String>,
}

/// # `POST /_matrix/identity/v2/validate/msisdn/requestToken`
///
/// Verifies a phone number for discovery: a code is texted, as for the client API.
async fn request_msisdn(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    answer(&services, || {
        let user = user(&services, &headers, &uri)?;
        let asked: RequestMsisdn = json_body(&body)?;
        let address = Address::phone(&asked.country, &asked.phone_number)?;
        let sid = services.threepids.request_code(
            Purpose::Discovery,
            &address,
            &asked.client_secret,
            asked.send_attempt,
            asked.next_link,
            &format!("identity {user}"),
        )?;
        Ok(json!({
            "sid": sid,
            "msisdn": address.address,
            "intl_fmt": address.display(),
            "success": true,
        }))
    })
}

/// # `POST /_matrix/identity/v2/validate/email/requestToken`
async fn request_email(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    answer(&services, || {
        let user = user(&services, &headers, &uri)?;
        let asked: RequestEmail = json_body(&body)?;
        let address = Address::email(&asked.email)?;
        let sid = services.threepids.request_code(
            Purpose::Discovery,
            &address,
            &asked.client_secret,
            asked.send_attempt,
            asked.next_link,
            &format!("identity {user}"),
        )?;
        Ok(json!({ "sid": sid }))
    })
}

/// # `POST /_matrix/identity/v2/validate/{medium}/submitToken`
async fn submit(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    answer(&services, || {
        user(&services, &headers, &uri)?;
        let submitted: Submitted = json_body(&body)?;
        services.threepids.submit_code(
            &submitted.sid,
            &submitted.client_secret,
            &submitted.token,
        )?;
        Ok(json!({ "success": true }))
    })
}

#[derive(Deserialize)]
struct Validated {
    sid: String,
    client_secret: String,
}

/// # `GET /_matrix/identity/v2/3pid/getValidated3pid`
async fn validated(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    Query(query): Query<Validated>,
) -> Response {
    answer(&services, || {
        user(&services, &headers, &uri)?;
        let verified = services
            .threepids
            .verified(&query.sid, &query.client_secret)
            .map_err(|_| {
                Error::new(ErrorKind::Unknown, "The session is unknown or not verified")
                    .with_status(http::StatusCode::BAD_REQUEST)
            })?;
        Ok(json!({
            "medium": verified.address.medium_str(),
            "address": verified.address.address,
            "validated_at": verified.validated_ms,
        }))
    })
}
