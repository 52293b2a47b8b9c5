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

/// The metrics listener's router.
pub fn build_metrics(services: Arc<Services>) -> Router {
    finish(api::metrics_routes(Router::new()), services)
}

/// The header a request's id travels in, both ways.
const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The id of a request: the one a proxy in front set (`X-Request-Id`, if short and
/// printable), or a new random one. Every log line of the request carries it, and the
/// answer gives it back.
fn request_id(request: &axum::extract::Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| crate::service::users::random_string(16), str::to_owned)
}

/// Times and counts every request by its route template, and gives it an id.
async fn observe(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let metrics = crate::metrics::metrics();
    let endpoint = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = match *request.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::OPTIONS => request.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let id = request_id(&request);
    // At the error level so it is on whatever the log filter: every line the request
    // writes, warnings and errors included, carries its id.
    let span = tracing::error_span!("request", id = %id);
    let _in_flight = crate::metrics::Tracked::new(&metrics.requests_in_flight);
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span).await;
    metrics.request(
        &endpoint,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    if let Ok(value) = http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
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
        ])
        .expose_headers([REQUEST_ID]);
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Error::internal("the request handler panicked").into_response()
        }))
        .layer(cors)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(observe))
        .with_state(services)
}
