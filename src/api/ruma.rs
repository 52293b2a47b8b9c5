//! Registering a handler for a ruma request type, and the [`Ruma`] extractor that hands
//! it the parsed request and the authenticated sender.
//!
//! Paths and methods come from the request type's metadata (every historic path of the
//! endpoint), and the authentication a request needs comes from its `Authentication`
//! scheme type: no path is written by hand.
//!
//! Where a ruma type is stricter or looser than the spec, the route says so where it is
//! registered: [`RumaRouter::ruma_route_prepared`] adjusts the body before ruma parses
//! it, and [`RumaRouter::ruma_route_json`] answers with the handler's own JSON.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, RawPathParams, State},
    response::IntoResponse,
    routing::{MethodFilter, on},
};
use http::{Request, StatusCode, header};
use ruma::{
    OwnedServerName, UserId,
    api::{
        IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional,
            NoAccessToken, NoAuthentication,
        },
        error::{DeserializationError, ErrorKind, FromHttpRequestError},
        federation::authentication::ServerSignatures,
        path_builder::PathBuilder,
    },
};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    Error, Result,
    service::{Services, users::Sender},
};

/// What a request type requires of the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AuthRequirement {
    /// No credentials are read.
    None,
    /// An access token is read if present.
    Optional,
    /// An access token must be present and valid.
    Required,
    /// An access token is read if present; an application service's acts as the service
    /// itself, whoever `user_id` names (registration and login, where that user does
    /// not exist yet or is the one to log in).
    AppserviceOptional,
    /// An `X-Matrix` signature of another server (the server-server API).
    Server,
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
    const REQUIREMENT: AuthRequirement = AuthRequirement::AppserviceOptional;
}
impl Authentication for ServerSignatures {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Server;
}

/// A parsed request with who sent it.
pub struct Ruma<T> {
    pub body: T,
    pub sender: Option<Sender>,
    /// The server that signed the request (server-server API).
    pub origin: Option<OwnedServerName>,
    pub client_ip: std::net::IpAddr,
    /// The raw JSON body, for handlers that read fields ruma's type does not keep.
    pub json: Option<serde_json::Value>,
    /// The method and the path with its query, as requested.
    pub method: http::Method,
    pub uri: http::Uri,
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

    /// The requesting server. Routes whose scheme is `X-Matrix` are handed a `Ruma` only
    /// once the signature checked out, so this fails only on other routes.
    pub fn origin(&self) -> Result<&ruma::ServerName> {
        self.origin
            .as_deref()
            .ok_or_else(|| Error::new(ErrorKind::Unauthorized, "Missing server signature"))
    }

    pub fn sender(&self) -> Result<&Sender> {
        self.sender
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::MissingToken, "Missing access token"))
    }
}

/// Adjusts a request body (a JSON object; `{}` when none was sent) before ruma parses it,
/// given the percent-decoded path arguments. For endpoints whose ruma request type is
/// stricter than the spec: it fills in what the spec makes optional, or rejects with the
/// spec's error what ruma would reject with a misleading one.
pub type Prepare = fn(&mut Map<String, Value>, &[&str]) -> Result<()>;

/// Adds ruma-typed routes to an axum router.
///
/// A path whose last segment is `{state_key}` is also routed without it, with and without
/// the trailing slash: the spec allows an empty state key and makes the slash optional
/// then, and the router would not match an empty segment. ruma reads the missing
/// argument as the empty key.
pub trait RumaRouter {
    /// Routes `handler` on every path and the method of `Req`.
    fn ruma_route<Req, F, Fut>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static;

    /// As [`ruma_route`](Self::ruma_route), with the body adjusted by `prepare` first.
    fn ruma_route_prepared<Req, F, Fut>(self, handler: F, prepare: Prepare) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static;

    /// As [`ruma_route`](Self::ruma_route), for a handler that answers with its own JSON
    /// because ruma's response type does not serialise the way the spec says.
    fn ruma_route_json<Req, T, F, Fut>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        T: Serialize + 'static,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static;

    /// As [`ruma_route`](Self::ruma_route), for media: ruma parses the path, query and
    /// headers while the body is handed over unread ([`RawBody`]), and the handler
    /// answers with its own response (a streamed file).
    fn ruma_route_raw<Req, F, Fut>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        F: Fn(Arc<Services>, Ruma<Req>, RawBody) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<axum::response::Response>> + Send + 'static;
}

/// A request's headers and its body, not read yet.
pub struct RawBody {
    pub headers: http::HeaderMap,
    pub body: Body,
}

impl RumaRouter for Router<Arc<Services>> {
    fn ruma_route<Req, F, Fut>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static,
    {
        route(self, handler, None, ruma_response)
    }

    fn ruma_route_prepared<Req, F, Fut>(self, handler: F, prepare: Prepare) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static,
    {
        route(self, handler, Some(prepare), ruma_response)
    }

    fn ruma_route_json<Req, T, F, Fut>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        T: Serialize + 'static,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        route(self, handler, None, json_response)
    }

    fn ruma_route_raw<Req, F, Fut>(mut self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: Authentication,
        F: Fn(Arc<Services>, Ruma<Req>, RawBody) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<axum::response::Response>> + Send + 'static,
    {
        let method = MethodFilter::try_from(Req::METHOD).expect("ruma methods are standard");
        let endpoint = move |State(services): State<Arc<Services>>,
                             ConnectInfo(peer): ConnectInfo<SocketAddr>,
                             params: RawPathParams,
                             request: Request<Body>| async move {
            let (parts, body) = request.into_parts();
            let raw = RawBody {
                headers: parts.headers.clone(),
                body,
            };
            let outcome = async {
                let ruma =
                    parse::<Req>(&services, peer, &params, parts, Bytes::new(), BodyKind::Raw)
                        .await?;
                handler(services.clone(), ruma, raw).await
            }
            .await;
            outcome.unwrap_or_else(|error| error.into_response())
        };
        for path in Req::PATH_BUILDER.all_paths() {
            self = self.route(path, on(method, endpoint.clone()));
        }
        self
    }
}

fn ruma_response<R: OutgoingResponse>(response: R) -> Result<http::Response<Vec<u8>>> {
    response
        .try_into_http_response::<Vec<u8>>()
        .map_err(Error::internal)
}

fn json_response<T: Serialize>(response: T) -> Result<http::Response<Vec<u8>>> {
    let body = serde_json::to_vec(&response).map_err(Error::internal)?;
    http::Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(Error::internal)
}

fn route<Req, R, F, Fut>(
    mut router: Router<Arc<Services>>,
    handler: F,
    prepare: Option<Prepare>,
    respond: fn(R) -> Result<http::Response<Vec<u8>>>,
) -> Router<Arc<Services>>
where
    Req: IncomingRequest + Send + 'static,
    Req::Authentication: Authentication,
    R: 'static,
    F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let method = MethodFilter::try_from(Req::METHOD).expect("ruma methods are standard");
    let endpoint = move |State(services): State<Arc<Services>>,
                         ConnectInfo(peer): ConnectInfo<SocketAddr>,
                         params: RawPathParams,
                         request: Request<Body>| async move {
        let outcome = async {
            let ruma = extract::<Req>(&services, peer, &params, request, prepare).await?;
            respond(handler(services.clone(), ruma).await?)
        }
        .await;
        match outcome {
            Ok(response) => response.map(Body::from),
            Err(error) => error.into_response(),
        }
    };
    for path in Req::PATH_BUILDER.all_paths() {
        router = router.route(path, on(method, endpoint.clone()));
        if let Some(without_key) = path.strip_suffix("/{state_key}") {
            router = router
                .route(without_key, on(method, endpoint.clone()))
                .route(&format!("{without_key}/"), on(method, endpoint.clone()));
        }
    }
    router
}

async fn extract<Req>(
    services: &Services,
    peer: SocketAddr,
    params: &RawPathParams,
    request: Request<Body>,
    prepare: Option<Prepare>,
) -> Result<Ruma<Req>>
where
    Req: IncomingRequest,
    Req::Authentication: Authentication,
{
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, services.config.max_request_size)
        .await
        .map_err(|_| Error::new(ErrorKind::TooLarge, "Request body too large"))?;
    // A POST body of `null` is no body: some client libraries send it when there is
    // nothing to send (a logout, a join). A PUT body is content, and must be an object.
    let bytes = if parts.method == http::Method::POST && bytes.trim_ascii() == b"null" {
        Bytes::new()
    } else {
        bytes
    };
    parse(
        services,
        peer,
        params,
        parts,
        bytes,
        BodyKind::Json(prepare),
    )
    .await
}

/// What a route's body is: JSON, adjusted by a [`Prepare`] or not, or (a raw route)
/// not JSON and not read here.
#[derive(Clone, Copy)]
enum BodyKind {
    Json(Option<Prepare>),
    Raw,
}

/// Authenticates and parses a request whose body has been read.
async fn parse<Req>(
    services: &Services,
    peer: SocketAddr,
    params: &RawPathParams,
    parts: http::request::Parts,
    bytes: Bytes,
    kind: BodyKind,
) -> Result<Ruma<Req>>
where
    Req: IncomingRequest,
    Req::Authentication: Authentication,
{
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let (raw, prepare) = match kind {
        BodyKind::Json(prepare) => (false, prepare),
        BodyKind::Raw => (true, None),
    };

    let requirement = <Req::Authentication as Authentication>::REQUIREMENT;
    let (origin, sender) = authenticate(services, requirement, &parts, &bytes).await?;
    if sender.as_ref().is_some_and(|sender| sender.guest)
        && !super::guests::may(&parts.method, parts.uri.path())
    {
        return Err(Error::new(
            ErrorKind::GuestAccessForbidden,
            "Guest accounts may not do this",
        ));
    }
    let json = if raw {
        None
    } else {
        json_body(&parts, &bytes)?
    };

    let path_args: Vec<&str> = params.iter().map(|(_, value)| value).collect();
    let prepared;
    // An empty body is an empty object: many clients send none when every field is
    // optional (matrix-nio's join, for one), and Synapse accepts that.
    let bytes: &[u8] = match prepare {
        Some(prepare) if expects_json(&parts) => {
            let mut object = match &json {
                Some(Value::Object(object)) => object.clone(),
                _ => Map::new(),
            };
            prepare(&mut object, &path_args)?;
            prepared = serde_json::to_vec(&object).map_err(Error::internal)?;
            &prepared
        }
        _ if bytes.is_empty() && expects_json(&parts) && !raw => b"{}",
        _ => &bytes,
    };
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
        origin,
        client_ip: peer.ip(),
        json,
        method,
        uri,
    })
}

/// Who sent a request, as its endpoint's authentication scheme asks: the origin server
/// of a federation request (its `X-Matrix` signature checked), or the user and device
/// of an access token.
async fn authenticate(
    services: &Services,
    requirement: AuthRequirement,
    parts: &http::request::Parts,
    bytes: &[u8],
) -> Result<(Option<OwnedServerName>, Option<Sender>)> {
    if requirement == AuthRequirement::Server {
        let request = Request::from_parts(parts.clone(), bytes);
        let origin = services.server_keys.verify_request(&request).await?;
        services.federation.sender.heard_from(&origin);
        return Ok((Some(origin), None));
    }
    let sender = match requirement {
        AuthRequirement::None => None,
        requirement => match access_token(parts) {
            Some(token) if requirement == AuthRequirement::AppserviceOptional => {
                Some(match services.appservices.by_as_token(&token) {
                    Some(appservice) => appservice_sender(services, &appservice, None)?,
                    None => services.users.authenticate(&token)?,
                })
            }
            Some(token) => Some(token_sender(services, &token, &parts.uri)?),
            None if requirement == AuthRequirement::Required => {
                return Err(Error::new(ErrorKind::MissingToken, "Missing access token"));
            }
            None => None,
        },
    };
    Ok((None, sender))
}

/// Who an access token stands for: a user's device, or an application service acting
/// as one of its users.
pub(crate) fn token_sender(services: &Services, token: &str, uri: &http::Uri) -> Result<Sender> {
    match services.appservices.by_as_token(token) {
        Some(appservice) => appservice_sender(services, &appservice, Some(uri)),
        None => services.users.authenticate(token),
    }
}

/// The user an application service acts as: its own user, or the one named by the
/// `user_id` query parameter, which must be a registered local user of its namespaces;
/// on the device named by `device_id` (or MSC3202's `org.matrix.msc3202.device_id`),
/// which must be one of that user's. Without `uri`, the service acts as its own user.
fn appservice_sender(
    services: &Services,
    appservice: &palisade_appservice::Appservice,
    uri: Option<&http::Uri>,
) -> Result<Sender> {
    let registration = &appservice.registration;
    let (mut user, mut device) = (None, None);
    let query = uri.and_then(http::Uri::query).unwrap_or_default();
    for (key, value) in form_pairs(query) {
        match key.as_str() {
            "user_id" => user = Some(value),
            "device_id" => device = Some(value),
            "org.matrix.msc3202.device_id" if device.is_none() => device = Some(value),
            _ => {}
        }
    }
    let own = UserId::parse_with_server_name(
        registration.sender_localpart.as_str(),
        &services.config.server_name,
    )
    .map_err(Error::internal)?;
    let user_id = match user {
        None => own.clone(),
        Some(user) => {
            let user_id = UserId::parse(user.as_str())
                .map_err(|_| Error::invalid_param("user_id is not a valid user id"))?;
            let acts_for = user_id.server_name() == services.config.server_name
                && appservice.is_user_in_namespace(&user_id)
                && services.users.is_active(&user_id)?;
            if !acts_for {
                return Err(Error::forbidden(
                    "The application service may not act as this user or has not registered it",
                ));
            }
            user_id
        }
    };
    let device_id = match device {
        None => None,
        Some(device) => {
            let device = ruma::OwnedDeviceId::from(device);
            if services.users.device(&user_id, &device)?.is_none() {
                return Err(Error::new(
                    ErrorKind::UnknownDevice,
                    "The application service's user has no such device",
                ));
            }
            Some(device)
        }
    };
    let rate_limited = user_id != own && registration.rate_limited == Some(true);
    Ok(Sender {
        user_id,
        device_id,
        guest: false,
        appservice: Some(registration.id.as_str().into()),
        rate_limited,
    })
}

/// The request body as JSON: none when empty; a JSON object where the method carries
/// JSON (`M_NOT_JSON` otherwise).
fn json_body(parts: &http::request::Parts, bytes: &[u8]) -> Result<Option<Value>> {
    let json = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => Some(value),
            Err(_) if expects_json(parts) => {
                return Err(Error::new(
                    ErrorKind::NotJson,
                    "Request body is not valid JSON",
                ));
            }
            Err(_) => None,
        }
    };
    if matches!(json, Some(ref value) if !value.is_object()) && expects_json(parts) {
        return Err(Error::new(
            ErrorKind::NotJson,
            "Request body must be a JSON object",
        ));
    }
    Ok(json)
}

/// Bodies of these methods are JSON unless the endpoint says otherwise (media uploads
/// carry their own content type and come through `ruma_route_raw`).
fn expects_json(parts: &http::request::Parts) -> bool {
    matches!(parts.method, http::Method::POST | http::Method::PUT)
}

fn access_token(parts: &http::request::Parts) -> Option<String> {
    access_token_in(&parts.headers, &parts.uri)
}

/// The access token of a request: the `Authorization: Bearer` header, else the
/// deprecated `access_token` query parameter.
pub(crate) fn access_token_in(headers: &http::HeaderMap, uri: &http::Uri) -> Option<String> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value
            .strip_prefix("Bearer ")
            .map(|token| token.trim().to_owned());
    }
    let query = uri.query()?;
    form_pairs(query)
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value)
}

pub(crate) fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
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
