//! Synapse's shared-secret registration (`/_synapse/admin/v1/register`), so existing
//! tooling (`register_new_matrix_user`, deployment scripts) works unchanged.
//!
//! `GET` hands out a single-use nonce; `POST` registers when `mac` is the hex
//! HMAC-SHA1, keyed with `registration_shared_secret`, of
//! `nonce \0 username \0 password \0 ("admin" | "notadmin")`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use hmac::{Hmac, Mac};
use rand::{Rng, distr::Alphanumeric};
use serde::Deserialize;
use serde_json::json;

use crate::config::Config;
use crate::{
    Error, Result,
    service::{Services, users},
};

const NONCE_LIFETIME: Duration = Duration::from_secs(60);

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_synapse/admin/v1/register", get(nonce).post(register))
}

fn enabled(config: &Config) -> Result<&str> {
    config.registration_shared_secret.as_deref().ok_or_else(|| {
        Error::bad_json("Shared secret registration is not enabled")
            .with_status(http::StatusCode::BAD_REQUEST)
    })
}

/// # `GET /_synapse/admin/v1/register`
async fn nonce(State(services): State<Arc<Services>>) -> Response {
    if let Err(error) = enabled(&services.config) {
        return error.into_response();
    }
    let nonce: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let mut nonces = services.admin_nonces.lock();
    nonces.retain(|_, created| created.elapsed() < NONCE_LIFETIME);
    nonces.insert(nonce.clone(), std::time::Instant::now());
    Json(json!({ "nonce": nonce })).into_response()
}

#[derive(Deserialize)]
struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    displayname: Option<String>,
    mac: String,
}

/// # `POST /_synapse/admin/v1/register`
async fn register(
    State(services): State<Arc<Services>>,
    body: Option<Json<serde_json::Value>>,
) -> Response {
    match register_inner(&services, body).await {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn register_inner(
    services: &Services,
    body: Option<Json<serde_json::Value>>,
) -> Result<serde_json::Value> {
    let secret = enabled(&services.config)?;
    let Json(body) =
        body.ok_or_else(|| Error::new(ruma::api::error::ErrorKind::NotJson, "Body is not JSON"))?;
    let body: RegisterBody =
        serde_json::from_value(body).map_err(|e| Error::bad_json(e.to_string()))?;
    let fresh = services
        .admin_nonces
        .lock()
        .remove(&body.nonce)
        .is_some_and(|created| created.elapsed() < NONCE_LIFETIME);
    if !fresh {
        return Err(Error::invalid_param("Unrecognised nonce"));
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
    mac.update(body.nonce.as_bytes());
    mac.update(b"\0");
    mac.update(body.username.as_bytes());
    mac.update(b"\0");
    mac.update(body.password.as_bytes());
    mac.update(b"\0");
    mac.update(if body.admin { b"admin" } else { b"notadmin" });
    let expected = hex_decode(&body.mac).ok_or_else(|| Error::forbidden("HMAC incorrect"))?;
    mac.verify_slice(&expected)
        .map_err(|_| Error::forbidden("HMAC incorrect"))?;

    let user_id =
        users::validate_localpart(&body.username.to_lowercase(), &services.config.server_name)?;
    if services.users.exists(&user_id)? {
        return Err(Error::new(
            ruma::api::error::ErrorKind::UserInUse,
            "User ID already taken.",
        ));
    }
    services
        .users
        .create(&user_id, Some(&body.password))
        .await?;
    if body.admin {
        services.users.set_admin(&user_id, true)?;
    }
    if let Some(name) = &body.displayname {
        services
            .users
            .set_profile_field(&user_id, "displayname", Some(&json!(name)))?;
    }
    services.push.rules.init(&user_id)?;
    let session = services
        .users
        .create_session(&user_id, None, None, false, None)?;
    Ok(json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": services.config.server_name,
    }))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
