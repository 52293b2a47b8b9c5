//! The application services (bridges) registered in the configuration, read at start
//! with the `palisade-appservice` crate (the registration format and its namespaces).
//! Their exclusive user namespaces are kept from registration, and each one's own user
//! (its `sender_localpart`) exists from the start.
//!
//! `interest.rs` queues the events each service is to be sent as they are written;
//! `delivery.rs` sends them in transactions.

pub mod delivery;
pub mod interest;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use palisade_appservice::{
    Appservice,
    client::{AppserviceClient, CallError, encode},
};
use parking_lot::RwLock;
use ruma::{RoomAliasId, ServerName, UserId};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    Error, Result,
    service::{push::rules::Rulesets, users::Users},
    storage::{Db, Keyspace, codec::Key, runs::RunPrefix},
};

pub struct Appservices {
    registry: RwLock<Arc<Registry>>,
    /// The ids of the registrations from the configuration's files.
    configured: HashSet<String>,
    client: AppserviceClient,
    /// Where registrations added at run time are kept.
    db: Arc<Db>,
    /// Moved whenever a registration is added or removed.
    changed: tokio::sync::watch::Sender<u64>,
}

/// How long an application service has to answer a query or a ping.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The registrations at one moment, with their `as_token`s indexed by hash: a token is
/// found by a map lookup, never compared byte by byte.
#[derive(Default)]
pub struct Registry {
    pub registered: Vec<Arc<Appservice>>,
    /// Each service's queue, by the same index.
    pub queues: Vec<RunPrefix>,
    /// Changes whenever the registrations do.
    pub generation: u64,
    by_token: HashMap<[u8; 32], usize>,
}

impl Registry {
    fn new(registered: Vec<Arc<Appservice>>, generation: u64) -> Self {
        let by_token = registered
            .iter()
            .enumerate()
            .map(|(index, service)| (token_hash(&service.registration.as_token), index))
            .collect();
        let queues = registered
            .iter()
            .map(|service| RunPrefix::new(queue_key(&service.registration.id)))
            .collect();
        Self {
            registered,
            queues,
            generation,
            by_token,
        }
    }

    /// Whether any service is sent ephemeral changes.
    pub fn any_receives_ephemeral(&self) -> bool {
        (self.registered.iter())
            .any(|service| service.receives_ephemeral && service.registration.url.is_some())
    }

    /// Whether any service is sent anything (has a URL).
    pub fn any_receives(&self) -> bool {
        (self.registered.iter()).any(|service| service.registration.url.is_some())
    }
}

/// The prefix of a service's queue entries and the key of its delivery state.
pub fn queue_key(id: &str) -> Key {
    Key::new().str(id)
}

/// Checks registrations against one another: each id, each token (whether `as_token` or
/// `hs_token`), each service's own user and each exclusive namespace belongs to one
/// only, or a token would name two services and a request could not tell which, and two
/// services would each own the same users.
fn check_distinct(registered: &[Arc<Appservice>]) -> std::result::Result<(), String> {
    let mut ids = HashSet::new();
    let mut tokens = HashSet::new();
    let mut senders = HashSet::new();
    let mut exclusive = HashSet::new();
    for service in registered {
        let registration = &service.registration;
        let repeated = |what: &str| {
            format!(
                "application service {}: its {what} is another registration's too",
                registration.id
            )
        };
        if !ids.insert(registration.id.as_str()) {
            return Err(repeated("id"));
        }
        for token in [&registration.as_token, &registration.hs_token] {
            if !tokens.insert(token.as_str()) {
                return Err(repeated("token"));
            }
        }
        if !senders.insert(registration.sender_localpart.as_str()) {
            return Err(repeated("sender_localpart"));
        }
        let namespaces = &registration.namespaces;
        for (kind, list) in [
            ("user", &namespaces.users),
            ("alias", &namespaces.aliases),
            ("room", &namespaces.rooms),
        ] {
            for namespace in list.iter().filter(|namespace| namespace.exclusive) {
                if !exclusive.insert((kind, namespace.regex.as_str())) {
                    return Err(repeated(&format!("exclusive {kind} namespace")));
                }
            }
        }
    }
    Ok(())
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Appservices {
    /// Reads every registration file and the registrations added through the admin
    /// API; the first that cannot be read or is invalid, or that repeats another's id,
    /// token or user, is the error.
    pub fn load(paths: &[PathBuf], client: AppserviceClient, db: Arc<Db>) -> Result<Self> {
        let mut registered = paths
            .iter()
            .map(|path| {
                Appservice::load(path).map_err(|error| {
                    Error::internal(format!("application service {}: {error}", path.display()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let configured = (registered.iter())
            .map(|service| service.registration.id.clone())
            .collect();
        for (id, text) in db.scan_prefix(Keyspace::AppserviceRegistrations, b"")? {
            let id = String::from_utf8_lossy(&id).into_owned();
            let service = Appservice::from_yaml(&String::from_utf8_lossy(&text))
                .map_err(|error| Error::internal(format!("application service {id}: {error}")))?;
            registered.push(service);
        }
        let registered: Vec<Arc<Appservice>> = registered.into_iter().map(Arc::new).collect();
        check_distinct(&registered).map_err(Error::internal)?;
        for service in &registered {
            tracing::info!(id = %service.registration.id, "application service registered");
        }
        Ok(Self {
            registry: RwLock::new(Arc::new(Registry::new(registered, 0))),
            configured,
            client,
            db,
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Adds a registration, or replaces one added before, at run time; it is kept in the
    /// database and read again at each start. Those of the configuration's files change
    /// only there. The registration must be the one `id` names (400 `M_INVALID_PARAM`).
    pub fn put(&self, id: &str, text: &str) -> Result<Arc<Appservice>> {
        let service = Arc::new(
            Appservice::from_yaml(text).map_err(|error| Error::invalid_param(error.to_string()))?,
        );
        if service.registration.id != id {
            return Err(Error::invalid_param(
                "The registration's id is not the path's",
            ));
        }
        let id = service.registration.id.clone();
        if self.configured.contains(&id) {
            return Err(Error::invalid_param(
                "This application service is registered in the configuration",
            ));
        }
        let mut registry = self.registry.write();
        let mut registered: Vec<Arc<Appservice>> = (registry.registered.iter())
            .filter(|other| other.registration.id != id)
            .cloned()
            .collect();
        registered.push(service.clone());
        check_distinct(&registered).map_err(Error::invalid_param)?;
        let mut batch = self.db.batch();
        batch.put(
            Keyspace::AppserviceRegistrations,
            id.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
        );
        self.db.write(batch)?;
        *registry = Arc::new(Registry::new(registered, registry.generation + 1));
        drop(registry);
        self.changed.send_modify(|count| *count += 1);
        tracing::info!(%id, "application service registered at run time");
        Ok(service)
    }

    /// Removes a registration added at run time; whether there was one.
    pub fn remove(&self, id: &str) -> Result<bool> {
        if self.configured.contains(id) {
            return Err(Error::invalid_param(
                "This application service is registered in the configuration",
            ));
        }
        let mut registry = self.registry.write();
        if !registry.registered.iter().any(|s| s.registration.id == id) {
            return Ok(false);
        }
        let registered = (registry.registered.iter())
            .filter(|other| other.registration.id != id)
            .cloned()
            .collect();
        // Its queue goes with it: a service registered again under the id starts afresh.
        let mut batch = self.db.batch();
        batch.delete(Keyspace::AppserviceRegistrations, id.as_bytes().to_vec());
        let queue = queue_key(id);
        for (key, _) in self
            .db
            .scan_prefix(Keyspace::AppserviceQueue, queue.bytes())?
        {
            batch.delete(Keyspace::AppserviceQueue, key);
        }
        batch.delete(Keyspace::AppserviceDelivery, queue.bytes().to_vec());
        self.db.write(batch)?;
        *registry = Arc::new(Registry::new(registered, registry.generation + 1));
        drop(registry);
        self.changed.send_modify(|count| *count += 1);
        tracing::info!(%id, "application service removed");
        Ok(true)
    }

    /// Whether a registration comes from the configuration's files.
    pub fn is_configured(&self, id: &str) -> bool {
        self.configured.contains(id)
    }

    /// A receiver that changes whenever a registration is added or removed.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The HTTP client that calls the services.
    pub fn client(&self) -> &AppserviceClient {
        &self.client
    }

    /// Asks the services whose namespaces hold `user_id` whether it exists (they make
    /// it as they answer yes): whether one said yes. A service that cannot be reached
    /// counts as a no.
    pub async fn query_user(&self, user_id: &UserId) -> bool {
        for service in self.current().registered.iter() {
            if service.registration.url.is_none() || !service.users.matches(user_id.as_str()) {
                continue;
            }
            match (self.client)
                .query_user(&service.registration, user_id.as_str(), QUERY_TIMEOUT)
                .await
            {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(appservice = %service.registration.id, %user_id, %error, "user query failed");
                }
            }
        }
        false
    }

    /// As [`query_user`](Self::query_user), for a room alias.
    pub async fn query_alias(&self, alias: &RoomAliasId) -> bool {
        for service in self.current().registered.iter() {
            if service.registration.url.is_none() || !service.aliases.matches(alias.as_str()) {
                continue;
            }
            match (self.client)
                .query_alias(&service.registration, alias.as_str(), QUERY_TIMEOUT)
                .await
            {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(appservice = %service.registration.id, %alias, %error, "alias query failed");
                }
            }
        }
        false
    }

    /// What the services that declare `protocol` say of it
    /// (`/_matrix/app/v1/thirdparty/protocol/{protocol}`), one answer with the instances
    /// of all of them, each instance given its `instance_id` (`appservice_id|network_id`,
    /// what a directory listing names). `None` when no service declares it or none
    /// answered.
    pub async fn protocol(&self, protocol: &str) -> Option<Value> {
        let path = format!("/_matrix/app/v1/thirdparty/protocol/{}", encode(protocol));
        let mut merged: Option<Value> = None;
        for service in self.declaring(Some(protocol)) {
            let Some(mut answer) = self.ask(&service, &path).await else {
                continue;
            };
            let id = &service.registration.id;
            let mut instances = match answer.get_mut("instances").map(Value::take) {
                Some(Value::Array(instances)) => instances,
                _ => Vec::new(),
            };
            for instance in &mut instances {
                let network = instance.get("network_id").and_then(Value::as_str);
                let instance_id = format!("{id}|{}", network.unwrap_or_default());
                if let Some(instance) = instance.as_object_mut() {
                    instance.insert("instance_id".into(), instance_id.into());
                }
            }
            match &mut merged {
                None => {
                    answer["instances"] = Value::Array(instances);
                    merged = Some(answer);
                }
                Some(merged) => {
                    if let Some(Value::Array(all)) = merged.get_mut("instances") {
                        all.extend(instances);
                    }
                }
            }
        }
        merged
    }

    /// Every protocol the services declare, as [`protocol`](Self::protocol) describes it.
    pub async fn protocols(&self) -> serde_json::Map<String, Value> {
        let mut names: Vec<String> = (self.current().registered.iter())
            .flat_map(|service| service.registration.protocols.clone().unwrap_or_default())
            .collect();
        names.sort();
        names.dedup();
        let mut out = serde_json::Map::new();
        for name in names {
            if let Some(protocol) = self.protocol(&name).await {
                out.insert(name, protocol);
            }
        }
        out
    }

    /// A third-party lookup (`/_matrix/app/v1/thirdparty/{location,user}...`) asked of the
    /// services that declare `protocol` (every service with a protocol when `None`),
    /// their answers joined; `None` when no service declares it.
    pub async fn thirdparty_lookup(
        &self,
        protocol: Option<&str>,
        path_and_query: &str,
    ) -> Option<Vec<Value>> {
        let services = self.declaring(protocol);
        if services.is_empty() {
            return None;
        }
        let mut found = Vec::new();
        for service in services {
            if let Some(Value::Array(answer)) = self.ask(&service, path_and_query).await {
                found.extend(answer);
            }
        }
        Some(found)
    }

    /// The services with a URL that declare `protocol`, or any protocol.
    fn declaring(&self, protocol: Option<&str>) -> Vec<Arc<Appservice>> {
        (self.current().registered.iter())
            .filter(|service| service.registration.url.is_some())
            .filter(|service| {
                let declared = service
                    .registration
                    .protocols
                    .as_deref()
                    .unwrap_or_default();
                match protocol {
                    Some(protocol) => declared.iter().any(|p| p == protocol),
                    None => !declared.is_empty(),
                }
            })
            .cloned()
            .collect()
    }

    /// A service's JSON answer to a lookup; `None` (logged) when it failed.
    async fn ask(&self, service: &Appservice, path_and_query: &str) -> Option<Value> {
        match (self.client)
            .get_json(&service.registration, path_and_query, QUERY_TIMEOUT)
            .await
        {
            Ok(answer) => Some(answer),
            Err(error) => {
                if !error.is_not_found() {
                    tracing::warn!(appservice = %service.registration.id, %error, path_and_query, "third-party lookup failed");
                }
                None
            }
        }
    }

    /// Pings a service (MSC2659): how long it took to answer.
    pub async fn ping(
        &self,
        service: &Appservice,
        transaction_id: Option<&str>,
    ) -> std::result::Result<Duration, CallError> {
        let started = std::time::Instant::now();
        (self.client)
            .ping(&service.registration, transaction_id, QUERY_TIMEOUT)
            .await?;
        Ok(started.elapsed())
    }

    /// The registrations as they stand.
    pub fn current(&self) -> Arc<Registry> {
        self.registry.read().clone()
    }

    /// The application service registered under `id`.
    pub fn by_id(&self, id: &str) -> Option<Arc<Appservice>> {
        self.registry
            .read()
            .registered
            .iter()
            .find(|service| service.registration.id == id)
            .cloned()
    }

    /// The application service whose `as_token` this is.
    pub fn by_as_token(&self, token: &str) -> Option<Arc<Appservice>> {
        let registry = self.registry.read();
        let index = *registry.by_token.get(&token_hash(token))?;
        Some(registry.registered[index].clone())
    }

    /// Makes each service's own user (`sender_localpart`) if it does not exist yet: a
    /// bridge acts as it before it registers anyone.
    pub fn create_senders(
        &self,
        server_name: &ServerName,
        users: &Users,
        push_rules: &Rulesets,
    ) -> Result<()> {
        for service in &self.current().registered {
            let registration = &service.registration;
            let user_id =
                UserId::parse_with_server_name(registration.sender_localpart.as_str(), server_name)
                    .map_err(|error| {
                        Error::internal(format!(
                            "application service {}: sender_localpart: {error}",
                            registration.id
                        ))
                    })?;
            if !users.exists(&user_id)? {
                users.create_passwordless(&user_id)?;
                push_rules.init(&user_id)?;
                tracing::info!(id = %registration.id, %user_id, "application service user created");
            }
        }
        Ok(())
    }

    /// Whether an application service other than `acting` claims the alias exclusively:
    /// nobody else may create it.
    pub fn claims_alias(&self, alias: &RoomAliasId, acting: Option<&str>) -> bool {
        self.registry.read().registered.iter().any(|service| {
            Some(service.registration.id.as_str()) != acting
                && service.aliases.is_exclusive(alias.as_str())
        })
    }

    /// Whether an application service claims `user_id` exclusively: its sender, or a
    /// user in one of its exclusive namespaces.
    pub fn claims_user(&self, user_id: &UserId) -> bool {
        self.registry
            .read()
            .registered
            .iter()
            .any(|service| service.claims_exclusively(user_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(id: &str, as_token: &str, hs_token: &str, sender: &str) -> Appservice {
        Appservice::from_yaml(&format!(
            "id: {id}\nurl: null\nas_token: {as_token}\nhs_token: {hs_token}\n\
             sender_localpart: {sender}\nnamespaces:\n  users: [{{exclusive: true, regex: '@{id}_.*'}}]\n  \
             aliases: []\n  rooms: []\n"
        ))
        .unwrap()
    }

    #[test]
    fn ids_tokens_and_users_belong_to_one_registration() {
        let checked = |services: Vec<Appservice>| {
            check_distinct(&services.into_iter().map(Arc::new).collect::<Vec<_>>())
        };
        assert!(
            checked(vec![
                registration("a", "ta", "ha", "abot"),
                registration("b", "tb", "hb", "bbot"),
            ])
            .is_ok()
        );
        for (second, what) in [
            (registration("a", "tb", "hb", "bbot"), "id"),
            (registration("b", "ta", "hb", "bbot"), "token"),
            // One service's hs_token as another's as_token.
            (registration("b", "ha", "hb", "bbot"), "token"),
            (registration("b", "tb", "hb", "abot"), "sender_localpart"),
            (
                Appservice::from_yaml(
                    "id: b\nurl: null\nas_token: tb\nhs_token: hb\nsender_localpart: bbot\n\
                     namespaces:\n  users: [{exclusive: true, regex: '@a_.*'}]\n",
                )
                .unwrap(),
                "exclusive user namespace",
            ),
        ] {
            let error = checked(vec![registration("a", "ta", "ha", "abot"), second])
                .expect_err("a repeated registration was taken");
            assert!(error.contains(what), "{what}: {error}");
        }
    }
}
