//! The server's published signing keys.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::discovery::{
    get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
};

use crate::{
    Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(server_keys)
        .ruma_route(query_keys)
        .ruma_route(query_keys_batch)
}

/// # `GET /_matrix/key/v2/query/{serverName}`
async fn query_keys(
    services: Arc<Services>,
    request: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<get_remote_server_keys::v2::Response> {
    let minimum = u64::from(request.body.minimum_valid_until_ts.get());
    let documents = services
        .server_keys
        .notarised_documents(&request.body.server_name, minimum)
        .await?;
    Ok(get_remote_server_keys::v2::Response::new(documents))
}

/// # `POST /_matrix/key/v2/query`
async fn query_keys_batch(
    services: Arc<Services>,
    request: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    let documents = services
        .server_keys
        .query_batch(&request.body.server_keys)
        .await?;
    Ok(get_remote_server_keys_batch::v2::Response::new(documents))
}

/// # `GET /_matrix/key/v2/server`
async fn server_keys(
    services: Arc<Services>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    Ok(get_server_keys::v2::Response::new(
        services.server_keys.own_document()?,
    ))
}
