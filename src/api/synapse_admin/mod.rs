//! Synapse's admin API where its tools and scripts rely on it: shared-secret
//! registration (`register.rs`) and media administration (`media.rs`).

mod media;
mod register;

use std::sync::Arc;

use axum::Router;
use http::{HeaderMap, Uri};
use ruma::OwnedUserId;

use crate::{Error, Result, service::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = register::routes(router);
    media::routes(router)
}

/// The administrator a request's access token belongs to; anyone else is 403.
fn require_admin(services: &Services, headers: &HeaderMap, uri: &Uri) -> Result<OwnedUserId> {
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
