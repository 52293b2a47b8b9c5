//! Synapse's admin API where its tools and scripts rely on it: shared-secret
//! registration (`register.rs`), media administration (`media.rs`) and abuse reports
//! (`reports.rs`).

mod media;
mod register;
mod reports;

use std::sync::Arc;

use axum::{
    Json, Router,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, Uri};
use ruma::OwnedUserId;
use serde_json::Value;

use crate::{Error, Result, service::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = register::routes(router);
    let router = media::routes(router);
    reports::routes(router)
}

/// The administrator a request's access token belongs to; anyone else is 403.
pub(crate) fn require_admin(
    services: &Services,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<OwnedUserId> {
    let token = crate::api::ruma::access_token_in(headers, uri).ok_or_else(|| {
        Error::new(
            ruma::api::error::ErrorKind::MissingToken,
            "Missing access token",
        )
    })?;
    let sender = services.users.authenticate(&token)?;
    if !services.users.is_admin(&sender.user_id)? {
        return Err(Error::forbidden("You are not a server admin"));
    }
    Ok(sender.user_id)
}

/// A rejected path or query is the spec's `400 M_INVALID_PARAM`, not axum's plain text.
pub(crate) fn param<T>(extracted: std::result::Result<T, impl std::fmt::Display>) -> Result<T> {
    extracted.map_err(|rejection| Error::invalid_param(rejection.to_string()))
}

pub(crate) fn answer(result: Result<Value>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}
