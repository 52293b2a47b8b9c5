//! Registering a handler for a ruma request type, and the [`Ruma`] extractor that hands
//! it the parsed request and the authenticated sender.
//!
//! Paths and methods come from the request type's metadata (every historic path of the
//! endpoint), and the authentication a request needs comes from its `Authentication`
//! scheme type: no path is written by hand.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, RawPathParams, State},
    response::IntoResponse,
    routing::{MethodFilter, on},
};
use http::{Request, StatusCode};
use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    api::{
        IncomingRequest, IncomingRequestExt, OutgoingResponseExt,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional,
            NoAccessToken, NoAuthentication,
        },
        error::{DeserializationError, ErrorKind, FromHttpRequestError},
        path_builder::PathBuilder,
    },
};

use crate::{Error, Result, service::Services};

/// What a request type requires of the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AuthRequirement {
    /// No credentials are read.
    None,
    /// An access token is read if present.
    Optional,
    /// An access token must be present and valid.
    Required,
}

/// Maps a ruma authentication scheme to what it requires.
pub trait Authentication {
    const REQUIREMENT: AuthRequirement;
}

impl Authentication for NoAuthentication {
    const REQUIREMENT: AuthRequirement = AuthRequirement::None;
}
impl Authentication for NoAccessToken {
    const REQUIREMENT: AuthRequirement = AuthRequirement::None;
}
impl Authentication for AccessTokenOptional {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Optional;
}
impl Authentication for AccessToken {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Required;
}
impl Authentication for AppserviceToken {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Required;
}
impl Authentication for AppserviceTokenOptional {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Optional;
}

/// The authenticated user and device behind a request.
#[derive(Clone, Debug)]
pub struct Sender {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// A parsed request with who sent it.
pub struct Ruma<T> {
    pub body: T,
    pub sender: Option<Sender>,
    pub client_ip: std::net::IpAddr,
    /// The raw JSON body, for handlers that read fields ruma's type does not keep.
    pub json: Option<serde_json::Value>,
}

impl<T> Ruma<T> {
    /// The authenticated user. Only routes whose scheme requires a token are handed a
    /// `Ruma` without a sender when none was given, so this fails only on optional routes.
    pub fn user_id(&self) -> Result<&UserId> {
        self.sender
            .as_ref()
            .map(|sender| sender.user_id.as_ref())
            .ok_or_else(|| Error::new(ErrorKind::MissingToken, "Missing access token"))
    }

    pub fn sender(&self) -> Result<&Sender> {
        self.sender
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::MissingToken, "Missing access token"))
    }
}

/// Adds ruma-typed routes to an axum router.
pub trait RumaRouter {
    fn ruma_route<Req, F, Fut>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static;
}

impl RumaRouter for Router<Arc<Services>> {
    fn ruma_route<Req, F, Fut>(mut self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static,
    {
        let method = MethodFilter::try_from(Req::METHOD).expect("ruma methods are standard");
        for path in Req::PATH_BUILDER.all_paths() {
            let handler = handler.clone();
            let endpoint = move |State(services): State<Arc<Services>>,
                                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                                 params: RawPathParams,
                                 request: Request<Body>| async move {
                let outcome = async {
                    let ruma = extract::<Req>(&services, peer, &params, request).await?;
                    let response = handler(services.clone(), ruma).await?;
                    response
                        .try_into_http_response::<Vec<u8>>()
                        .map_err(Error::internal)
                }
                .await;
                match outcome {
                    Ok(response) => response.map(Body::from),
                    Err(error) => error.into_response(),
                }
            };
            self = self.route(path, on(method, endpoint));
        }
        self
    }
}

async fn extract<Req>(
    services: &Services,
    peer: SocketAddr,
    params: &RawPathParams,
    request: Request<Body>,
) -> Result<Ruma<Req>>
where
    Req: IncomingRequest,
    Req::Authentication: Authentication,
{
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, services.config.max_request_size)
        .await
        .map_err(|_| Error::new(ErrorKind::TooLarge, "Request body too large"))?;

    let sender = match <Req::Authentication as Authentication>::REQUIREMENT {
        AuthRequirement::None => None,
        requirement => match access_token(&parts) {
            Some(token) => Some(services.users.authenticate(&token)?),
            None if requirement == AuthRequirement::Required => {
                return Err(Error::new(ErrorKind::MissingToken, "Missing access token"));
            }
            None => None,
        },
    };

    let json = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(value) => Some(value),
            Err(_) if expects_json(&parts) => {
                return Err(Error::new(
                    ErrorKind::NotJson,
                    "Request body is not valid JSON",
                ));
            }
            Err(_) => None,
        }
    };
    if matches!(json, Some(ref value) if !value.is_object()) && expects_json(&parts) {
        return Err(Error::new(
            ErrorKind::NotJson,
            "Request body must be a JSON object",
        ));
    }

    // An empty body is an empty object: many clients send none when every field is
    // optional (matrix-nio's join, for one), and Synapse accepts that.
    let bytes: &[u8] = if bytes.is_empty() && expects_json(&parts) {
        b"{}"
    } else {
        &bytes
    };
    let path_args: Vec<&str> = params.iter().map(|(_, value)| value).collect();
    let http_request = Request::from_parts(parts, bytes);
    // Parsing is ruma's; a body it cannot cope with must be the client's 400, never a
    // panic that takes the request down (ruma's login parsing indexes a missing `type`).
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Req::try_from_http_request(http_request, &path_args)
    }));
    let body = match parsed {
        Ok(result) => result.map_err(request_error)?,
        Err(_) => {
            return Err(Error::bad_json(
                "The request body does not fit this endpoint",
            ));
        }
    };
    Ok(Ruma {
        body,
        sender,
        client_ip: peer.ip(),
        json,
    })
}

/// Bodies of these methods are JSON unless the endpoint says otherwise (media uploads
/// carry their own content type and are not routed through here yet).
fn expects_json(parts: &http::request::Parts) -> bool {
    matches!(parts.method, http::Method::POST | http::Method::PUT)
}

fn access_token(parts: &http::request::Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value
            .strip_prefix("Bearer ")
            .map(|token| token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_pairs(query)
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value)
}

fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(|text| text.into_owned())
        };
        Some((decode(key)?, decode(value)?))
    })
}

fn request_error(error: FromHttpRequestError) -> Error {
    match error {
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        }
        FromHttpRequestError::Deserialization(error) => match error {
            DeserializationError::Json(error) => Error::bad_json(error.to_string()),
            DeserializationError::Query(error) => Error::invalid_param(error.to_string()),
            DeserializationError::Ident(error) => Error::invalid_param(error.to_string()),
            other => Error::bad_json(other.to_string()),
        },
        other => Error::bad_json(other.to_string()),
    }
}
