//! The HTTP layer: assembles the routes the handlers register (`api::routes`) with CORS,
//! panics caught, and the spec's answers for unknown endpoints (404) and wrong methods
//! (405), both `M_UNRECOGNIZED`. It only assembles: the request extractor lives with the
//! handlers (`api::ruma`). `websocket.rs` carries requests and the sync stream over one
//! socket per device, through the same routes.

use std::sync::Arc;

use axum::{Router, response::IntoResponse};
use http::{Method, StatusCode, header};
use tower_http::cors::{Any, CorsLayer};

use crate::{Error, api, service::Services};

mod websocket;

/// The client listener's router: the client API, and the WebSocket transport in front
/// of it.
pub fn build(services: Arc<Services>) -> Router {
    let api = finish(api::routes(Router::new()), services.clone());
    websocket::wrap(api, services)
}

/// The federation listener's router.
pub fn build_federation(services: Arc<Services>) -> Router {
    finish(api::federation_routes(Router::new()), services)
}

fn finish(router: Router<Arc<Services>>, services: Arc<Services>) -> Router {
    let router = router
        .fallback(|| async { Error::unrecognized(StatusCode::NOT_FOUND).into_response() })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED).into_response()
        });
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::ORIGIN,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-requested-with"),
        ]);
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Error::internal("the request handler panicked").into_response()
        }))
        .layer(cors)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(services)
}
