//! A fake homeserver for federation tests: it has its own ed25519 key and an HTTPS
//! listener on loopback with a certificate from the test CA (so its name is
//! `127.0.0.1:<port>`), publishes a self-signed key document, and otherwise does nothing
//! by itself. A test drives it by hand: it builds, signs (or forges) events and sends
//! them to a real server with `X-Matrix`-signed requests, so the test decides exactly
//! what a malicious server would send.
//!
//! It answers `GET /_matrix/key/v2/server` with its key document and `PUT
//! /_matrix/federation/v1/send/{txnId}` with `{}` (keeping the PDUs it was sent): a 200
//! without the per-PDU results, as some servers answer, which is a delivered transaction
//! all the same. It serves the events it signed and those its joins taught it to whoever asks
//! (no `X-Matrix` check): `get_missing_events`, `state_ids`, `event` and `event_auth`
//! (`fake_server/history.rs`). It can host a room of its own, as an older server
//! would (`fake_server/hosting.rs`). Anything else gets `404 M_UNRECOGNIZED`. It joins
//! rooms of versions 10 to 12.

use std::{
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use axum::{
    Json, Router,
    body::Bytes,
    extract::Request,
    http::StatusCode,
    middleware::{Next, from_fn},
    routing::{get, put},
};
use ruma17::{
    CanonicalJsonObject, OwnedServerName, RoomVersionId,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    room_version_rules::RoomVersionRules,
    signatures::Ed25519KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};

use self::history::{History, StateMap};
use crate::tls::TestCa;

mod history;
mod hosting;

/// The version part of the fake server's key id (`ed25519:fake`).
const KEY_VERSION: &str = "fake";

/// The room versions the fake server offers in `make_join`.
const ROOM_VERSIONS: [&str; 3] = ["10", "11", "12"];

/// A fake homeserver owned by one test; its listener stops when it is dropped.
pub struct FakeServer {
    server_name: String,
    key: Ed25519KeyPair,
    http: reqwest::Client,
    requests: Arc<Mutex<Vec<String>>>,
    received: Arc<Mutex<Vec<Value>>>,
    history: Arc<Mutex<History>>,
    hosted: hosting::Hosted,
    handle: axum_server::Handle<std::net::SocketAddr>,
    next_txn: AtomicU64,
}

impl FakeServer {
    /// Starts the listener on a free loopback port with a certificate from `ca`, and
    /// makes a client that trusts only `ca`.
    pub async fn start(ca: &TestCa) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let server_name = format!("127.0.0.1:{}", listener.local_addr()?.port());
        let key = new_key(KEY_VERSION)?;
        let document = key_document(&server_name, &key)?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let received = Arc::new(Mutex::new(Vec::new()));
        let receiving = received.clone();
        let history = Arc::new(Mutex::new(History::default()));
        let hosted = hosting::Hosted::default();
        let app = Router::new()
            .route(
                "/_matrix/key/v2/server",
                get(move || async move { Json(document) }),
            )
            .route(
                "/_matrix/federation/v1/send/{txn}",
                put(move |body: Bytes| async move {
                    let transaction: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Some(pdus) = transaction["pdus"].as_array() {
                        receiving
                            .lock()
                            .expect("the received PDUs")
                            .extend(pdus.iter().cloned());
                    }
                    Json(json!({}))
                }),
            )
            .merge(history::routes(history.clone(), server_name.clone()))
            .merge(hosting::routes(
                hosted.clone(),
                history.clone(),
                server_name.clone(),
            ))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({ "errcode": "M_UNRECOGNIZED", "error": "Unrecognized request" })),
                )
            })
            .layer(from_fn(move |request: Request, next: Next| {
                let recorded = recorded.clone();
                async move {
                    let target = request
                        .uri()
                        .path_and_query()
                        .map_or("", |target| target.as_str());
                    recorded.lock().expect("the request log").push(format!(
                        "{} {}",
                        request.method(),
                        percent_encoding::percent_decode_str(target).decode_utf8_lossy()
                    ));
                    next.run(request).await
                }
            }));
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls_config(ca)?)?
            .handle(handle.clone())
            .serve(app.into_make_service());
        tokio::spawn(async move {
            if let Err(error) = server.await {
                eprintln!("the fake server stopped: {error}");
            }
        });
        let ca_certificate = reqwest::Certificate::from_pem(ca.ca_pem().as_bytes())?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca_certificate])
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            server_name,
            key,
            http,
            requests,
            received,
            history,
            hosted,
            handle,
            next_txn: AtomicU64::new(0),
        })
    }

    /// The server name, `127.0.0.1:<port>`.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The id of this server's user `localpart`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// The key pair this server signs with (key id `ed25519:fake`).
    pub fn key(&self) -> &Ed25519KeyPair {
        &self.key
    }

    /// Every request this server received so far, as `METHOD /path?query`,
    /// percent-decoded.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("the request log").clone()
    }

    /// Every PDU other servers sent this server in transactions so far, oldest first.
    pub fn received_pdus(&self) -> Vec<Value> {
        self.received.lock().expect("the received PDUs").clone()
    }

    /// The event `event_id` as this server serves it: one it signed or a join taught it.
    pub fn known_event(&self, event_id: &str) -> Option<Value> {
        self.history().get(event_id).cloned()
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().expect("the history")
    }

    /// Signs a JSON object with this server's key (adds to its `signatures`).
    pub fn sign_json(&self, object: &mut Value) -> Result<()> {
        let mut canonical = canonical(object)?;
        ruma17::signatures::sign_json(&self.server_name, &self.key, &mut canonical)?;
        *object = serde_json::to_value(canonical)?;
        Ok(())
    }

    /// Adds the content hash and this server's signature to an event of a room of
    /// `version`; returns the event's id and the signed event, which this server now
    /// serves to other servers.
    pub fn sign_event(&self, version: &RoomVersionId, event: Value) -> Result<(String, Value)> {
        self.sign_event_with(&self.key, version, event)
    }

    /// As [`sign_event`](Self::sign_event), but with `key` (under this server's name):
    /// a bad signature when `key` is not the published one. This server serves the
    /// event all the same.
    pub fn sign_event_with(
        &self,
        key: &Ed25519KeyPair,
        version: &RoomVersionId,
        event: Value,
    ) -> Result<(String, Value)> {
        let rules = rules(version)?;
        let mut object = canonical(&event)?;
        ruma17::signatures::hash_and_sign_event(
            &self.server_name,
            key,
            &mut object,
            &rules.redaction,
        )?;
        let signed = serde_json::to_value(object)?;
        let event_id = event_id(version, &signed)?;
        self.history().insert(&event_id, &signed);
        Ok((event_id, signed))
    }

    /// A server-server request to `destination` signed by this server; returns the
    /// status and the JSON body (`Null` if none).
    pub async fn request(
        &self,
        method: &str,
        destination: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        self.request_as(
            &self.server_name,
            &self.key,
            method,
            destination,
            path,
            body,
        )
        .await
    }

    /// A server-server request whose `X-Matrix` header names `origin` and is signed with
    /// `key`, whoever they are: the way to forge a request.
    pub async fn request_as(
        &self,
        origin: &str,
        key: &Ed25519KeyPair,
        method: &str,
        destination: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let bytes = match body {
            Some(body) => serde_json::to_vec(body)?,
            None => Vec::new(),
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("https://{destination}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)?;
        let input = XMatrixSigningInput::new(
            OwnedServerName::try_from(origin)?,
            OwnedServerName::try_from(destination)?,
            key,
        );
        let authorization = XMatrix::sign_http_request(&request, input)?;
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from(&authorization),
        );
        let response = self
            .http
            .execute(reqwest::Request::try_from(request)?)
            .await
            .with_context(|| format!("{method} {path} to {destination}"))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// A request to `destination` with `authorization` as its `Authorization` header and
    /// `body` as is: the way to send what no well-formed server would.
    pub async fn request_raw(
        &self,
        method: &str,
        destination: &str,
        path: &str,
        authorization: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Value)> {
        let response = self
            .http
            .request(method.parse()?, format!("https://{destination}{path}"))
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("{method} {path} to {destination}"))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// The body of a transaction from this server with `pdus` and `edus`.
    pub fn transaction(&self, pdus: &[Value], edus: &[Value]) -> Value {
        json!({
            "origin": self.server_name,
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": edus,
        })
    }

    /// A fresh transaction path, `/_matrix/federation/v1/send/<new id>`.
    pub fn transaction_path(&self) -> String {
        let n = self.next_txn.fetch_add(1, Ordering::Relaxed);
        format!("/_matrix/federation/v1/send/fake{}-{n}", now_ms())
    }

    /// Sends a transaction of `pdus` and `edus` to `destination`; returns the status and
    /// the body (per-PDU results under `pdus`).
    pub async fn send_transaction(
        &self,
        destination: &str,
        pdus: &[Value],
        edus: &[Value],
    ) -> Result<(u16, Value)> {
        let body = self.transaction(pdus, edus);
        self.request("PUT", destination, &self.transaction_path(), Some(&body))
            .await
    }

    /// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}` on `destination`: the
    /// join event template and the room version.
    pub async fn make_join(
        &self,
        destination: &str,
        room_id: &str,
        user_id: &str,
    ) -> Result<(RoomVersionId, Value)> {
        let versions: Vec<String> = ROOM_VERSIONS.iter().map(|v| format!("ver={v}")).collect();
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{}?{}",
            encode(room_id),
            encode(user_id),
            versions.join("&")
        );
        let (status, body) = self.request("GET", destination, &path, None).await?;
        if status != 200 {
            bail!("make_join answered {status}: {body}");
        }
        let version = body["room_version"]
            .as_str()
            .context("make_join names no room version")?;
        Ok((RoomVersionId::try_from(version)?, body["event"].clone()))
    }

    /// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}` on `destination` with a
    /// signed join event; returns the response (the room's state and auth chain).
    pub async fn send_join(
        &self,
        destination: &str,
        room_id: &str,
        event_id: &str,
        event: &Value,
    ) -> Result<Value> {
        let path = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            encode(room_id),
            encode(event_id)
        );
        let (status, body) = self.request("PUT", destination, &path, Some(event)).await?;
        if status != 200 {
            bail!("send_join answered {status}: {body}");
        }
        Ok(body)
    }

    /// Joins `user_id` (of this server) to a room through `destination`, by the
    /// protocol: `make_join`, sign, `send_join`. Returns the room as the join left it;
    /// this server keeps the events of the answer (the state and its auth chain) and the
    /// state before the join, to serve them.
    pub async fn join(&self, destination: &str, room_id: &str, user_id: &str) -> Result<FakeRoom> {
        let (version, mut template) = self.make_join(destination, room_id, user_id).await?;
        template["origin_server_ts"] = json!(now_ms());
        let (join_id, join) = self.sign_event(&version, template)?;
        let response = self
            .send_join(destination, room_id, &join_id, &join)
            .await?;
        let mut room = FakeRoom {
            room_id: room_id.to_owned(),
            version,
            state: StateMap::new(),
            prev_event: join_id.clone(),
            depth: 0,
        };
        {
            let mut history = self.history();
            for event in response["state"].as_array().context("no state")? {
                let id = event_id(&room.version, event)?;
                room.record_state(&id, event);
                history.insert(&id, event);
            }
            for event in response["auth_chain"].as_array().into_iter().flatten() {
                history.insert(&event_id(&room.version, event)?, event);
            }
            history.set_state_before(&join_id, room.state.clone());
        }
        room.advance(&join_id, &join);
        Ok(room)
    }

    /// `GET /_matrix/federation/v1/event/{eventId}` on `destination`: the status and the
    /// PDU (`Null` unless 200).
    pub async fn get_event(&self, destination: &str, event_id: &str) -> Result<(u16, Value)> {
        let path = format!("/_matrix/federation/v1/event/{}", encode(event_id));
        let (status, body) = self.request("GET", destination, &path, None).await?;
        let pdu = body["pdus"]
            .as_array()
            .and_then(|pdus| pdus.first())
            .cloned()
            .unwrap_or(Value::Null);
        Ok((status, pdu))
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A room as the fake server knows it after joining: its version, its state and the
/// event the next one builds on. It learns only from what the test tells it
/// ([`advance`](Self::advance)), not from what other servers send.
pub struct FakeRoom {
    /// The room id.
    pub room_id: String,
    /// The room version.
    pub version: RoomVersionId,
    state: StateMap,
    prev_event: String,
    depth: u64,
}

impl FakeRoom {
    /// An unsigned event of `sender` built on the room's latest known event, with the auth
    /// events the auth rules select from the known state.
    pub fn event(
        &self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Value {
        let membership = content["membership"].as_str().unwrap_or_default();
        let auth_events = self.auth_events(sender, kind, state_key, membership);
        let mut event = json!({
            "room_id": self.room_id,
            "sender": sender,
            "type": kind,
            "content": content,
            "origin_server_ts": now_ms(),
            "depth": self.depth + 1,
            "prev_events": [self.prev_event],
            "auth_events": auth_events,
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        event
    }

    /// Records an event the next one builds on (one the receiving server accepted, or
    /// one this server keeps to itself): a state event changes the known state.
    pub fn advance(&mut self, event_id: &str, event: &Value) {
        self.prev_event = event_id.to_owned();
        self.depth = self.depth.max(event["depth"].as_u64().unwrap_or(0));
        self.record_state(event_id, event);
    }

    /// The id of the known state event of `kind` and `state_key`.
    fn state_event_id(&self, kind: &str, state_key: &str) -> Option<&str> {
        self.state
            .get(&(kind.to_owned(), state_key.to_owned()))
            .map(String::as_str)
    }

    fn record_state(&mut self, event_id: &str, event: &Value) {
        if let (Some(kind), Some(state_key)) = (event["type"].as_str(), event["state_key"].as_str())
        {
            self.state
                .insert((kind.to_owned(), state_key.to_owned()), event_id.to_owned());
        }
    }

    /// The auth events of a new event: the create event (unless its id is the room id),
    /// the power levels, the sender's membership and, for a membership, the target's
    /// and the join rules.
    fn auth_events(
        &self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        membership: &str,
    ) -> Vec<String> {
        let create_is_room_id = self
            .version
            .rules()
            .is_some_and(|rules| rules.authorization.room_create_event_id_as_room_id);
        let mut wanted = vec![("m.room.power_levels", ""), ("m.room.member", sender)];
        if !create_is_room_id {
            wanted.push(("m.room.create", ""));
        }
        if kind == "m.room.member" {
            wanted.push(("m.room.member", state_key.unwrap_or_default()));
            if matches!(membership, "join" | "invite" | "knock") {
                wanted.push(("m.room.join_rules", ""));
            }
        }
        let mut ids: Vec<String> = Vec::new();
        for (kind, state_key) in wanted {
            if let Some(id) = self.state_event_id(kind, state_key)
                && !ids.iter().any(|known| known == id)
            {
                ids.push(id.to_owned());
            }
        }
        ids
    }
}

/// A new ed25519 key pair with key id `ed25519:<version>`.
pub fn new_key(version: &str) -> Result<Ed25519KeyPair> {
    let document = Ed25519KeyPair::generate();
    Ok(Ed25519KeyPair::from_der(&document, version.to_owned())?)
}

/// The id of an event of a room of `version`: `$` and its reference hash.
pub fn event_id(version: &RoomVersionId, event: &Value) -> Result<String> {
    let hash = ruma17::signatures::reference_hash(&canonical(event)?, &rules(version)?)?;
    Ok(format!("${hash}"))
}

/// Percent-encodes one path segment (a room, event or user id).
pub fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn rules(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version
        .rules()
        .with_context(|| format!("room version {version} is unknown"))
}

fn canonical(value: &Value) -> Result<CanonicalJsonObject> {
    Ok(serde_json::from_value(value.clone())?)
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The key document `GET /_matrix/key/v2/server` serves: one key, valid for a day,
/// signed with itself.
fn key_document(server_name: &str, key: &Ed25519KeyPair) -> Result<Value> {
    use base64::Engine;
    let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key());
    let mut document = json!({
        "server_name": server_name,
        "verify_keys": { format!("ed25519:{}", key.version()): { "key": public } },
        "old_verify_keys": {},
        "valid_until_ts": now_ms() + 24 * 3600 * 1000,
    });
    let mut canonical = canonical(&document)?;
    ruma17::signatures::sign_json(server_name, key, &mut canonical)?;
    document = serde_json::to_value(canonical)?;
    Ok(document)
}

/// The listener's TLS configuration: a certificate for 127.0.0.1 from `ca`, HTTP/1.1.
fn tls_config(ca: &TestCa) -> Result<axum_server::tls_rustls::RustlsConfig> {
    let (chain, key) = ca.issue(&["127.0.0.1"]);
    let chain = CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(config),
    ))
}
