//! Third-party networks (bridged protocols). Protocols come from application services;
//! with none registered the server bridges nothing and says so.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::api::client::thirdparty::{get_protocol, get_protocols};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(protocols).ruma_route(protocol)
}

/// # `GET /_matrix/client/v3/thirdparty/protocols`
async fn protocols(
    _: Arc<Services>,
    _: Ruma<get_protocols::v3::Request>,
) -> Result<get_protocols::v3::Response> {
    Ok(get_protocols::v3::Response::new(BTreeMap::new()))
}

/// # `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`
async fn protocol(
    _: Arc<Services>,
    _: Ruma<get_protocol::v3::Request>,
) -> Result<get_protocol::v3::Response> {
    Err(Error::not_found("No bridge serves this protocol"))
}
