//! What application services ask of the client-server API beyond acting as their users
//! (pinging themselves through the server, MSC2659), and the lookups that ask them for
//! the users and aliases of their namespaces that do not exist yet.

use std::sync::Arc;

use axum::Router;
use palisade_appservice::client::CallError;
use ruma::{
    RoomAliasId, UserId,
    api::{
        client::appservice::request_ping,
        error::{BadStatusErrorData, ErrorKind},
    },
};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{Services, rooms::alias::AliasRecord},
};

/// The room a local alias names; one of an application service's namespace that names
/// none yet is asked of the service, which may make the room.
pub(crate) async fn local_alias(
    services: &Services,
    alias: &RoomAliasId,
) -> Result<Option<AliasRecord>> {
    if let Some(record) = services.rooms.resolve_alias(alias)? {
        return Ok(Some(record));
    }
    if services.appservices.query_alias(alias).await {
        return services.rooms.resolve_alias(alias);
    }
    Ok(None)
}

/// Whether a local user exists; one of an application service's namespace that does not
/// yet is asked of the service, which may register it.
pub(crate) async fn local_user_exists(services: &Services, user_id: &UserId) -> Result<bool> {
    if services.users.exists(user_id)? {
        return Ok(true);
    }
    Ok(services.appservices.query_user(user_id).await && services.users.exists(user_id)?)
}

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(ping)
}

/// # `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
///
/// The server pings the service at its URL and says how long the answer took.
async fn ping(
    services: Arc<Services>,
    request: Ruma<request_ping::v1::Request>,
) -> Result<request_ping::v1::Response> {
    let body = &request.body;
    let own = request
        .sender()?
        .appservice
        .as_deref()
        .is_some_and(|id| id == body.appservice_id);
    let service = services
        .appservices
        .by_id(&body.appservice_id)
        .filter(|_| own)
        .ok_or_else(|| {
            Error::forbidden("The access token is not this application service's as_token")
        })?;
    let transaction_id = body.transaction_id.as_ref().map(|id| id.as_str());
    let duration = services
        .appservices
        .ping(&service, transaction_id)
        .await
        .map_err(|error| match error {
            CallError::NoUrl => Error::new(
                ErrorKind::UrlNotSet,
                "The application service has no URL configured",
            ),
            CallError::Timeout => Error::new(
                ErrorKind::ConnectionTimeout,
                "The application service did not answer in time",
            )
            .with_status(http::StatusCode::GATEWAY_TIMEOUT),
            CallError::Unreachable(_) => Error::new(
                ErrorKind::ConnectionFailed,
                "The application service could not be reached",
            )
            .with_status(http::StatusCode::BAD_GATEWAY),
            CallError::Status { status, body } => {
                let mut data = BadStatusErrorData::new();
                data.status = http::StatusCode::from_u16(status).ok();
                data.body = Some(body);
                Error::new(
                    ErrorKind::BadStatus(data),
                    format!("The application service answered {status}"),
                )
                .with_status(http::StatusCode::BAD_GATEWAY)
            }
        })?;
    Ok(request_ping::v1::Response::new(duration))
}
