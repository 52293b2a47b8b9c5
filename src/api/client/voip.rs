//! TURN credentials for calls (`/voip/turnServer`): coturn's REST scheme when a secret
//! is shared with the TURN server (a username `expiry:user_id` and its HMAC-SHA1, in
//! base64, as password: the TURN server checks them with the same secret and no call to
//! this server), else fixed credentials from the configuration.

use std::{sync::Arc, time::Duration};

use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use ruma::api::client::voip::get_turn_server_info;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    config::Turn,
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route_json(turn_server)
}

/// # `GET /_matrix/client/v3/voip/turnServer`
///
/// The spec's answer has every field, so where there is nothing to hand out it is an
/// error: 404 `M_NOT_FOUND` with no TURN server configured, 403 `M_FORBIDDEN` for a guest
/// when guests get none (matrix-js-sdk then stops asking).
async fn turn_server(
    services: Arc<Services>,
    request: Ruma<get_turn_server_info::v3::Request>,
) -> Result<Value> {
    let sender = request.sender()?;
    let turn = &services.config.turn;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let found = (!turn.uris.is_empty())
        .then(|| credentials(turn, sender.user_id.as_str(), now))
        .flatten();
    let Some((username, password)) = found else {
        return Err(Error::not_found("This server offers no TURN server"));
    };
    if sender.guest && !turn.allow_guests {
        return Err(Error::forbidden("TURN is not offered to guests"));
    }
    Ok(json!({
        "username": username,
        "password": password,
        "uris": turn.uris,
        "ttl": turn.ttl_secs,
    }))
}

/// The username and password for `user` at `now` (since the Unix epoch): from the shared
/// secret, else the fixed ones; `None` when neither is configured.
fn credentials(turn: &Turn, user: &str, now: Duration) -> Option<(String, String)> {
    if let Some(secret) = &turn.shared_secret {
        let expiry = now.as_secs() + turn.ttl_secs;
        let username = format!("{expiry}:{user}");
        let mut mac =
            Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(username.as_bytes());
        let password =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        return Some((username, password));
    }
    Some((turn.username.clone()?, turn.password.clone()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secret_credentials_are_coturns_rest_scheme() {
        let turn = Turn {
            uris: vec!["turn:localhost:3478".into()],
            shared_secret: Some("north".into()),
            ttl_secs: 3600,
            ..Turn::default()
        };
        let (username, password) =
            credentials(&turn, "@alice:example.org", Duration::from_secs(1_000_000)).unwrap();
        assert_eq!(username, "1003600:@alice:example.org");
        // echo -n "1003600:@alice:example.org" | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(password, "0ZdWYoGqklzXN2RphTkR79tq9VM=");
    }

    #[test]
    fn fixed_credentials_need_both_parts() {
        let mut turn = Turn {
            username: Some("u".into()),
            ..Turn::default()
        };
        assert_eq!(credentials(&turn, "@a:b", Duration::ZERO), None);
        turn.password = Some("p".into());
        assert_eq!(
            credentials(&turn, "@a:b", Duration::ZERO),
            Some(("u".into(), "p".into()))
        );
    }
}
