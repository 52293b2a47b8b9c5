//! Sync filters.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::filter::{create_filter, get_filter};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(create).ruma_route(get)
}

/// # `POST /_matrix/client/v3/user/{userId}/filter`
async fn create(
    services: Arc<Services>,
    request: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    let user_id = request.user_id()?;
    if user_id != request.body.user_id {
        return Err(Error::forbidden("You can only create filters for yourself"));
    }
    let filter = request
        .json
        .clone()
        .unwrap_or_else(|| serde_json::to_value(&request.body.filter).unwrap_or_default());
    Ok(create_filter::v3::Response::new(
        services.filters.create(user_id, &filter)?,
    ))
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
async fn get(
    services: Arc<Services>,
    request: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response> {
    let user_id = request.user_id()?;
    if user_id != request.body.user_id {
        return Err(Error::forbidden("You can only read your own filters"));
    }
    let filter = services
        .filters
        .get(user_id, &request.body.filter_id)?
        .ok_or_else(|| Error::not_found("No such filter"))?;
    let filter = serde_json::from_value(filter).map_err(Error::internal)?;
    Ok(get_filter::v3::Response::new(filter))
}
