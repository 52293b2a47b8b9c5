//! What operators and load balancers ask: `/health` (the process runs), `/ready` (it can
//! serve: the database answers) and `/metrics` (Prometheus).

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{StatusCode, header};

use crate::service::Services;

/// `/health` and `/ready`, for any listener.
pub fn probes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// The metrics listener's routes: the probes and `/metrics`.
pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    probes(router).route("/metrics", get(metrics))
}

/// # `GET /health`
async fn health() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": "ok" })),
    )
        .into_response()
}

/// # `GET /ready`
async fn ready(State(services): State<Arc<Services>>) -> Response {
    if services.health.ready() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ready" })),
        )
            .into_response()
    } else {
        let body = serde_json::json!({ "status": "the database does not answer" });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// # `GET /metrics`
async fn metrics() -> Response {
    let text = crate::metrics::metrics().render();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
