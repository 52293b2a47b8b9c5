//! The services behind the API. Each owns its keyspaces and gets only what it needs;
//! they form a DAG: `stream` ← `users`, `account_data`, `receipts`, `typing`, `rooms`,
//! `presence`, `e2ee`, `to_device`;
//! `sync` reads from all of them and writes nothing.

pub mod account_data;
pub mod e2ee;
pub mod federation;
pub mod filters;
pub mod key_backup;
pub mod presence;
pub mod push_rules;
pub mod pushers;
pub mod rate_limit;
pub mod receipts;
pub mod rooms;
pub mod stream;
pub mod sync;
pub mod to_device;
pub mod typing;
pub mod uiaa;
pub mod unread;
pub mod users;

use std::sync::Arc;

use palisade_federation::{FederationClient, SigningKey, signing_key::StoredKey};

use crate::{
    Result,
    config::Config,
    storage::{Db, Keyspace},
};

pub struct Services {
    pub config: Config,
    pub db: Arc<Db>,
    pub signing_key: Arc<SigningKey>,
    pub stream: Arc<stream::Stream>,
    pub users: users::Users,
    pub uiaa: uiaa::Uiaa,
    pub account_data: account_data::AccountData,
    pub filters: filters::Filters,
    pub pushers: pushers::Pushers,
    pub presence: presence::Presence,
    pub e2ee: e2ee::E2ee,
    pub to_device: to_device::ToDevice,
    pub key_backup: key_backup::KeyBackup,
    /// Nonces handed out by `/_synapse/admin/v1/register`, with when.
    pub admin_nonces: parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    pub rooms: rooms::Rooms,
    pub receipts: receipts::Receipts,
    pub typing: Arc<typing::Typing>,
    pub unread: unread::Unread,
    pub login_limiter: rate_limit::RateLimiter,
    pub registration_limiter: rate_limit::RateLimiter,
    pub message_limiter: rate_limit::RateLimiter,
    /// The HTTP client for other servers.
    pub federation_client: Arc<FederationClient>,
    pub server_keys: federation::keys::ServerKeys,
    pub outgoing: Arc<federation::queue::OutgoingQueue>,
    pub sender: federation::sender::Sender,
}

impl Services {
    /// Opens the database and builds every service.
    pub fn open(config: Config) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.database_path).map_err(crate::Error::internal)?;
        let db = Arc::new(Db::open(&config.database_path)?);
        let signing_key = Arc::new(load_signing_key(&db)?);
        let stream = stream::Stream::load(&db)?;
        let (outgoing, woken) = federation::queue::OutgoingQueue::load(db.clone())?;
        let outgoing = Arc::new(outgoing);
        let rooms = rooms::Rooms::new(
            db.clone(),
            stream.clone(),
            config.server_name.clone(),
            signing_key.clone(),
            outgoing.clone(),
        )?;
        let federation_client = Arc::new(
            FederationClient::new(
                config.server_name.clone(),
                signing_key.clone(),
                client_options(&config.federation),
            )
            .map_err(crate::Error::internal)?,
        );
        let server_keys = federation::keys::ServerKeys::new(
            db.clone(),
            federation_client.clone(),
            config.server_name.clone(),
            signing_key.clone(),
            config.federation.trusted_key_servers.clone(),
        );
        let services = Arc::new(Self {
            users: users::Users::new(
                db.clone(),
                config.refreshable_access_token_lifetime_secs * 1000,
            ),
            uiaa: uiaa::Uiaa::default(),
            account_data: account_data::AccountData::new(db.clone(), stream.clone()),
            filters: filters::Filters::new(db.clone()),
            pushers: pushers::Pushers::new(db.clone()),
            presence: presence::Presence::new(db.clone(), stream.clone()),
            e2ee: e2ee::E2ee::new(db.clone(), stream.clone()),
            to_device: to_device::ToDevice::new(db.clone(), stream.clone()),
            key_backup: key_backup::KeyBackup::new(db.clone()),
            admin_nonces: Default::default(),
            receipts: receipts::Receipts::new(db.clone(), stream.clone()),
            typing: typing::Typing::new(stream.clone()),
            unread: unread::Unread::default(),
            login_limiter: rate_limit::RateLimiter::new(config.rate_limits.login),
            registration_limiter: rate_limit::RateLimiter::new(config.rate_limits.registration),
            message_limiter: rate_limit::RateLimiter::new(config.rate_limits.message),
            rooms,
            stream,
            signing_key,
            db,
            federation_client,
            server_keys,
            outgoing,
            sender: federation::sender::Sender::default(),
            config,
        });
        if services.config.federation.enabled {
            federation::sender::Sender::start(services.clone(), woken);
        }
        Ok(services)
    }
}

/// The federation client's options from the configuration.
fn client_options(config: &crate::config::Federation) -> palisade_federation::ClientOptions {
    palisade_federation::ClientOptions {
        verify_certificates: config.verify_certificates,
        extra_root_certificates: config.trusted_ca_files.clone(),
        timeout: std::time::Duration::from_secs(config.request_timeout_secs),
        ..Default::default()
    }
}

/// Loads the server's signing key, making and storing one on first start.
fn load_signing_key(db: &Db) -> Result<SigningKey> {
    const KEY: &[u8] = b"signing_key";
    let stored: StoredKey = match db.get_json(Keyspace::Meta, KEY)? {
        Some(stored) => stored,
        None => {
            let stored = SigningKey::generate();
            let mut batch = db.batch();
            batch.put_json(Keyspace::Meta, KEY, &stored);
            db.write(batch)?;
            stored
        }
    };
    SigningKey::from_stored(&stored).map_err(crate::Error::internal)
}
