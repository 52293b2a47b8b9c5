//! Other servers' signing keys: fetched from the server itself (or from a trusted key
//! server when it cannot be reached), checked against their own signature, stored with
//! their validity, and handed to request and event verification.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use palisade_federation::{FederationClient, SigningKey};
use parking_lot::Mutex;
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedServerName, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
    },
    serde::{Base64, Raw},
    signatures::PublicKeyMap,
};
use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    service::users::now_ms,
    storage::{Db, Keyspace, codec::Key},
};

/// How long other servers may cache this server's key document.
const KEY_VALIDITY: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// One verify key of a server as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredKey {
    key: Base64,
    /// Until when the key may be used: the document's `valid_until_ts` for a current key,
    /// `expired_ts` for an old one.
    valid_until: u64,
}

pub struct ServerKeys {
    db: Arc<Db>,
    client: Arc<FederationClient>,
    server_name: OwnedServerName,
    signing_key: Arc<SigningKey>,
    trusted_key_servers: Vec<OwnedServerName>,
    /// One fetch per server at a time: concurrent requests wait for its result.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl ServerKeys {
    pub fn new(
        db: Arc<Db>,
        client: Arc<FederationClient>,
        server_name: OwnedServerName,
        signing_key: Arc<SigningKey>,
        trusted_key_servers: Vec<OwnedServerName>,
    ) -> Self {
        Self {
            db,
            client,
            server_name,
            signing_key,
            trusted_key_servers,
            fetching: Mutex::default(),
        }
    }

    /// The keys of `server` usable at `at_ms` (request time, or an event's timestamp),
    /// fetching the server's key document when a needed key is missing or stale.
    pub async fn keys_valid_at(
        &self,
        server: &ServerName,
        key_ids: &[String],
        at_ms: u64,
    ) -> Result<BTreeMap<String, Base64>> {
        if server == self.server_name {
            return Ok(BTreeMap::from([(
                self.signing_key.key_id(),
                self.signing_key.public_key(),
            )]));
        }
        let usable = |stored: &BTreeMap<String, StoredKey>| {
            key_ids
                .iter()
                .all(|id| stored.get(id).is_some_and(|key| key.valid_until >= at_ms))
        };
        let mut stored = self.stored(server)?;
        if !usable(&stored) {
            let lock = self
                .fetching
                .lock()
                .entry(server.to_owned())
                .or_default()
                .clone();
            let _guard = lock.lock().await;
            stored = self.stored(server)?;
            if !usable(&stored) {
                if let Err(error) = self.fetch(server, at_ms).await {
                    tracing::debug!(%server, %error, "could not fetch server keys");
                }
                stored = self.stored(server)?;
            }
        }
        Ok(stored
            .into_iter()
            .filter(|(_, key)| key.valid_until >= at_ms)
            .map(|(id, key)| (id, key.key))
            .collect())
    }

    /// The public key map needed to check signatures of `servers` at `at_ms`.
    pub async fn public_key_map(
        &self,
        servers: impl IntoIterator<Item = (OwnedServerName, Vec<String>)>,
        at_ms: u64,
    ) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        for (server, key_ids) in servers {
            let keys = self.keys_valid_at(&server, &key_ids, at_ms).await?;
            map.insert(server.to_string(), keys);
        }
        Ok(map)
    }

    /// Every stored key of a server, by key id.
    fn stored(&self, server: &ServerName) -> Result<BTreeMap<String, StoredKey>> {
        let prefix = Key::new().str(server.as_str());
        let mut out = BTreeMap::new();
        for (key, value) in self.db.scan_prefix(Keyspace::ServerKeys, prefix.bytes())? {
            let mut reader = crate::storage::codec::KeyReader::new(&key);
            reader.str()?;
            let id = reader.str()?.to_owned();
            out.insert(id, crate::storage::codec::decode_json(&value)?);
        }
        Ok(out)
    }

    /// Fetches a server's keys from the server, then from the trusted key servers.
    async fn fetch(&self, server: &ServerName, at_ms: u64) -> Result<()> {
        let direct = self
            .client
            .send(server, get_server_keys::v2::Request::new())
            .await;
        match direct {
            Ok(response) => {
                self.store_document(server, &response.server_key)?;
                return Ok(());
            }
            Err(error) => tracing::debug!(%server, %error, "key fetch from the server failed"),
        }
        let minimum = MilliSecondsSinceUnixEpoch(at_ms.try_into().unwrap_or_default());
        for notary in &self.trusted_key_servers {
            let request = get_remote_server_keys::v2::Request::new(server.to_owned(), minimum);
            match self.client.send(notary, request).await {
                Ok(response) => {
                    for document in &response.server_keys {
                        if let Err(error) = self.store_notarised(notary, server, document).await {
                            tracing::debug!(%server, %notary, %error, "notary answer refused");
                        }
                    }
                    if self
                        .stored(server)?
                        .values()
                        .any(|k| k.valid_until >= at_ms)
                    {
                        return Ok(());
                    }
                }
                Err(error) => tracing::debug!(%server, %notary, %error, "key query failed"),
            }
        }
        Err(Error::internal(format!("no usable keys for {server}")))
    }

    /// A document relayed by a notary must carry the notary's signature as well as the
    /// server's own.
    async fn store_notarised(
        &self,
        notary: &ServerName,
        server: &ServerName,
        document: &Raw<ServerSigningKeys>,
    ) -> Result<()> {
        let object: CanonicalJsonObject =
            serde_json::from_str(document.json().get()).map_err(Error::internal)?;
        let notary_key_ids = signature_key_ids(&object, notary);
        let notary_keys = Box::pin(self.keys_valid_at(notary, &notary_key_ids, now_ms())).await?;
        let map = PublicKeyMap::from([(notary.to_string(), notary_keys)]);
        ruma::signatures::verify_json(&map, &object)
            .map_err(|error| Error::forbidden(format!("notary signature: {error}")))?;
        self.store_document(server, document)
    }

    /// Checks a key document (its server, its self-signature) and stores its keys and
    /// the document itself (served again as a notary).
    pub fn store_document(
        &self,
        server: &ServerName,
        document: &Raw<ServerSigningKeys>,
    ) -> Result<()> {
        let keys: ServerSigningKeys = document
            .deserialize()
            .map_err(|error| Error::bad_json(format!("key document: {error}")))?;
        if keys.server_name != server {
            return Err(Error::forbidden("key document for another server"));
        }
        let object: CanonicalJsonObject =
            serde_json::from_str(document.json().get()).map_err(Error::internal)?;
        let own: BTreeMap<String, Base64> = keys
            .verify_keys
            .iter()
            .map(|(id, key)| (id.to_string(), key.key.clone()))
            .collect();
        let map = PublicKeyMap::from([(server.to_string(), own)]);
        ruma::signatures::verify_json(&map, &object)
            .map_err(|error| Error::forbidden(format!("key document signature: {error}")))?;
        let valid_until: u64 = keys.valid_until_ts.get().into();
        let mut batch = self.db.batch();
        for (id, key) in &keys.verify_keys {
            batch.put_json(
                Keyspace::ServerKeys,
                Key::new().str(server.as_str()).str(id.as_str()),
                &StoredKey {
                    key: key.key.clone(),
                    valid_until,
                },
            );
        }
        for (id, key) in &keys.old_verify_keys {
            batch.put_json(
                Keyspace::ServerKeys,
                Key::new().str(server.as_str()).str(id.as_str()),
                &StoredKey {
                    key: key.key.clone(),
                    valid_until: key.expired_ts.get().into(),
                },
            );
        }
        batch.put(
            Keyspace::ServerKeyDocuments,
            server.as_str().as_bytes().to_vec(),
            document.json().get().as_bytes().to_vec(),
        );
        self.db.write(batch)?;
        Ok(())
    }

    /// This server's signed key document (`/_matrix/key/v2/server`), valid for a week.
    pub fn own_document(&self) -> Result<Raw<ServerSigningKeys>> {
        let valid_until = MilliSecondsSinceUnixEpoch::from_system_time(
            std::time::SystemTime::now() + KEY_VALIDITY,
        )
        .ok_or_else(|| Error::internal("time out of range"))?;
        self.signing_key
            .server_keys(&self.server_name, valid_until)
            .map_err(Error::internal)
    }

    /// The key documents to answer a notary query for `server` with, valid at least
    /// until `minimum_valid_until` (fetched when the stored one is older), each with this
    /// server's signature added.
    pub async fn notarised_documents(
        &self,
        server: &ServerName,
        minimum_valid_until: u64,
    ) -> Result<Vec<Raw<ServerSigningKeys>>> {
        if server == self.server_name {
            return Ok(vec![self.own_document()?]);
        }
        let mut document = self.document(server)?;
        let fresh = |document: &Option<ServerSigningKeys>| {
            document.as_ref().is_some_and(|keys| {
                u64::from(keys.valid_until_ts.get()) >= minimum_valid_until.min(now_ms())
            })
        };
        if !fresh(&document.as_ref().and_then(|raw| raw.deserialize().ok())) {
            let _ = self.fetch(server, minimum_valid_until.min(now_ms())).await;
            document = self.document(server)?;
        }
        let Some(document) = document else {
            return Ok(Vec::new());
        };
        let mut object: CanonicalJsonObject =
            serde_json::from_str(document.json().get()).map_err(Error::internal)?;
        self.signing_key
            .sign_json(&self.server_name, &mut object)
            .map_err(Error::internal)?;
        let raw = serde_json::value::to_raw_value(&object).map_err(Error::internal)?;
        Ok(vec![Raw::from_json(raw)])
    }

    fn document(&self, server: &ServerName) -> Result<Option<Raw<ServerSigningKeys>>> {
        let Some(bytes) = self
            .db
            .get(Keyspace::ServerKeyDocuments, server.as_str().as_bytes())?
        else {
            return Ok(None);
        };
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_slice(&bytes).map_err(Error::internal)?;
        Ok(Some(Raw::from_json(raw)))
    }

    /// Answers a batch notary query (`POST /_matrix/key/v2/query`).
    pub async fn query_batch(
        &self,
        criteria: &BTreeMap<
            OwnedServerName,
            BTreeMap<
                ruma::OwnedServerSigningKeyId,
                get_remote_server_keys_batch::v2::QueryCriteria,
            >,
        >,
    ) -> Result<Vec<Raw<ServerSigningKeys>>> {
        let mut out = Vec::new();
        for (server, keys) in criteria {
            let minimum = keys
                .values()
                .filter_map(|criteria| criteria.minimum_valid_until_ts)
                .map(|ts| u64::from(ts.get()))
                .max()
                .unwrap_or_else(now_ms);
            out.extend(self.notarised_documents(server, minimum).await?);
        }
        Ok(out)
    }
}

/// The key ids `server` signed `object` with.
pub fn signature_key_ids(object: &CanonicalJsonObject, server: &ServerName) -> Vec<String> {
    match object.get("signatures") {
        Some(ruma::CanonicalJsonValue::Object(signatures)) => match signatures.get(server.as_str())
        {
            Some(ruma::CanonicalJsonValue::Object(keys)) => keys.keys().cloned().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

impl ServerKeys {
    /// Checks the `X-Matrix` signature of a server-server request and returns the server
    /// that made it (`401 M_UNAUTHORIZED` otherwise).
    pub async fn verify_request(&self, request: &http::Request<&[u8]>) -> Result<OwnedServerName> {
        use ruma::api::federation::authentication::XMatrix;
        let unauthorized =
            |message: String| Error::new(ruma::api::error::ErrorKind::Unauthorized, message);
        // Missing credentials are a 401; credentials that do not parse (an origin such as
        // `localhost:http`) are a malformed request, 400, as on Synapse.
        let header = XMatrix::extract_from_http_headers(request.headers()).map_err(|error| {
            let present = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.trim_start().starts_with("X-Matrix"));
            let error = unauthorized(error.to_string());
            if present {
                error.with_status(http::StatusCode::BAD_REQUEST)
            } else {
                error
            }
        })?;
        // The signature covers the body as canonical JSON; a body that cannot be that
        // (a float, a number out of range) is bad JSON, not a bad signature.
        if !request.body().is_empty()
            && serde_json::from_slice::<ruma::CanonicalJsonValue>(request.body()).is_err()
        {
            return Err(Error::bad_json("The request body is not canonical JSON"));
        }
        if header
            .destination
            .as_ref()
            .is_some_and(|destination| destination != &self.server_name)
        {
            return Err(unauthorized(
                "The request is addressed to another server".to_owned(),
            ));
        }
        let keys = self
            .keys_valid_at(&header.origin, &[header.key.to_string()], now_ms())
            .await?;
        if !keys.contains_key(header.key.as_str()) {
            return Err(unauthorized(format!(
                "No valid key {} of {}",
                header.key, header.origin
            )));
        }
        let map = PublicKeyMap::from([(header.origin.to_string(), keys)]);
        header
            .verify_http_request(request, &self.server_name, &map)
            .map_err(|error| unauthorized(format!("Bad request signature: {error}")))?;
        Ok(header.origin)
    }
}
