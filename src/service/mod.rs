//! The services behind the API. Each owns its keyspaces and gets only what it needs;
//! they form a DAG: `stream` ← `users`, `account_data`, `receipts`, `typing`, `rooms`,
//! `presence`, `e2ee`, `to_device`;
//! `sync` reads from all of them and writes only the delivered receipts of what it
//! hands over (through `delivery`).

pub mod account_data;
pub mod address_policy;
pub mod appservices;
pub mod delayed_events;
pub mod delivery;
pub mod e2ee;
pub mod federation;
pub mod filters;
pub mod health;
pub mod identity;
pub mod key_backup;
pub mod media;
pub mod memory;
pub mod presence;
pub mod push;
pub mod rate_limit;
pub mod receipts;
pub mod reports;
pub mod retention;
pub mod rooms;
pub mod search;
pub mod spaces;
pub mod stream;
pub mod sync;
pub mod thread_subscriptions;
pub mod threepids;
pub mod to_device;
pub mod token_cache;
pub mod typing;
pub mod uiaa;
pub mod upgrade_carry_over;
pub mod users;

use std::sync::Arc;

use palisade_federation::{FederationClient, SigningKey, signing_key::StoredKey};

use crate::{
    Result,
    config::Config,
    storage::{Db, Keyspace},
};

/// Every service, built once at start with the handles each uses. The API handlers
/// reach them from axum's state; no service is handed this whole set.
pub struct Services {
    pub config: Config,
    pub appservices: Arc<appservices::Appservices>,
    pub delayed_events: Arc<delayed_events::DelayedEvents>,
    pub signing_key: Arc<SigningKey>,
    pub stream: Arc<stream::Stream>,
    pub users: Arc<users::Users>,
    pub uiaa: uiaa::Uiaa,
    /// Phone numbers and email addresses on accounts.
    pub threepids: Arc<threepids::ThreePids>,
    /// Contact discovery (the identity service API).
    pub identity: identity::Identity,
    /// Expires messages past their room's lifetime.
    pub retention: Arc<retention::Retention>,
    /// Readiness, and the storage figures of the metrics.
    pub health: health::Health,
    pub account_data: Arc<account_data::AccountData>,
    pub filters: filters::Filters,
    pub push: push::Push,
    pub presence: Arc<presence::Presence>,
    pub e2ee: Arc<e2ee::E2ee>,
    pub to_device: Arc<to_device::ToDevice>,
    pub key_backup: key_backup::KeyBackup,
    /// Nonces handed out by `/_synapse/admin/v1/register`, with when.
    pub admin_nonces: parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    pub rooms: Arc<rooms::Rooms>,
    pub receipts: Arc<receipts::Receipts>,
    pub reports: reports::Reports,
    pub typing: Arc<typing::Typing>,
    pub sync: Arc<sync::Syncer>,
    pub sliding_sync: sync::sliding::SlidingSync,
    pub login_limiter: rate_limit::RateLimiter,
    pub registration_limiter: rate_limit::RateLimiter,
    pub message_limiter: rate_limit::RateLimiter,
    /// The HTTP client for other servers.
    pub federation_client: Arc<FederationClient>,
    pub server_keys: Arc<federation::keys::ServerKeys>,
    pub outgoing: Arc<federation::queue::OutgoingQueue>,
    pub federation: federation::Federation,
    pub spaces: spaces::Spaces,
    pub media: Arc<media::Media>,
    pub search: search::Search,
    /// Thread subscriptions, where the configuration turns them on.
    pub thread_subscriptions: Option<Arc<thread_subscriptions::ThreadSubscriptions>>,
}

impl Services {
    /// Opens the database and builds every service.
    pub fn open(config: Config) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.database_path).map_err(crate::Error::internal)?;
        let db = Arc::new(match config.database.engine {
            crate::config::Engine::Rocksdb => Db::open(&config.database_path)?,
            crate::config::Engine::Postgres => {
                Db::postgres(&config.database.url, config.database.pool_size)?
            }
        });
        let signing_key = Arc::new(load_signing_key(&db)?);
        let stream = stream::Stream::load(&db)?;
        let (outgoing, woken) = federation::queue::OutgoingQueue::load(db.clone())?;
        let outgoing = Arc::new(outgoing);
        let account_data = Arc::new(account_data::AccountData::new(db.clone(), stream.clone()));
        let push_rules = Arc::new(push::rules::Rulesets::new(
            account_data.clone(),
            config.push.thread_subscriptions,
        ));
        let thread_subscriptions = config.push.thread_subscriptions.then(|| {
            Arc::new(thread_subscriptions::ThreadSubscriptions::new(
                db.clone(),
                stream.clone(),
            ))
        });
        let (notified, notified_users) = tokio::sync::mpsc::unbounded_channel();
        let pushers = Arc::new(push::pushers::Pushers::new(db.clone())?);
        // Counted by the push actions, read by the unread counts.
        let redactions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let push_actions = Arc::new(push::actions::PushActions::new(
            push_rules.clone(),
            thread_subscriptions.clone(),
            pushers.clone(),
            config.server_name.clone(),
            notified,
            redactions.clone(),
        ));
        let search = search::Search::open(db.clone(), &config.search_directory())?;
        let appservices = Arc::new(appservices::Appservices::load(
            &config.app_service_config_files,
            appservice_client()?,
            db.clone(),
        )?);
        let appservice_interest = Arc::new(appservices::interest::Interest::new(
            appservices.clone(),
            db.clone(),
            stream.clone(),
        ));
        let delayed_events = Arc::new(delayed_events::DelayedEvents::open(
            db.clone(),
            config.delayed_events.clone(),
        )?);
        let rooms = Arc::new(rooms::Rooms::new(
            db.clone(),
            stream.clone(),
            config.server_name.clone(),
            signing_key.clone(),
            outgoing.clone(),
            vec![
                push_actions,
                search.timeline_index(),
                appservice_interest.clone(),
                delayed_events.clone(),
                Arc::new(retention::RetentionRooms),
            ],
        )?);
        appservice_interest.set_rooms(&rooms);
        delayed_events.start(&rooms);
        let caught_up = rooms.catch_up_relations()?;
        if caught_up > 0 {
            tracing::info!(events = caught_up, "relations of earlier events indexed");
        }
        search.start(rooms.clone());
        let federation_client = Arc::new(
            FederationClient::new(
                config.server_name.clone(),
                signing_key.clone(),
                client_options(&config.federation),
            )
            .map_err(crate::Error::internal)?,
        );
        let server_keys = Arc::new(federation::keys::ServerKeys::new(
            db.clone(),
            federation_client.clone(),
            config.server_name.clone(),
            signing_key.clone(),
            config.federation.trusted_key_servers.clone(),
        ));
        let base = Base {
            appservices,
            delayed_events,
            appservice_interest,
            db,
            account_data,
            push_rules,
            notified_users,
            signing_key,
            stream,
            outgoing,
            rooms,
            federation_client,
            server_keys,
            search,
            pushers,
            redactions,
            thread_subscriptions,
        };
        Ok(Arc::new(Self::assemble(config, base, woken)?))
    }

    /// Builds the services above storage, the stream, the rooms and the federation
    /// client, each with the handles it uses.
    fn assemble(
        config: Config,
        base: Base,
        woken: tokio::sync::mpsc::UnboundedReceiver<ruma::OwnedServerName>,
    ) -> Result<Self> {
        let Base {
            appservices,
            delayed_events,
            appservice_interest,
            db,
            account_data,
            push_rules,
            notified_users,
            signing_key,
            stream,
            outgoing,
            rooms,
            federation_client,
            server_keys,
            search,
            pushers,
            redactions,
            thread_subscriptions,
        } = base;
        let users = Arc::new(users::Users::new(
            db.clone(),
            config.refreshable_access_token_lifetime_secs * 1000,
        ));
        let presence = Arc::new(presence::Presence::new(
            db.clone(),
            stream.clone(),
            appservice_interest.clone(),
            config.server_name.clone(),
            &config.presence,
        )?);
        let e2ee = Arc::new(e2ee::E2ee::new(db.clone(), stream.clone()));
        let to_device = Arc::new(to_device::ToDevice::new(
            db.clone(),
            stream.clone(),
            appservice_interest.clone(),
        ));
        let receipts = Arc::new(receipts::Receipts::new(
            db.clone(),
            stream.clone(),
            appservice_interest.clone(),
        ));
        let typing = typing::Typing::new(stream.clone(), appservice_interest.clone());
        let push_counts = Arc::new(push::counts::Counts::new(db.clone(), redactions));
        let delivery = Arc::new(delivery::Delivery::new(
            receipts.clone(),
            rooms.clone(),
            account_data.clone(),
            outgoing.clone(),
        ));
        let sync = Arc::new(sync::Syncer {
            rooms: rooms.clone(),
            e2ee: e2ee.clone(),
            presence: presence.clone(),
            account_data: account_data.clone(),
            to_device: to_device.clone(),
            stream: stream.clone(),
            typing: typing.clone(),
            receipts: receipts.clone(),
            push_counts: push_counts.clone(),
            delivery: delivery.clone(),
            thread_subscriptions: thread_subscriptions.clone(),
        });
        let sliding_sync = sync::sliding::SlidingSync::new(
            sync.clone(),
            sync::sliding::Connections::new(db.clone()),
        );
        let expired = sliding_sync.expire_connections()?;
        if expired > 0 {
            tracing::info!(
                expired,
                "sliding sync connections unused for a week forgotten"
            );
        }
        let federation = federation::Federation::new(
            &config,
            federation::Handles {
                db: db.clone(),
                signing_key: signing_key.clone(),
                client: federation_client.clone(),
                keys: server_keys.clone(),
                outgoing: outgoing.clone(),
                stream: stream.clone(),
                rooms: rooms.clone(),
                users: users.clone(),
                e2ee: e2ee.clone(),
                presence: presence.clone(),
                to_device: to_device.clone(),
                typing: typing.clone(),
                receipts: receipts.clone(),
                delivery: delivery.clone(),
            },
        );
        if config.federation.enabled {
            federation.sender.clone().start(woken);
        }
        if config.presence.enabled {
            federation.presence.clone().start_timeouts();
        }
        let spaces = spaces::Spaces::new(
            rooms.clone(),
            federation_client.clone(),
            config.server_name.clone(),
            config.federation.enabled,
        );
        let gateway = push::gateway::Gateway::new(
            push::gateway::Handles {
                pushers: pushers.clone(),
                counts: push_counts.clone(),
                rooms: rooms.clone(),
                receipts: receipts.clone(),
                stream: stream.clone(),
            },
            push::gateway::Options {
                include_content: config.push.include_content,
                group_unread_count_by_room: config.push.group_unread_count_by_room,
                syncing_grace: std::time::Duration::from_secs(config.push.syncing_grace_secs),
            },
            address_policy::AddressPolicy::new(&config.push.gateway_ip_allow)
                .map_err(crate::Error::internal)?,
        )
        .map_err(crate::Error::internal)?;
        if config.push.enabled {
            Arc::new(gateway).start(notified_users);
        }
        let media = Arc::new(media::Media::new(
            db.clone(),
            open_media_store(&config)?,
            config.server_name.clone(),
            media::Limits::from_config(&config),
            config.federation.enabled.then(|| federation_client.clone()),
        )?);
        let retention = Arc::new(retention::Retention::new(
            db.clone(),
            rooms.clone(),
            media.clone(),
            std::time::Duration::from_secs(config.retention.purge_interval_secs),
        ));
        retention.clone().start();
        appservices.create_senders(&config.server_name, &users, &push_rules)?;
        let threepids = Arc::new(threepids::ThreePids::new(db.clone(), &config)?);
        let identity = identity::Identity::new(
            db.clone(),
            threepids.clone(),
            account_data.clone(),
            users.clone(),
            config.federation.enabled.then(|| federation_client.clone()),
            &config,
        );
        let appservice_delivery =
            appservices::delivery::Delivery::new(appservices::delivery::Handles {
                db: db.clone(),
                rooms: rooms.clone(),
                stream: stream.clone(),
                appservices: appservices.clone(),
                e2ee: e2ee.clone(),
                users: users.clone(),
            });
        Arc::new(appservice_delivery).start(appservice_interest.subscribe());
        Ok(Self {
            media,
            appservices,
            delayed_events,
            users,
            uiaa: uiaa::Uiaa::default(),
            threepids,
            identity,
            retention,
            health: health::Health::new(db.clone()),
            account_data,
            filters: filters::Filters::new(db.clone()),
            push: push::Push {
                rules: push_rules,
                pushers,
                counts: push_counts,
            },
            presence,
            e2ee,
            to_device,
            key_backup: key_backup::KeyBackup::new(db.clone()),
            admin_nonces: Default::default(),
            receipts,
            reports: reports::Reports::new(db.clone())?,
            typing,
            sync,
            sliding_sync,
            login_limiter: rate_limit::RateLimiter::new(config.rate_limits.login),
            registration_limiter: rate_limit::RateLimiter::new(config.rate_limits.registration),
            message_limiter: rate_limit::RateLimiter::new(config.rate_limits.message),
            rooms,
            stream,
            signing_key,
            federation_client,
            server_keys,
            outgoing,
            federation,
            spaces,
            search,
            thread_subscriptions,
            config,
        })
    }
}

/// The HTTP client for application services: the web's TLS roots, no proxy, no
/// redirects (their URLs are the operator's, loopback included).
fn appservice_client() -> Result<palisade_appservice::client::AppserviceClient> {
    let tls = palisade_federation::tls::web_client_config().map_err(crate::Error::internal)?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(crate::Error::internal)?;
    Ok(palisade_appservice::client::AppserviceClient::new(http))
}

/// What every other service is built on.
struct Base {
    appservices: Arc<appservices::Appservices>,
    delayed_events: Arc<delayed_events::DelayedEvents>,
    appservice_interest: Arc<appservices::interest::Interest>,
    db: Arc<Db>,
    account_data: Arc<account_data::AccountData>,
    push_rules: Arc<push::rules::Rulesets>,
    notified_users: tokio::sync::mpsc::UnboundedReceiver<ruma::OwnedUserId>,
    signing_key: Arc<SigningKey>,
    stream: Arc<stream::Stream>,
    outgoing: Arc<federation::queue::OutgoingQueue>,
    rooms: Arc<rooms::Rooms>,
    federation_client: Arc<FederationClient>,
    server_keys: Arc<federation::keys::ServerKeys>,
    search: search::Search,
    pushers: Arc<push::pushers::Pushers>,
    /// The push actions' count of redactions that took notifications away.
    redactions: Arc<std::sync::atomic::AtomicU64>,
    thread_subscriptions: Option<Arc<thread_subscriptions::ThreadSubscriptions>>,
}

/// The media store the configuration names: a bucket, or the media directory.
fn open_media_store(config: &Config) -> Result<Arc<dyn crate::storage::blobs::BlobStore>> {
    use crate::storage::blobs::{FileBlobs, S3Blobs, S3Options};
    let directory = config.media_directory();
    let store: Arc<dyn crate::storage::blobs::BlobStore> = match &config.media.s3 {
        Some(s3) => {
            let options = S3Options {
                endpoint: s3.endpoint.clone(),
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: s3.secret_access_key.clone(),
                prefix: s3.prefix.clone(),
                path_style: s3.path_style,
            };
            Arc::new(
                S3Blobs::open(&options, &directory.join("staging")).map_err(|error| {
                    crate::Error::internal(format!("opening the media bucket: {error}"))
                })?,
            )
        }
        None => Arc::new(FileBlobs::open(&directory).map_err(|error| {
            crate::Error::internal(format!("opening the media directory: {error}"))
        })?),
    };
    Ok(store)
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
