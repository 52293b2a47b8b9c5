//! The HTTP API handlers, one module per spec area. Each handler's doc header names its
//! endpoint; the paths themselves come from ruma. [`ruma`] registers a handler for a ruma
//! request type and hands it the parsed, authenticated request.

pub mod appservice_admin;
pub mod client;
pub mod download;
pub mod federation;
pub mod guests;
pub mod identity;
pub mod keys;
pub mod operations;
pub mod ruma;
pub mod synapse_admin;

pub use self::ruma::{Ruma, RumaRouter};

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

/// Registers the endpoints of the client listener.
pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = client::routes(router);
    let router = keys::routes(router);
    let router = appservice_admin::routes(router);
    let router = identity::routes(router);
    let router = operations::probes(router);
    synapse_admin::routes(router)
}

/// Registers the endpoints of the metrics listener.
pub fn metrics_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    operations::routes(router)
}

/// Registers the endpoints of the federation listener: the server-server API and the
/// key server.
pub fn federation_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = federation::routes(router);
    keys::routes(router)
}
