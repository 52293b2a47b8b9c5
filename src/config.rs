//! Configuration, read from a TOML file whose options all live under `[global]` (the
//! layout Conduit-family servers use, so their configs carry over). Every option is
//! documented in `conf/homeserver.toml`; a test keeps the two in step.

use std::{net::IpAddr, path::PathBuf};

use ruma::{OwnedServerName, OwnedUserId, RoomVersionId};
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub global: Config,
}

/// The homeserver's options.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// The domain in every user id and room alias of this server.
    pub server_name: OwnedServerName,
    /// The address the client API listens on.
    pub address: IpAddr,
    /// The port the client API listens on.
    pub port: u16,
    /// The directory of the RocksDB database (and of the media files and search index
    /// by default, whatever the engine).
    pub database_path: PathBuf,
    /// The storage engine: the embedded RocksDB, or PostgreSQL.
    pub database: Database,
    /// Whether anyone may register an account (with `m.login.dummy`).
    pub allow_registration: bool,
    /// Whether guest accounts may be registered (`kind=guest`): limited accounts for
    /// previewing rooms that allow guests, which can be upgraded to full ones.
    pub allow_guest_access: bool,
    /// A token that lets its holder register (`m.login.registration_token`), even when
    /// open registration is off.
    pub registration_token: Option<String>,
    /// Shared secret for `/_synapse/admin/v1/register`; that endpoint is off without it.
    pub registration_shared_secret: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_request_size: usize,
    /// The room version of new rooms when the client does not choose one.
    pub default_room_version: RoomVersionId,
    /// Lifetime of an access token that comes with a refresh token, in seconds.
    pub refreshable_access_token_lifetime_secs: u64,
    /// The longest a `/sync` long-poll is held, in milliseconds.
    pub sync_timeout_max_ms: u64,
    /// The `m.homeserver` base URL advertised in `/.well-known/matrix/client`
    /// (default: `http://{address}:{port}`).
    pub well_known_client: Option<String>,
    /// The help page for this server's users, served at `/.well-known/matrix/support`.
    pub support_page: Option<String>,
    /// Whom to contact about this server, served at `/.well-known/matrix/support`
    /// (which answers 404 without a page or contacts).
    pub support_contacts: Vec<SupportContact>,
    /// The tracing filter for logs, e.g. `info` or `palisade=debug,info`.
    pub log: String,
    /// Registration files of application services (bridges), read at start.
    pub app_service_config_files: Vec<PathBuf>,
    /// Rate limits, per user (or per IP address before login).
    pub rate_limits: RateLimits,
    /// The server-server API: talking to other homeservers.
    pub federation: Federation,
    /// The content repository: uploads, downloads, thumbnails.
    pub media: Media,
    /// Sync and requests over one WebSocket per device (`docs/websocket.md`).
    pub websocket: WebSocket,
    /// Push notifications to phones through push gateways.
    pub push: Push,
    /// Online status and last seen.
    pub presence: Presence,
    /// The TURN servers calls relay their media through.
    pub turn: Turn,
    /// Group calls (MatrixRTC): the media services clients are pointed at.
    pub rtc: Rtc,
    /// Events sent later by the server (MSC4140): how a call member's leave is sent when
    /// their app dies.
    pub delayed_events: DelayedEvents,
    /// Phone numbers and email addresses on accounts, verified with one-time codes.
    pub threepids: ThreePids,
    /// Contact discovery: the identity service API, served by this server.
    pub identity: Identity,
    /// Messages that expire (`m.room.retention`).
    pub retention: Retention,
    /// Stories: rooms whose messages expire after a day.
    pub stories: Stories,
    /// Prometheus metrics, on a listener of their own.
    pub metrics: Metrics,
}

/// The metrics listener: `/metrics` (Prometheus, OpenMetrics text), `/health` and
/// `/ready`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Metrics {
    /// Whether the metrics listener runs.
    pub enabled: bool,
    /// Its address: keep it off the public network.
    pub address: IpAddr,
    pub port: u16,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            enabled: false,
            address: IpAddr::from([127, 0, 0, 1]),
            port: 9108,
        }
    }
}

/// Which storage engine keeps the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// RocksDB in `database_path`.
    #[default]
    Rocksdb,
    /// PostgreSQL at `database.url`.
    Postgres,
}

/// The storage engine.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Database {
    pub engine: Engine,
    /// PostgreSQL's connection string (`host=... user=... dbname=...` or
    /// `postgresql://user:password@host/dbname`).
    pub url: String,
    /// How many connections to PostgreSQL are kept at most.
    pub pool_size: usize,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            engine: Engine::Rocksdb,
            url: String::new(),
            pool_size: 16,
        }
    }
}

/// Message retention (MSC1763): rooms whose `m.room.retention` sets `max_lifetime`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Retention {
    /// How often messages past their room's lifetime are expired, in seconds (they are
    /// hidden from clients the moment they pass it either way).
    pub purge_interval_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            purge_interval_secs: 60,
        }
    }
}

/// Stories (`docs/stories.md`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Stories {
    /// How long a story lives, in seconds, unless its author's client sets another
    /// `m.room.retention` at creation.
    pub lifetime_secs: u64,
}

impl Default for Stories {
    fn default() -> Self {
        Self {
            lifetime_secs: 24 * 60 * 60,
        }
    }
}

/// Phone numbers and email addresses (third-party ids): signing up with one, adding and
/// removing them, logging in and resetting a password with them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ThreePids {
    /// Whether signing up needs a verified phone number or email address (otherwise one
    /// is optional, offered when its sender is configured).
    pub require_for_registration: bool,
    /// How long a code may be entered, in seconds.
    pub code_lifetime_secs: u64,
    /// How many wrong codes a verification session takes before it is spent.
    pub max_attempts: u32,
    /// How long a verified session may be used (to sign up, add the address, reset a
    /// password), in seconds after its code was entered.
    pub validated_lifetime_secs: u64,
    /// Codes by SMS.
    pub sms: Sms,
    /// Codes by email.
    pub email: Email,
}

impl Default for ThreePids {
    fn default() -> Self {
        Self {
            require_for_registration: false,
            code_lifetime_secs: 600,
            max_attempts: 5,
            validated_lifetime_secs: 3600,
            sms: Sms::default(),
            email: Email::default(),
        }
    }
}

/// How text messages are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsDriver {
    /// Phone numbers are not offered.
    #[default]
    None,
    /// Codes are written to the server's log (development only).
    Log,
    /// Codes are posted to an SMS provider's HTTP API.
    Webhook,
}

/// Codes by SMS.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Sms {
    pub driver: SmsDriver,
    /// The message; `{code}` and `{server_name}` are filled in.
    pub message: String,
    /// The webhook driver: where and how to post each message.
    pub webhook: Webhook,
}

impl Default for Sms {
    fn default() -> Self {
        Self {
            driver: SmsDriver::None,
            message: "Your {server_name} code is {code}".to_owned(),
            webhook: Webhook::default(),
        }
    }
}

/// An SMS provider's HTTP API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Webhook {
    /// The URL requests are sent to.
    pub url: String,
    /// The HTTP method.
    pub method: String,
    /// Extra headers (an API key, `Authorization`).
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body's media type.
    pub content_type: String,
    /// The body; `{to}` (E.164, with `+`), `{to_digits}`, `{code}` and `{message}` are
    /// filled in, escaped for the content type (JSON strings, form encoding).
    pub body: String,
    /// How many times a failed request is retried.
    pub retries: u32,
    /// How long one request may take, in seconds.
    pub timeout_secs: u64,
}

impl Default for Webhook {
    fn default() -> Self {
        Self {
            url: String::new(),
            method: "POST".to_owned(),
            headers: std::collections::BTreeMap::new(),
            content_type: "application/json".to_owned(),
            body: r#"{"to": "{to}", "message": "{message}"}"#.to_owned(),
            retries: 3,
            timeout_secs: 10,
        }
    }
}

/// How emails are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailDriver {
    /// Email addresses are not offered.
    #[default]
    None,
    /// Mails are written to the server's log (development only).
    Log,
    /// Mails go through an SMTP server.
    Smtp,
}

/// Codes by email.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Email {
    pub driver: EmailDriver,
    /// The SMTP server: `smtps://user:password@host:465` (TLS),
    /// `smtp://user:password@host:587?tls=required` (STARTTLS) or `smtp://host:25`.
    pub smtp_url: String,
    /// The sender, `Name <address>`.
    pub from: String,
    /// The subject; `{server_name}` is filled in.
    pub subject: String,
}

impl Default for Email {
    fn default() -> Self {
        Self {
            driver: EmailDriver::None,
            smtp_url: String::new(),
            from: String::new(),
            subject: "Your {server_name} verification code".to_owned(),
        }
    }
}

/// Contact discovery: the identity service API (`/_matrix/identity/v2`) served by this
/// server, over the verified phone numbers and emails of users who allow it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Identity {
    /// Whether the identity API is served and advertised in `/.well-known/matrix/client`.
    pub enabled: bool,
    /// Whether a user's verified addresses can be found by others until they say
    /// otherwise (the `org.palisade.discovery` account data).
    pub discoverable_by_default: bool,
    /// The terms users accept before using the identity API: their URL (none: no terms).
    pub terms_url: Option<String>,
    /// The version of the terms; a new version must be accepted again.
    pub terms_version: String,
    /// Addresses one user may look up per second, and at once.
    pub lookups_per_second: f64,
    pub lookup_burst: u32,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            enabled: false,
            discoverable_by_default: false,
            terms_url: None,
            terms_version: "1.0".to_owned(),
            lookups_per_second: 50.0,
            lookup_burst: 5000,
        }
    }
}

/// MatrixRTC group calls: the media transports clients are told of (MSC4143), in
/// `/.well-known/matrix/client` (`org.matrix.msc4143.rtc_foci`) and at
/// `/_matrix/client/unstable/org.matrix.msc4143/rtc/transports`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Rtc {
    /// The LiveKit JWT services (lk-jwt-service) of the SFUs group calls go through.
    pub livekit_service_urls: Vec<String>,
}

/// Delayed events (MSC4140).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct DelayedEvents {
    /// The longest delay a client may ask for, in seconds; 0 turns delayed events off.
    pub max_delay_secs: u64,
    /// How many delayed events one user may have waiting.
    pub max_per_user: usize,
}

impl Default for DelayedEvents {
    fn default() -> Self {
        Self {
            max_delay_secs: 24 * 60 * 60,
            max_per_user: 100,
        }
    }
}

/// TURN for calls: what `/voip/turnServer` hands clients.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Turn {
    /// The TURN servers' URIs (`turn:` or `turns:`); none: clients are told of no server.
    pub uris: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret` with
    /// `use-auth-secret`): each user gets credentials of their own, valid `ttl_secs`.
    pub shared_secret: Option<String>,
    /// Fixed credentials instead, for a TURN server without the shared-secret scheme.
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long the credentials handed out are valid, in seconds.
    pub ttl_secs: u64,
    /// Whether guest accounts get credentials too.
    pub allow_guests: bool,
}

impl Default for Turn {
    fn default() -> Self {
        Self {
            uris: Vec::new(),
            shared_secret: None,
            username: None,
            password: None,
            ttl_secs: 24 * 60 * 60,
            allow_guests: false,
        }
    }
}

/// Presence: online, idle (`unavailable`) and offline, and when a user was last active.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Presence {
    /// Whether presence is kept and shared at all (off: everyone shows offline, no
    /// presence goes to other servers and theirs is ignored).
    pub enabled: bool,
    /// An online user inactive this long shows as `unavailable`, in seconds.
    pub idle_after_secs: u64,
    /// A user none of whose devices synced for this long goes `offline`, in seconds.
    pub offline_after_secs: u64,
    /// Another server's user not heard of for this long goes `offline`, in seconds
    /// (servers repeat their users' presence more often than that).
    pub remote_offline_after_secs: u64,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_after_secs: 5 * 60,
            offline_after_secs: 30,
            remote_offline_after_secs: 30 * 60,
        }
    }
}

/// Push notifications.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Push {
    /// Whether notifications are sent to push gateways (unread counts and
    /// `/notifications` work either way).
    pub enabled: bool,
    /// Whether a push carries the message (content, sender and room names); without it
    /// gateways get only ids and counts, and the app fetches the event.
    pub include_content: bool,
    /// Whether the badge counts rooms with unread notifications (else notifications).
    pub group_unread_count_by_room: bool,
    /// How long after a device's last sync it still counts as online, in seconds: the
    /// pusher that device set gets no push meanwhile (the app shows the event itself).
    pub syncing_grace_secs: u64,
    /// Address ranges (CIDR) push gateways may be reached at although the deny list
    /// covers them (loopback, private, link-local, multicast and reserved ranges).
    pub gateway_ip_allow: Vec<String>,
    /// Thread subscriptions (MSC4306, MSC4308, as Element X uses them): clients
    /// subscribe to threads, and a message in a thread notifies only the thread's
    /// subscribers and those it mentions. Off: threads notify like the rest of the room,
    /// as clients without subscriptions expect.
    pub thread_subscriptions: bool,
}

impl Default for Push {
    fn default() -> Self {
        Self {
            enabled: true,
            include_content: true,
            group_unread_count_by_room: true,
            syncing_grace_secs: 30,
            gateway_ip_allow: Vec::new(),
            thread_subscriptions: false,
        }
    }
}

/// The WebSocket transport.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct WebSocket {
    /// Whether the WebSocket endpoint is served.
    pub enabled: bool,
    /// How often the server pings a socket, in seconds; a socket silent for two of
    /// these (no pong, no frame) is closed.
    pub ping_interval_secs: u64,
    /// How long a frame may wait to be written, in seconds: a client that reads slower
    /// than that is disconnected (the server never queues more for it).
    pub write_timeout_secs: u64,
    /// Requests of one socket handled at the same time; more wait, unread.
    pub max_requests_in_flight: usize,
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            enabled: true,
            ping_interval_secs: 30,
            write_timeout_secs: 30,
            max_requests_in_flight: 16,
        }
    }
}

/// The content repository.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Media {
    /// Where media files are kept (default: `media` in the database directory). Files
    /// are named by the SHA-256 of their bytes, so the same bytes are stored once.
    pub directory: Option<PathBuf>,
    /// The largest upload accepted, in bytes; also the largest file fetched from
    /// another server.
    pub max_upload_size: u64,
    /// How many bytes of uploads each user may keep (none: no quota).
    pub user_quota: Option<u64>,
    /// Serve media uploaded (or fetched) from now on only through the authenticated
    /// endpoints (`/_matrix/client/v1/media/*`); the deprecated `/_matrix/media/v3/`
    /// downloads keep serving what came before, as the spec's freeze describes.
    pub freeze_legacy_endpoints: bool,
    /// How many `mxc://` URIs a user may hold created but not yet uploaded.
    pub max_pending_uploads: usize,
    /// How long a created `mxc://` URI waits for its upload, in seconds.
    pub pending_upload_expiry_secs: u64,
    /// Images with more pixels than this are not thumbnailed (decompression bombs).
    pub max_image_pixels: u64,
    /// Whether `preview_url` fetches pages for link previews (this server then visits
    /// every URL a client asks about).
    pub url_preview_enabled: bool,
    /// Address ranges (CIDR) previews may reach although the deny list covers them
    /// (loopback, private, link-local, multicast and reserved ranges are denied).
    pub url_preview_ip_allow: Vec<String>,
    /// The ffmpeg that makes video thumbnails (a name on the `PATH` or a path);
    /// without it videos get no thumbnail.
    pub ffmpeg_path: String,
    /// An S3-compatible bucket to keep media files in instead of `directory` (which
    /// then only stages uploads).
    pub s3: Option<MediaS3>,
}

/// An S3-compatible bucket for media files.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MediaS3 {
    /// The service's URL, e.g. `https://s3.eu-central-1.amazonaws.com`.
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Object names start with this.
    #[serde(default)]
    pub prefix: String,
    /// Path-style URLs (`endpoint/bucket/key`), which most self-hosted services need.
    #[serde(default = "default_true")]
    pub path_style: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_true() -> bool {
    true
}

impl Default for Media {
    fn default() -> Self {
        Self {
            directory: None,
            max_upload_size: 50 * 1024 * 1024,
            user_quota: None,
            freeze_legacy_endpoints: true,
            max_pending_uploads: 5,
            pending_upload_expiry_secs: 24 * 60 * 60,
            max_image_pixels: 32_000_000,
            url_preview_enabled: false,
            url_preview_ip_allow: Vec::new(),
            ffmpeg_path: "ffmpeg".to_owned(),
            s3: None,
        }
    }
}

/// A contact of `/.well-known/matrix/support`: a role (`m.role.admin`,
/// `m.role.security` or another) and a Matrix id, an email address or both.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SupportContact {
    pub role: String,
    pub matrix_id: Option<OwnedUserId>,
    pub email_address: Option<String>,
}

/// Federation with other homeservers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Federation {
    /// Whether this server federates: serves the server-server API on its TLS listener
    /// and talks to other servers.
    pub enabled: bool,
    /// The address the federation listener binds (default: `address`).
    pub address: Option<IpAddr>,
    /// The port of the federation listener (HTTPS only).
    pub port: u16,
    /// The PEM certificate chain of the federation listener. Without one, a self-signed
    /// certificate is made in the database directory (other servers that check
    /// certificates will refuse it).
    pub tls_certificate: Option<PathBuf>,
    /// The PEM private key of `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
    /// Whether other servers' certificates are checked. Turn off only for tests.
    pub verify_certificates: bool,
    /// PEM files of certificate authorities trusted besides the usual public ones.
    pub trusted_ca_files: Vec<PathBuf>,
    /// Servers asked for another server's keys when that server cannot be reached
    /// itself (`/_matrix/key/v2/query`).
    pub trusted_key_servers: Vec<OwnedServerName>,
    /// How long an outgoing federation request may take, in seconds.
    pub request_timeout_secs: u64,
    /// Where other servers should send federation traffic for `server_name`, served as
    /// `m.server` at `/.well-known/matrix/server` on the client listener (e.g.
    /// `matrix.example.org:443`). Without it that path answers 404.
    pub well_known_server: Option<OwnedServerName>,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            enabled: false,
            address: None,
            port: 8448,
            tls_certificate: None,
            tls_private_key: None,
            verify_certificates: true,
            trusted_ca_files: Vec::new(),
            trusted_key_servers: Vec::new(),
            request_timeout_secs: 60,
            well_known_server: None,
        }
    }
}

/// Token-bucket rate limits.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RateLimits {
    /// Login attempts, per IP address.
    pub login: RateLimit,
    /// Registration attempts, per IP address.
    pub registration: RateLimit,
    /// Events sent, per user.
    pub message: RateLimit,
    /// Verification codes sent, per phone number or email address.
    pub verification_codes: RateLimit,
    /// Verification codes sent, per client IP address.
    pub verification_codes_per_ip: RateLimit,
}

/// One token bucket.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct RateLimit {
    /// Tokens refilled per second.
    pub per_second: f64,
    /// Bucket size: how many requests may come at once.
    pub burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".try_into().expect("valid server name"),
            address: IpAddr::from([127, 0, 0, 1]),
            port: 8008,
            database_path: PathBuf::from("./data"),
            database: Database::default(),
            allow_registration: false,
            allow_guest_access: false,
            registration_token: None,
            registration_shared_secret: None,
            max_request_size: 20 * 1024 * 1024,
            default_room_version: RoomVersionId::V11,
            refreshable_access_token_lifetime_secs: 300,
            sync_timeout_max_ms: 60_000,
            well_known_client: None,
            support_page: None,
            support_contacts: Vec::new(),
            log: "info".to_owned(),
            app_service_config_files: Vec::new(),
            rate_limits: RateLimits::default(),
            federation: Federation::default(),
            media: Media::default(),
            websocket: WebSocket::default(),
            push: Push::default(),
            presence: Presence::default(),
            turn: Turn::default(),
            rtc: Rtc::default(),
            delayed_events: DelayedEvents::default(),
            threepids: ThreePids::default(),
            identity: Identity::default(),
            retention: Retention::default(),
            stories: Stories::default(),
            metrics: Metrics::default(),
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            login: RateLimit {
                per_second: 0.5,
                burst: 10,
            },
            registration: RateLimit {
                per_second: 0.2,
                burst: 10,
            },
            message: RateLimit {
                per_second: 50.0,
                burst: 200,
            },
            verification_codes: RateLimit {
                per_second: 1.0 / 60.0,
                burst: 3,
            },
            verification_codes_per_ip: RateLimit {
                per_second: 0.1,
                burst: 10,
            },
        }
    }
}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        Self::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|error| error.to_string())?;
        Ok(file.global)
    }

    /// The directory of media files.
    pub fn media_directory(&self) -> PathBuf {
        self.media
            .directory
            .clone()
            .unwrap_or_else(|| self.database_path.join("media"))
    }

    /// Where the search index is kept: `search` in the database directory. Deleting it
    /// (or starting with `--rebuild-search-index`) rebuilds it from the rooms.
    pub fn search_directory(&self) -> PathBuf {
        self.database_path.join("search")
    }

    /// The base URL clients are told to use.
    pub fn client_base_url(&self) -> String {
        self.well_known_client
            .clone()
            .unwrap_or_else(|| format!("http://{}:{}", self.address, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(table) = value {
            for (key, child) in table {
                let path = format!("{prefix}{key}");
                out.push(path.clone());
                keys(child, &format!("{path}."), out);
            }
        }
    }

    /// Every option of the struct is documented in the example file, and the example
    /// parses to the defaults.
    #[test]
    fn example_config_documents_every_option() {
        let example = include_str!("../conf/homeserver.toml");
        let uncommented: String = example
            .lines()
            .map(|line| line.strip_prefix("#= ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: toml::Value = toml::from_str(&uncommented).expect("example parses");
        let mut documented = Vec::new();
        keys(&parsed, "", &mut documented);
        let reparsed = Config::parse(&uncommented).expect("example with every option parses");
        let round_trip =
            toml::Value::try_from(ConfigFile { global: reparsed }).expect("serializes");
        let mut known = Vec::new();
        keys(&round_trip, "", &mut known);
        for key in &documented {
            assert!(
                known.contains(key),
                "{key} in conf/homeserver.toml is not an option"
            );
        }
        for key in &known {
            assert!(
                documented.contains(key),
                "{key} is not documented in conf/homeserver.toml"
            );
        }
        Config::parse(example).expect("the example as shipped parses");
    }
}
