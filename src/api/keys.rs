//! The server's published signing keys, and the notary for other servers' keys.
//!
//! The key id in the deprecated paths `/_matrix/key/v2/server/{keyId}` and
//! `/_matrix/key/v2/query/{serverName}/{keyId}` is ignored, as the spec says a server
//! should: older servers and tools still ask there, and get every key.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
    routing::get,
};
use ruma::{
    OwnedServerName,
    api::federation::discovery::{
        get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
    },
};
use serde_json::json;

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(server_keys)
        .ruma_route(query_keys)
        .ruma_route(query_keys_batch)
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys_by_id))
        .route(
            "/_matrix/key/v2/query/{server_name}/{key_id}",
            get(query_keys_by_id),
        )
}

/// # `GET /_matrix/key/v2/server/{keyId}` (deprecated)
async fn server_keys_by_id(State(services): State<Arc<Services>>) -> Response {
    match services.server_keys.own_document() {
        Ok(document) => Json(document).into_response(),
        Err(error) => error.into_response(),
    }
}

/// # `GET /_matrix/key/v2/query/{serverName}/{keyId}` (deprecated)
async fn query_keys_by_id(
    State(services): State<Arc<Services>>,
    Path((server_name, _key_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let answer = async {
        let server = OwnedServerName::try_from(server_name)
            .map_err(|_| Error::invalid_param("Invalid server name"))?;
        let minimum = query
            .get("minimum_valid_until_ts")
            .map(|ts| ts.parse::<u64>())
            .transpose()
            .map_err(|_| Error::invalid_param("Invalid minimum_valid_until_ts"))?
            .unwrap_or(0);
        let documents = services
            .server_keys
            .notarised_documents(&server, minimum)
            .await?;
        Ok::<_, Error>(json!({ "server_keys": documents }))
    };
    match answer.await {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    }
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
