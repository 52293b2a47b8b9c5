//! End-to-end encryption keys: uploading, querying and claiming them, cross-signing,
//! and the users whose devices changed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::Router;
use ruma::{
    OwnedDeviceId, OwnedUserId, UInt, UserId,
    api::client::keys::{
        claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
    },
};
use serde_json::{Map, Value, json};

use super::uia;
use crate::service::e2ee::E2ee;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        e2ee::{MASTER, SELF_SIGNING, USER_SIGNING, device_lists, signatures},
        federation::device_lists::KeyWrite,
        sync::SyncToken,
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(upload)
        .ruma_route_json(query)
        .ruma_route_json(claim)
        .ruma_route(changes)
        .ruma_route(upload_cross_signing)
        .ruma_route_json(upload_signatures)
}

/// How long `/keys/query` and `/keys/claim` wait for other servers by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn json_of<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    raw.deserialize_as_unchecked::<Value>()
        .map_err(|error| Error::bad_json(format!("Invalid key object: {error}")))
}

/// # `POST /_matrix/client/v3/keys/upload`
async fn upload(
    services: Arc<Services>,
    request: Ruma<upload_keys::v3::Request>,
) -> Result<upload_keys::v3::Response> {
    let sender = request.sender()?;
    let (user, device) = (&sender.user_id, sender.device()?);
    let body = &request.body;
    let mut new_device_keys = None;
    if let Some(raw) = &body.device_keys {
        let keys = json_of(raw)?;
        check_device_keys(&keys, user, device.as_str())?;
        let known = services.e2ee.device_keys(user, device)?;
        let same = known.as_ref().is_some_and(|known| {
            signatures::unsigned_part(known) == signatures::unsigned_part(&keys)
        });
        if !same {
            new_device_keys = Some(keys);
        }
    }
    let one_time_keys = body
        .one_time_keys
        .iter()
        .map(|(id, raw)| Ok((id.to_string(), json_of(raw)?)))
        .collect::<Result<Vec<_>>>()?;
    let fallback_keys = body
        .fallback_keys
        .iter()
        .map(|(id, raw)| Ok((id.to_string(), json_of(raw)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut writes = Vec::new();
    if let Some(keys) = &new_device_keys {
        writes.push(KeyWrite::DeviceKeys(device, keys));
    }
    if !one_time_keys.is_empty() {
        writes.push(KeyWrite::OneTimeKeys(device, &one_time_keys));
    }
    if !fallback_keys.is_empty() {
        writes.push(KeyWrite::FallbackKeys(device, &fallback_keys));
    }
    services.federation.device_lists.write_keys(user, &writes)?;
    let counts = services
        .e2ee
        .one_time_key_counts(user, device)?
        .into_iter()
        .map(|(algorithm, count)| {
            (
                algorithm.as_str().into(),
                UInt::try_from(count).unwrap_or(UInt::MAX),
            )
        })
        .collect();
    Ok(upload_keys::v3::Response::new(counts))
}

/// Device keys must name the uploading user and device and be signed by the device.
fn check_device_keys(keys: &Value, user: &UserId, device: &str) -> Result<()> {
    if keys.get("user_id").and_then(Value::as_str) != Some(user.as_str())
        || keys.get("device_id").and_then(Value::as_str) != Some(device)
    {
        return Err(Error::invalid_param(
            "Device keys must name the user and device uploading them",
        ));
    }
    let Some((key_id, key)) = signatures::device_ed25519_key(keys, device) else {
        return Err(Error::invalid_param("Device keys need an ed25519 key"));
    };
    if !signatures::is_signed_by(keys, user.as_str(), &key_id, &key) {
        return Err(Error::invalid_param(
            "Device keys must be signed by the device's ed25519 key",
        ));
    }
    Ok(())
}

/// # `POST /_matrix/client/v3/keys/query`
async fn query(services: Arc<Services>, request: Ruma<get_keys::v3::Request>) -> Result<Value> {
    let requester = request.user_id()?.to_owned();
    let mut device_keys = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    let mut user_signing_keys = Map::new();
    let mut remote = BTreeMap::new();
    for (user, devices) in &request.body.device_keys {
        if user.server_name() != services.config.server_name {
            remote.insert(user.clone(), devices.clone());
            continue;
        }
        let keys = services
            .e2ee
            .local_keys(&services.users, user, devices, Some(&requester))?;
        device_keys.insert(user.to_string(), json!(keys.devices));
        if let Some(key) = keys.master_key {
            master_keys.insert(user.to_string(), key);
        }
        if let Some(key) = keys.self_signing_key {
            self_signing_keys.insert(user.to_string(), key);
        }
        if let Some(key) = keys.user_signing_key {
            user_signing_keys.insert(user.to_string(), key);
        }
    }
    let mut failures = Map::new();
    if !remote.is_empty() {
        let timeout = request.body.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let answer = services
            .federation
            .user_keys
            .query(&requester, remote, timeout)
            .await;
        for (user, devices) in answer.device_keys {
            device_keys.insert(user.to_string(), json!(devices));
        }
        for (user, key) in answer.master_keys {
            master_keys.insert(user.to_string(), key);
        }
        for (user, key) in answer.self_signing_keys {
            self_signing_keys.insert(user.to_string(), key);
        }
        failures.extend(answer.failures);
    }
    Ok(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": user_signing_keys,
        "failures": failures,
    }))
}

/// # `POST /_matrix/client/v3/keys/claim`
async fn claim(services: Arc<Services>, request: Ruma<claim_keys::v3::Request>) -> Result<Value> {
    let mut one_time_keys: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>> =
        BTreeMap::new();
    let mut remote = BTreeMap::new();
    for (user, devices) in &request.body.one_time_keys {
        if user.server_name() != services.config.server_name {
            remote.insert(user.clone(), devices.clone());
            continue;
        }
        let claimed = services.e2ee.claim_local(user, devices)?;
        if !claimed.is_empty() {
            one_time_keys.insert(user.to_string(), claimed);
        }
    }
    let mut failures = Map::new();
    if !remote.is_empty() {
        let timeout = request.body.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let answer = services.federation.user_keys.claim(remote, timeout).await;
        for (user, devices) in answer.one_time_keys {
            let entry = one_time_keys.entry(user.to_string()).or_default();
            for (device, keys) in devices {
                entry.insert(device.to_string(), keys);
            }
        }
        failures.extend(answer.failures);
    }
    Ok(json!({ "one_time_keys": one_time_keys, "failures": failures }))
}

/// # `GET /_matrix/client/v3/keys/changes`
async fn changes(
    services: Arc<Services>,
    request: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response> {
    let parse = |token: &str| {
        token
            .parse::<SyncToken>()
            .map_err(|()| Error::invalid_param(format!("Invalid sync token {token:?}")))
    };
    let from = parse(&request.body.from)?;
    let to = parse(&request.body.to)?;
    let to = to.position.min(services.stream.frontier());
    if to <= from.position {
        return Ok(get_key_changes::v3::Response::new(Vec::new(), Vec::new()));
    }
    let delta = device_lists::delta(
        &services.e2ee,
        &services.rooms,
        request.user_id()?,
        from.position,
        to,
    )?;
    Ok(get_key_changes::v3::Response::new(
        delta.changed,
        delta.left,
    ))
}

/// A cross-signing key as uploaded: for this user, with the right usage and one
/// ed25519 key.
fn check_cross_signing_key(key: &Value, user: &UserId, usage: &str) -> Result<()> {
    let usages = key.get("usage").and_then(Value::as_array);
    if key.get("user_id").and_then(Value::as_str) != Some(user.as_str())
        || !usages.is_some_and(|usages| usages.iter().any(|u| u.as_str() == Some(usage)))
    {
        return Err(Error::invalid_param(format!(
            "The {usage} key must name the user and the usage {usage:?}"
        )));
    }
    if signatures::ed25519_key(key).is_none() {
        return Err(Error::invalid_param(format!(
            "The {usage} key must hold exactly one ed25519 key"
        )));
    }
    Ok(())
}

/// # `POST /_matrix/client/v3/keys/device_signing/upload`
///
/// Needs the password unless the user has no master key yet or uploads the keys stored
/// already (a retry). Self-signing and user-signing keys must be signed by the master
/// key uploaded with them, else by the stored one.
async fn upload_cross_signing(
    services: Arc<Services>,
    request: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let user = request.user_id()?.to_owned();
    let body = &request.body;
    let mut uploaded: Vec<(&str, Value)> = Vec::new();
    for (usage, raw) in [
        (MASTER, &body.master_key),
        (SELF_SIGNING, &body.self_signing_key),
        (USER_SIGNING, &body.user_signing_key),
    ] {
        if let Some(raw) = raw {
            let key = json_of(raw)?;
            check_cross_signing_key(&key, &user, usage)?;
            uploaded.push((usage, key));
        }
    }
    let mut changed = Vec::new();
    for (usage, key) in uploaded {
        let stored = services.e2ee.cross_signing_key(&user, usage)?;
        let same = stored.as_ref().is_some_and(|stored| {
            signatures::unsigned_part(stored) == signatures::unsigned_part(&key)
        });
        if !same {
            changed.push((usage, key));
        }
    }
    if changed.is_empty() {
        return Ok(upload_signing_keys::v3::Response::new());
    }
    if services.e2ee.cross_signing_key(&user, MASTER)?.is_some() {
        uia::reauthenticate(
            &services,
            &user,
            body.auth.as_ref(),
            &uia::operation(&request),
        )
        .await?;
    }
    let master = match changed.iter().find(|(usage, _)| *usage == MASTER) {
        Some((_, key)) => Some(key.clone()),
        None => services.e2ee.cross_signing_key(&user, MASTER)?,
    };
    let master_key = master.as_ref().and_then(signatures::ed25519_key);
    for (usage, key) in &changed {
        if *usage == MASTER {
            continue;
        }
        let Some((key_id, public)) = &master_key else {
            return Err(Error::invalid_param(
                "Upload a master key before the other cross-signing keys",
            ));
        };
        if !signatures::is_signed_by(key, user.as_str(), key_id, public) {
            return Err(Error::invalid_param(format!(
                "The {usage} key must be signed by the master key"
            )));
        }
    }
    let writes: Vec<KeyWrite<'_>> = changed
        .iter()
        .map(|(usage, key)| KeyWrite::CrossSigningKey(usage, key))
        .collect();
    services
        .federation
        .device_lists
        .write_keys(&user, &writes)?;
    Ok(upload_signing_keys::v3::Response::new())
}

/// The public keys a user signs with, by key id: their devices' ed25519 keys and their
/// cross-signing keys.
fn signing_keys_of(e2ee: &E2ee, user: &UserId) -> Result<BTreeMap<String, String>> {
    let mut keys = BTreeMap::new();
    for (device, device_keys) in e2ee.all_device_keys(user)? {
        if let Some((id, key)) = signatures::device_ed25519_key(&device_keys, device.as_str()) {
            keys.insert(id, key);
        }
    }
    for usage in [MASTER, SELF_SIGNING, USER_SIGNING] {
        if let Some(key) = e2ee.cross_signing_key(user, usage)?
            && let Some((id, public)) = signatures::ed25519_key(&key)
        {
            keys.insert(id, public);
        }
    }
    Ok(keys)
}

/// Why one signed object of `/keys/signatures/upload` was refused.
fn refusal(errcode: &str, error: &str) -> Value {
    json!({ "errcode": errcode, "error": error })
}

/// # `POST /_matrix/client/v3/keys/signatures/upload`
///
/// The signer's signatures on their own devices and master key are merged into those
/// keys (everyone sees them); on another user's master key they are kept for the
/// signer alone. Each signature must check against one of the signer's keys.
async fn upload_signatures(
    services: Arc<Services>,
    request: Ruma<upload_signatures::v3::Request>,
) -> Result<Value> {
    let signer = request.user_id()?.to_owned();
    let body = request.json.clone().unwrap_or_else(|| json!({}));
    let own_keys = signing_keys_of(&services.e2ee, &signer)?;
    let mut failures: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (target, objects) in body.as_object().into_iter().flatten() {
        let Ok(target) = OwnedUserId::try_from(target.as_str()) else {
            continue;
        };
        for (key_id, object) in objects.as_object().into_iter().flatten() {
            if let Err(failure) =
                sign_one(&services, &signer, &own_keys, &target, key_id, object).await
            {
                failures
                    .entry(target.to_string())
                    .or_default()
                    .insert(key_id.clone(), failure);
            }
        }
    }
    Ok(json!({ "failures": failures }))
}

/// Applies the signer's valid signatures on one object; the refusal otherwise.
async fn sign_one(
    services: &Services,
    signer: &UserId,
    own_keys: &BTreeMap<String, String>,
    target: &UserId,
    key_id: &str,
    object: &Value,
) -> std::result::Result<(), Value> {
    let new_signatures: Vec<(String, String)> = signatures::signatures_of(object, signer.as_str())
        .into_iter()
        .filter(|(id, _)| {
            own_keys
                .get(id)
                .is_some_and(|public| signatures::is_signed_by(object, signer.as_str(), id, public))
        })
        .collect();
    if new_signatures.is_empty() {
        return Err(refusal(
            "M_INVALID_SIGNATURE",
            "No valid signature by one of your keys",
        ));
    }
    if target == signer {
        sign_own(services, signer, key_id, object, &new_signatures)
    } else {
        sign_other(services, (signer, target), key_id, object, &new_signatures).await
    }
}

/// The signer's signatures on one of their own device keys or their master key.
fn sign_own(
    services: &Services,
    signer: &UserId,
    key_id: &str,
    object: &Value,
    new_signatures: &[(String, String)],
) -> std::result::Result<(), Value> {
    let internal = |error: Error| refusal("M_UNKNOWN", &error.to_string());
    let device = OwnedDeviceId::from(key_id);
    if let Some(mut stored) = services
        .e2ee
        .device_keys(signer, &device)
        .map_err(internal)?
    {
        if signatures::unsigned_part(&stored) != signatures::unsigned_part(object) {
            return Err(refusal(
                "M_INVALID_PARAM",
                "The device keys differ from the stored ones",
            ));
        }
        for (id, signature) in new_signatures {
            signatures::add_signature(&mut stored, signer.as_str(), id, signature);
        }
        return services
            .federation
            .device_lists
            .write_keys(signer, &[KeyWrite::DeviceKeys(&device, &stored)])
            .map_err(internal);
    }
    let Some(mut master) = services
        .e2ee
        .cross_signing_key(signer, MASTER)
        .map_err(internal)?
    else {
        return Err(refusal("M_NOT_FOUND", "No such device or key"));
    };
    if signatures::ed25519_key(&master).map(|(id, _)| id) != Some(format!("ed25519:{key_id}"))
        || signatures::unsigned_part(&master) != signatures::unsigned_part(object)
    {
        return Err(refusal("M_NOT_FOUND", "No such device or key"));
    }
    for (id, signature) in new_signatures {
        signatures::add_signature(&mut master, signer.as_str(), id, signature);
    }
    services
        .federation
        .device_lists
        .write_keys(signer, &[KeyWrite::CrossSigningKey(MASTER, &master)])
        .map_err(internal)
}

/// The signer's user-signing signature on another user's master key.
async fn sign_other(
    services: &Services,
    (signer, target): (&UserId, &UserId),
    key_id: &str,
    object: &Value,
    new_signatures: &[(String, String)],
) -> std::result::Result<(), Value> {
    let internal = |error: Error| refusal("M_UNKNOWN", &error.to_string());
    // Another user's master key, signed with the signer's user-signing key.
    let user_signing = services
        .e2ee
        .cross_signing_key(signer, USER_SIGNING)
        .map_err(internal)?
        .and_then(|key| signatures::ed25519_key(&key));
    let Some((user_signing_id, _)) = user_signing else {
        return Err(refusal(
            "M_INVALID_SIGNATURE",
            "You have no user-signing key",
        ));
    };
    let Some((_, user_signature)) = new_signatures.iter().find(|(id, _)| *id == user_signing_id)
    else {
        return Err(refusal(
            "M_INVALID_SIGNATURE",
            "Other users' keys are signed with your user-signing key",
        ));
    };
    let target_master = if target.server_name() == services.config.server_name {
        services
            .e2ee
            .cross_signing_key(target, MASTER)
            .map_err(internal)?
    } else {
        let wanted = BTreeMap::from([(target.to_owned(), Vec::new())]);
        services
            .federation
            .user_keys
            .query(signer, wanted, DEFAULT_TIMEOUT)
            .await
            .master_keys
            .remove(target)
    };
    let matches = target_master.as_ref().is_some_and(|master| {
        signatures::ed25519_key(master).map(|(id, _)| id) == Some(format!("ed25519:{key_id}"))
            && signatures::unsigned_part(master) == signatures::unsigned_part(object)
    });
    if !matches {
        return Err(refusal("M_NOT_FOUND", "That is not the user's master key"));
    }
    let mut kept = services
        .e2ee
        .user_signatures(signer, target)
        .map_err(internal)?
        .unwrap_or_else(|| json!({}));
    signatures::add_signature(&mut kept, signer.as_str(), &user_signing_id, user_signature);
    services
        .federation
        .device_lists
        .write_keys(signer, &[KeyWrite::UserSignatures(target, &kept)])
        .map_err(internal)
}
