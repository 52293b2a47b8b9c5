//! Synapse's admin API where its tools and scripts rely on it: shared-secret
//! registration (`register.rs`) and media administration (`media.rs`).

mod media;
mod register;

use std::sync::Arc;

use axum::Router;
use http::HeaderMap;
use ruma::OwnedUserId;

use crate::{Error, Result, service::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = register::routes(router);
    media::routes(router)
}

/// The administrator a request's access token belongs to; anyone else is 403.
fn require_admin(services: &Services, headers: &HeaderMap) -> Result<OwnedUserId> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Error::new(
                ruma::api::error::ErrorKind::MissingToken,
                "Missing access token",
            )
        })?;
    let sender = services.users.authenticate(token.trim())?;
    let admin = services
        .users
        .get(&sender.user_id)?
        .is_some_and(|user| user.admin);
    if !admin {
        return Err(Error::forbidden("You are not a server admin"));
    }
    Ok(sender.user_id)
}
