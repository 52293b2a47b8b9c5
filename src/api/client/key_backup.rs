//! Server-side key backups (`/room_keys/...`).

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::api::client::backup::{
    add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
    delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session,
    delete_backup_version, get_backup_info, get_backup_keys, get_backup_keys_for_room,
    get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        key_backup::{BackupVersion, Scope, parse_version},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_json(create_version)
        .ruma_route_json(latest_version)
        .ruma_route_json(get_version)
        .ruma_route_json(update_version)
        .ruma_route_json(delete_version)
        .ruma_route_json(put_all)
        .ruma_route_json(put_room)
        .ruma_route_json(put_session)
        .ruma_route_json(get_all)
        .ruma_route_json(get_room)
        .ruma_route_json(get_session)
        .ruma_route_json(delete_all)
        .ruma_route_json(delete_room)
        .ruma_route_json(delete_session)
}

fn version_number(text: &str) -> Result<u64> {
    parse_version(text).ok_or_else(|| Error::not_found("Unknown backup version"))
}

/// The one backup algorithm the spec defines.
const MEGOLM_BACKUP_V1: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

/// The `algorithm` and `auth_data` of a version's body: the spec's algorithm, whose
/// `auth_data` names the backup's public key.
fn algorithm_and_auth_data(body: Option<&Value>) -> Result<(String, Value)> {
    let body = body.ok_or_else(|| Error::bad_json("A backup version needs a body"))?;
    let algorithm = body["algorithm"]
        .as_str()
        .ok_or_else(|| Error::bad_json("`algorithm` must be a string"))?;
    if algorithm != MEGOLM_BACKUP_V1 {
        return Err(Error::invalid_param(format!(
            "Unknown backup algorithm {algorithm:?}; this server knows {MEGOLM_BACKUP_V1}"
        )));
    }
    let auth_data = &body["auth_data"];
    if !auth_data["public_key"].is_string() {
        return Err(Error::bad_json(
            "`auth_data` must be an object with a `public_key`",
        ));
    }
    Ok((algorithm.to_owned(), auth_data.clone()))
}

fn info(number: u64, version: &BackupVersion) -> Value {
    json!({
        "algorithm": version.algorithm,
        "auth_data": version.auth_data,
        "count": version.count,
        "etag": version.etag.to_string(),
        "version": number.to_string(),
    })
}

/// Key data as the spec requires it.
fn check_key_data(data: &Value) -> Result<()> {
    let valid = data["first_message_index"].is_u64()
        && data["forwarded_count"].is_u64()
        && data["is_verified"].is_boolean()
        && data["session_data"].is_object();
    if valid {
        Ok(())
    } else {
        Err(Error::bad_json(
            "Key data needs first_message_index, forwarded_count, is_verified and session_data",
        ))
    }
}

/// `{session id: key data}` from a `sessions` object.
fn sessions_of(sessions: &Value) -> Result<BTreeMap<String, Value>> {
    let sessions = sessions
        .as_object()
        .ok_or_else(|| Error::bad_json("`sessions` must be an object"))?;
    sessions
        .iter()
        .map(|(id, data)| {
            check_key_data(data)?;
            Ok((id.clone(), data.clone()))
        })
        .collect()
}

fn counts((count, etag): (u64, u64)) -> Value {
    json!({ "count": count, "etag": etag.to_string() })
}

/// # `POST /_matrix/client/v3/room_keys/version`
async fn create_version(
    services: Arc<Services>,
    request: Ruma<create_backup_version::v3::Request>,
) -> Result<Value> {
    let (algorithm, auth_data) = algorithm_and_auth_data(request.json.as_ref())?;
    let number = services
        .key_backup
        .create(request.user_id()?, algorithm, auth_data)?;
    Ok(json!({ "version": number.to_string() }))
}

/// # `GET /_matrix/client/v3/room_keys/version`
async fn latest_version(
    services: Arc<Services>,
    request: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<Value> {
    let (number, version) = services
        .key_backup
        .current(request.user_id()?)?
        .ok_or_else(|| Error::not_found("No current backup version"))?;
    Ok(info(number, &version))
}

/// # `GET /_matrix/client/v3/room_keys/version/{version}`
async fn get_version(
    services: Arc<Services>,
    request: Ruma<get_backup_info::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    let version = services
        .key_backup
        .version(request.user_id()?, number)?
        .ok_or_else(|| Error::not_found("Unknown backup version"))?;
    Ok(info(number, &version))
}

/// # `PUT /_matrix/client/v3/room_keys/version/{version}`
async fn update_version(
    services: Arc<Services>,
    request: Ruma<update_backup_version::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    let (algorithm, auth_data) = algorithm_and_auth_data(request.json.as_ref())?;
    if let Some(version) = request.json.as_ref().and_then(|body| body.get("version"))
        && version.as_str() != Some(request.body.version.as_str())
    {
        return Err(Error::invalid_param(
            "The version in the body differs from the one in the path",
        ));
    }
    services
        .key_backup
        .update(request.user_id()?, number, &algorithm, auth_data)?;
    Ok(json!({}))
}

/// # `DELETE /_matrix/client/v3/room_keys/version/{version}`
async fn delete_version(
    services: Arc<Services>,
    request: Ruma<delete_backup_version::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    services.key_backup.delete(request.user_id()?, number)?;
    Ok(json!({}))
}

/// # `PUT /_matrix/client/v3/room_keys/keys`
async fn put_all(
    services: Arc<Services>,
    request: Ruma<add_backup_keys::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    let rooms = request
        .json
        .as_ref()
        .and_then(|body| body.get("rooms"))
        .and_then(Value::as_object)
        .ok_or_else(|| Error::bad_json("`rooms` must be an object"))?;
    let mut keys = BTreeMap::new();
    for (room, backup) in rooms {
        keys.insert(room.clone(), sessions_of(&backup["sessions"])?);
    }
    Ok(counts(services.key_backup.put(
        request.user_id()?,
        number,
        keys,
    )?))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
async fn put_room(
    services: Arc<Services>,
    request: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    let sessions = sessions_of(
        request
            .json
            .as_ref()
            .and_then(|body| body.get("sessions"))
            .unwrap_or(&Value::Null),
    )?;
    let keys = BTreeMap::from([(request.body.room_id.to_string(), sessions)]);
    Ok(counts(services.key_backup.put(
        request.user_id()?,
        number,
        keys,
    )?))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn put_session(
    services: Arc<Services>,
    request: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    let data = request.json.clone().unwrap_or(Value::Null);
    check_key_data(&data)?;
    let keys = BTreeMap::from([(
        request.body.room_id.to_string(),
        BTreeMap::from([(request.body.session_id.clone(), data)]),
    )]);
    Ok(counts(services.key_backup.put(
        request.user_id()?,
        number,
        keys,
    )?))
}

/// # `GET /_matrix/client/v3/room_keys/keys`
async fn get_all(
    services: Arc<Services>,
    request: Ruma<get_backup_keys::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    let keys = services
        .key_backup
        .get(request.user_id()?, number, Scope::All)?;
    let rooms: serde_json::Map<String, Value> = keys
        .into_iter()
        .map(|(room, sessions)| (room, json!({ "sessions": sessions })))
        .collect();
    Ok(json!({ "rooms": rooms }))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}`
async fn get_room(
    services: Arc<Services>,
    request: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    let room = request.body.room_id.as_str();
    let mut keys = services
        .key_backup
        .get(request.user_id()?, number, Scope::Room(room))?;
    Ok(json!({ "sessions": keys.remove(room).unwrap_or_default() }))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn get_session(
    services: Arc<Services>,
    request: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    let (room, session) = (
        request.body.room_id.as_str(),
        request.body.session_id.as_str(),
    );
    services
        .key_backup
        .get(request.user_id()?, number, Scope::Session(room, session))?
        .remove(room)
        .and_then(|mut sessions| sessions.remove(session))
        .ok_or_else(|| Error::not_found("No key for that session in the backup"))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys`
async fn delete_all(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    Ok(counts(services.key_backup.remove(
        request.user_id()?,
        number,
        Scope::All,
    )?))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
async fn delete_room(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    Ok(counts(services.key_backup.remove(
        request.user_id()?,
        number,
        Scope::Room(request.body.room_id.as_str()),
    )?))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn delete_session(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<Value> {
    let number = version_number(&request.body.version)?;
    Ok(counts(services.key_backup.remove(
        request.user_id()?,
        number,
        Scope::Session(
            request.body.room_id.as_str(),
            request.body.session_id.as_str(),
        ),
    )?))
}
