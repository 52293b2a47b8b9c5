//! Other servers' users' keys: `/keys/query` and `/keys/claim` for them go to their
//! servers (`/user/keys/query`, `/user/keys/claim`), all servers at once, each within
//! the client's timeout. A server that fails or is too slow is named in `failures`.
//!
//! A user's full device list is cached while the asking user shares a room with them:
//! their server then tells this one of every change (`device_lists.rs` drops the entry).

use std::{collections::BTreeMap, time::Duration};

use futures::future::join_all;
use palisade_federation::client::OutgoingAuthentication;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId,
    api::{
        OutgoingRequest,
        federation::keys::{claim_keys, get_keys},
        path_builder::SinglePath,
    },
    serde::Raw,
};
use serde_json::{Value, json};

use std::sync::Arc;

use palisade_federation::FederationClient;

use crate::service::{
    e2ee::{E2ee, RemoteDevices},
    rooms::Rooms,
};

/// Other servers' users' keys, queried and claimed on their servers.
pub struct UserKeys {
    pub(super) enabled: bool,
    pub(super) client: Arc<FederationClient>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) e2ee: Arc<E2ee>,
}

/// Keys of other servers' users, as `/keys/query` shows them.
#[derive(Debug, Default)]
pub struct QueryAnswer {
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Value>>,
    pub master_keys: BTreeMap<OwnedUserId, Value>,
    pub self_signing_keys: BTreeMap<OwnedUserId, Value>,
    pub failures: BTreeMap<String, Value>,
}

/// One-time keys claimed from other servers' users' devices.
#[derive(Debug, Default)]
pub struct ClaimAnswer {
    pub one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Value>>>,
    pub failures: BTreeMap<String, Value>,
}

fn failure(error: impl std::fmt::Display) -> Value {
    json!({ "status": 503, "message": error.to_string() })
}

impl UserKeys {
    /// Sends `request` to `server` within `timeout`; a failure as `failures` shows it.
    async fn ask<R>(
        &self,
        server: &ServerName,
        request: R,
        timeout: Duration,
    ) -> Result<R::IncomingResponse, Value>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutgoingAuthentication,
    {
        if !self.enabled {
            return Err(failure("federation is disabled on this server"));
        }
        match tokio::time::timeout(timeout, self.client.send(server, request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(failure(error)),
            Err(_) => Err(failure("timed out")),
        }
    }
}

fn by_server<T>(
    wanted: BTreeMap<OwnedUserId, T>,
) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> {
    let mut out: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user, value) in wanted {
        out.entry(user.server_name().to_owned())
            .or_default()
            .insert(user, value);
    }
    out
}

fn value_of<T>(raw: &Raw<T>) -> Option<Value> {
    raw.deserialize_as_unchecked::<Value>().ok()
}

/// Whether a device-keys object is for this user and device.
fn names(keys: &Value, user: &UserId, device: &str) -> bool {
    keys.get("user_id").and_then(Value::as_str) == Some(user.as_str())
        && keys.get("device_id").and_then(Value::as_str) == Some(device)
}

/// Whether a cross-signing key is this user's.
fn owned_by(key: &Value, user: &UserId) -> bool {
    key.get("user_id").and_then(Value::as_str) == Some(user.as_str())
}

impl UserKeys {
    /// Queries other servers for their users' keys (an empty device list means every
    /// device), answering from the cache where it can.
    pub async fn query(
        &self,
        requester: &UserId,
        wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
        timeout: Duration,
    ) -> QueryAnswer {
        let mut answer = QueryAnswer::default();
        let shared_rooms = self.rooms.joined_rooms(requester).unwrap_or_default();
        let mut to_fetch = BTreeMap::new();
        for (user, devices) in wanted {
            match self.e2ee.remote_devices(&user) {
                Ok(Some(cached)) => answer.add(&user, &devices, cached),
                _ => {
                    to_fetch.insert(user, devices);
                }
            }
        }
        if to_fetch.is_empty() {
            return answer;
        }
        let requests = by_server(to_fetch)
            .into_iter()
            .map(|(server, users)| async move {
                let request = get_keys::v1::Request::new(users.clone());
                let response = self.ask(&server, request, timeout).await;
                (server, users, response)
            });
        for (server, users, response) in join_all(requests).await {
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    answer.failures.insert(server.to_string(), error);
                    continue;
                }
            };
            for (user, devices) in users {
                let mut fetched = RemoteDevices::default();
                for (device_id, raw) in response.device_keys.get(&user).into_iter().flatten() {
                    if let Some(keys) =
                        value_of(raw).filter(|keys| names(keys, &user, device_id.as_str()))
                    {
                        fetched.devices.insert(device_id.clone(), keys);
                    }
                }
                fetched.master_key = response
                    .master_keys
                    .get(&user)
                    .and_then(value_of)
                    .filter(|key| owned_by(key, &user));
                fetched.self_signing_key = response
                    .self_signing_keys
                    .get(&user)
                    .and_then(value_of)
                    .filter(|key| owned_by(key, &user));
                if devices.is_empty()
                    && self.rooms.joined_any(&shared_rooms, &user).unwrap_or(false)
                    && let Err(error) = self.e2ee.store_remote_devices(&user, &fetched)
                {
                    tracing::warn!(%error, %user, "remote device keys not cached");
                }
                answer.add(&user, &devices, fetched);
            }
        }
        answer
    }
}

impl QueryAnswer {
    fn add(&mut self, user: &UserId, devices: &[OwnedDeviceId], keys: RemoteDevices) {
        let shown: BTreeMap<OwnedDeviceId, Value> = keys
            .devices
            .into_iter()
            .filter(|(device, _)| devices.is_empty() || devices.contains(device))
            .collect();
        self.device_keys.insert(user.to_owned(), shown);
        if let Some(master) = keys.master_key {
            self.master_keys.insert(user.to_owned(), master);
        }
        if let Some(self_signing) = keys.self_signing_key {
            self.self_signing_keys.insert(user.to_owned(), self_signing);
        }
    }
}

impl UserKeys {
    /// Claims one-time keys of other servers' users' devices.
    pub async fn claim(
        &self,
        wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
        timeout: Duration,
    ) -> ClaimAnswer {
        let mut answer = ClaimAnswer::default();
        let requests = by_server(wanted)
            .into_iter()
            .map(|(server, users)| async move {
                let request = claim_keys::v1::Request::new(users);
                let response = self.ask(&server, request, timeout).await;
                (server, response)
            });
        for (server, response) in join_all(requests).await {
            match response {
                Ok(response) => {
                    for (user, devices) in response.one_time_keys {
                        if user.server_name() != server {
                            continue;
                        }
                        let entry = answer.one_time_keys.entry(user).or_default();
                        for (device, keys) in devices {
                            let keys: BTreeMap<String, Value> = keys
                                .iter()
                                .filter_map(|(id, key)| Some((id.to_string(), value_of(key)?)))
                                .collect();
                            entry.insert(device, keys);
                        }
                    }
                }
                Err(error) => {
                    answer.failures.insert(server.to_string(), error);
                }
            }
        }
        answer
    }
}
