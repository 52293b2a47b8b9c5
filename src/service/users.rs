//! Accounts, devices, tokens and profiles.
//!
//! Tokens are random strings from the operating system's CSPRNG; only their SHA-256 is
//! stored, and a token is looked up by its hash, so no secret is ever compared byte by
//! byte. Passwords are hashed with argon2id on the blocking pool, a few at a time.

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use rand::{Rng, distr::Alphanumeric};
use ruma::{
    DeviceId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedUserId, UserId, api::error::ErrorKind,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    Error, Result,
    service::token_cache::{Resolved, TokenCache},
    storage::{Batch, Db, Keyspace, codec::Key},
};

/// The authenticated user and device behind a request (what an access token stands for).
#[derive(Clone, Debug)]
pub struct Sender {
    pub user_id: OwnedUserId,
    /// The device: always for a user's own token; for an application service acting as
    /// a user, only the one it names (`device_id` in the query).
    pub device_id: Option<OwnedDeviceId>,
    /// A guest account, limited to what the spec lets guests do.
    pub guest: bool,
    /// The application service acting (its registration id), if the token was one's.
    pub appservice: Option<Arc<str>>,
    /// Whether the rate limits apply: to users, and to an application service's users
    /// only when its registration asks for it.
    pub rate_limited: bool,
}

impl Sender {
    /// A user acting with their own token on one of their devices.
    pub fn user(user_id: OwnedUserId, device_id: OwnedDeviceId, guest: bool) -> Self {
        Self {
            user_id,
            device_id: Some(device_id),
            guest,
            appservice: None,
            rate_limited: true,
        }
    }

    /// The device a request acts on. Only an application service may leave it out, and
    /// then it must name one to upload keys, set a pusher or log out.
    pub fn device(&self) -> Result<&DeviceId> {
        self.device_id.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::MissingParam,
                "This request acts on a device: name one with `device_id`",
            )
        })
    }

    /// What a transaction id is unique within: the device, or for an application
    /// service acting without one, the service.
    pub fn txn_scope(&self) -> OwnedDeviceId {
        match (&self.device_id, &self.appservice) {
            (Some(device), _) => device.clone(),
            (None, Some(appservice)) => {
                OwnedDeviceId::from(format!("\u{1}appservice {appservice}"))
            }
            (None, None) => OwnedDeviceId::from("\u{1}"),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UserRecord {
    pub password_hash: Option<String>,
    pub created_ts: u64,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub admin: bool,
    /// A guest account (`kind=guest` registration), until upgraded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub access_token_hash: String,
    pub refresh_token_hash: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub expires_at_ms: Option<u64>,
    /// Issued to a guest account.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
}

/// What a successful login or registration hands the client.
pub struct Session {
    pub device_id: OwnedDeviceId,
    /// Whether the session made a new device (rather than logging in again on one).
    pub new_device: bool,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

pub struct Users {
    db: Arc<Db>,
    refreshable_lifetime_ms: u64,
    tokens: TokenCache,
}

pub fn now_ms() -> u64 {
    MilliSecondsSinceUnixEpoch::now().get().into()
}

pub fn random_string(length: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

/// SHA-256 of a secret, as hex: how tokens, client secrets and codes are kept.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn device_key(user_id: &UserId, device_id: &DeviceId) -> Key {
    Key::new().str(user_id.as_str()).str(device_id.as_str())
}

impl Users {
    pub fn new(db: Arc<Db>, refreshable_lifetime_ms: u64) -> Self {
        Self {
            db,
            refreshable_lifetime_ms,
            tokens: TokenCache::default(),
        }
    }

    pub fn get(&self, user_id: &UserId) -> Result<Option<UserRecord>> {
        Ok(self.db.get_json(Keyspace::Users, user_id.as_bytes())?)
    }

    pub fn exists(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.db.contains(Keyspace::Users, user_id.as_bytes())?)
    }

    pub fn is_active(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.get(user_id)?.is_some_and(|user| !user.deactivated))
    }

    /// Creates an account. The caller has checked that the id is free.
    pub async fn create(&self, user_id: &UserId, password: Option<&str>) -> Result<()> {
        let password_hash = match password {
            Some(password) => Some(hash_password(password.to_owned()).await?),
            None => None,
        };
        self.write_new_user(user_id, password_hash)
    }

    /// Writes a new account's record and its display name (its localpart).
    fn write_new_user(&self, user_id: &UserId, password_hash: Option<String>) -> Result<()> {
        let record = UserRecord {
            password_hash,
            created_ts: now_ms(),
            ..Default::default()
        };
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Users, user_id.as_bytes(), &record);
        let localpart = user_id.localpart().to_owned();
        batch.put_json(
            Keyspace::Profiles,
            Key::new().str(user_id.as_str()).str("displayname"),
            &serde_json::Value::String(localpart),
        );
        self.db.write(batch)?;
        Ok(())
    }

    /// Creates an account nobody can log in to with a password (an application
    /// service's own user).
    pub fn create_passwordless(&self, user_id: &UserId) -> Result<()> {
        self.write_new_user(user_id, None)
    }

    /// Creates a guest account: no password, limited to what the spec lets guests do.
    pub fn create_guest(&self, user_id: &UserId) -> Result<()> {
        let record = UserRecord {
            created_ts: now_ms(),
            guest: true,
            ..Default::default()
        };
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Users, user_id.as_bytes(), &record);
        self.db.write(batch)?;
        Ok(())
    }

    /// Makes a guest account a full one with `password`, keeping its user id and so its
    /// rooms. Its guest sessions stay limited; the caller issues a new one.
    pub async fn upgrade_guest(&self, user_id: &UserId, password: Option<&str>) -> Result<()> {
        let mut record = self
            .get(user_id)?
            .filter(|user| user.guest)
            .ok_or_else(|| Error::forbidden("Not a guest account"))?;
        record.guest = false;
        record.password_hash = match password {
            Some(password) => Some(hash_password(password.to_owned()).await?),
            None => None,
        };
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Users, user_id.as_bytes(), &record);
        self.db.write(batch)?;
        Ok(())
    }

    /// Checks a password; a missing user, a deactivated one or a wrong password all fail
    /// the same way except deactivation, which the spec reports as `M_USER_DEACTIVATED`.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let forbidden = || Error::forbidden("Invalid username or password");
        let Some(record) = self.get(user_id)? else {
            // Spend the same time as a real check so timing does not reveal accounts.
            let _ = verify_password(password.to_owned(), DUMMY_HASH.to_owned()).await;
            return Err(forbidden());
        };
        let Some(hash) = record.password_hash else {
            return Err(forbidden());
        };
        if !verify_password(password.to_owned(), hash).await? {
            return Err(forbidden());
        }
        if record.deactivated {
            return Err(Error::new(
                ErrorKind::UserDeactivated,
                "This account is deactivated",
            ));
        }
        Ok(())
    }

    pub fn set_admin(&self, user_id: &UserId, admin: bool) -> Result<()> {
        let mut record = self
            .get(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        record.admin = admin;
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Users, user_id.as_bytes(), &record);
        self.db.write(batch)?;
        Ok(())
    }

    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let mut record = self
            .get(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        record.password_hash = Some(hash_password(password.to_owned()).await?);
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Users, user_id.as_bytes(), &record);
        self.db.write(batch)?;
        Ok(())
    }

    /// Marks the account deactivated and removes every device and token.
    pub fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let mut record = self
            .get(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        record.deactivated = true;
        record.password_hash = None;
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Users, user_id.as_bytes(), &record);
        for (device_id, _) in self.devices(user_id)? {
            self.stage_device_removal(&mut batch, user_id, &device_id)?;
        }
        self.db.write(batch)?;
        self.tokens.revoked();
        Ok(())
    }

    /// Whether `user_id` is a server administrator.
    pub fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.get(user_id)?.is_some_and(|user| user.admin))
    }

    /// Resolves an access token to its user and device.
    pub fn authenticate(&self, token: &str) -> Result<Sender> {
        let hash = token_hash(token);
        let resolved = match self.tokens.get(&hash) {
            Some(resolved) => resolved,
            None => {
                let generation = self.tokens.generation();
                let resolved = self.resolve(&hash)?;
                self.tokens.keep(&hash, resolved.clone(), generation);
                resolved
            }
        };
        if resolved
            .expires_at_ms
            .is_some_and(|expiry| expiry <= now_ms())
        {
            self.tokens.forget(&hash);
            return Err(Error::unknown_token(true));
        }
        Ok(resolved.sender)
    }

    /// What the records say of a token: its user and device, if the device still
    /// holds it.
    fn resolve(&self, hash: &str) -> Result<Resolved> {
        let record: TokenRecord = self
            .db
            .get_json(Keyspace::AccessTokens, hash.as_bytes())?
            .ok_or_else(|| Error::unknown_token(false))?;
        let device = self
            .device(&record.user_id, &record.device_id)?
            .ok_or_else(|| Error::unknown_token(false))?;
        if !bool::from(device.access_token_hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Err(Error::unknown_token(false));
        }
        Ok(Resolved {
            sender: Sender::user(record.user_id, record.device_id, record.guest),
            expires_at_ms: record.expires_at_ms,
        })
    }

    /// Tokens were revoked by a write made outside this service (see
    /// [`stage_device_removal`](Self::stage_device_removal)): call once it is written.
    pub fn tokens_revoked(&self) {
        self.tokens.revoked();
    }

    /// Creates a device (or replaces the tokens of an existing one) and returns its
    /// fresh credentials.
    pub fn create_session(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        refreshable: bool,
        client_ip: Option<String>,
    ) -> Result<Session> {
        let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase().into());
        let mut batch = self.db.batch();
        let existing = self.device(user_id, &device_id)?;
        if let Some(existing) = &existing {
            batch.delete(
                Keyspace::AccessTokens,
                existing.access_token_hash.as_bytes(),
            );
            if let Some(refresh) = &existing.refresh_token_hash {
                batch.delete(Keyspace::RefreshTokens, refresh.as_bytes());
            }
        }
        let guest = self.get(user_id)?.is_some_and(|user| user.guest);
        let mut session = self.issue_tokens(&mut batch, user_id, &device_id, refreshable, guest);
        session.new_device = existing.is_none();
        let record = DeviceRecord {
            display_name: display_name.or_else(|| {
                existing
                    .as_ref()
                    .and_then(|device| device.display_name.clone())
            }),
            access_token_hash: token_hash(&session.access_token),
            refresh_token_hash: session.refresh_token.as_deref().map(token_hash),
            last_seen_ip: client_ip,
            last_seen_ts: Some(now_ms()),
        };
        batch.put_json(Keyspace::Devices, device_key(user_id, &device_id), &record);
        self.db.write(batch)?;
        if existing.is_some() {
            self.tokens.revoked();
        }
        Ok(session)
    }

    fn issue_tokens(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device_id: &DeviceId,
        refreshable: bool,
        guest: bool,
    ) -> Session {
        let access_token = random_string(40);
        let expires_in_ms = refreshable.then_some(self.refreshable_lifetime_ms);
        let record = TokenRecord {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            expires_at_ms: expires_in_ms.map(|lifetime| now_ms() + lifetime),
            guest,
        };
        batch.put_json(
            Keyspace::AccessTokens,
            token_hash(&access_token).into_bytes(),
            &record,
        );
        let refresh_token = refreshable.then(|| random_string(40));
        if let Some(refresh) = &refresh_token {
            let record = TokenRecord {
                expires_at_ms: None,
                ..record
            };
            batch.put_json(
                Keyspace::RefreshTokens,
                token_hash(refresh).into_bytes(),
                &record,
            );
        }
        Session {
            new_device: false,
            device_id: device_id.to_owned(),
            access_token,
            refresh_token,
            expires_in_ms,
        }
    }

    /// Exchanges a refresh token for new tokens; the old pair stops working.
    pub fn refresh(&self, refresh_token: &str) -> Result<Session> {
        let hash = token_hash(refresh_token);
        let record: TokenRecord = self
            .db
            .get_json(Keyspace::RefreshTokens, hash.as_bytes())?
            .ok_or_else(|| Error::unknown_token(false))?;
        let mut device = self
            .device(&record.user_id, &record.device_id)?
            .ok_or_else(|| Error::unknown_token(false))?;
        let mut batch = self.db.batch();
        batch.delete(Keyspace::RefreshTokens, hash.as_bytes());
        batch.delete(Keyspace::AccessTokens, device.access_token_hash.as_bytes());
        let session = self.issue_tokens(
            &mut batch,
            &record.user_id,
            &record.device_id,
            true,
            record.guest,
        );
        device.access_token_hash = token_hash(&session.access_token);
        device.refresh_token_hash = session.refresh_token.as_deref().map(token_hash);
        batch.put_json(
            Keyspace::Devices,
            device_key(&record.user_id, &record.device_id),
            &device,
        );
        self.db.write(batch)?;
        self.tokens.revoked();
        Ok(session)
    }

    /// A single-use token for `m.login.token`, valid for `lifetime_ms`.
    pub fn create_login_token(&self, user_id: &UserId, lifetime_ms: u64) -> Result<String> {
        let token = random_string(32);
        let record = TokenRecord {
            user_id: user_id.to_owned(),
            device_id: "".into(),
            expires_at_ms: Some(now_ms() + lifetime_ms),
            guest: false,
        };
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::LoginTokens,
            token_hash(&token).into_bytes(),
            &record,
        );
        self.db.write(batch)?;
        Ok(token)
    }

    /// Consumes a login token, returning its user.
    pub fn consume_login_token(&self, token: &str) -> Result<OwnedUserId> {
        let hash = token_hash(token);
        let invalid = || Error::forbidden("Invalid or expired login token");
        let record: TokenRecord = self
            .db
            .get_json(Keyspace::LoginTokens, hash.as_bytes())?
            .ok_or_else(invalid)?;
        let mut batch = self.db.batch();
        batch.delete(Keyspace::LoginTokens, hash.as_bytes());
        self.db.write(batch)?;
        if record
            .expires_at_ms
            .is_some_and(|expiry| expiry <= now_ms())
        {
            return Err(invalid());
        }
        Ok(record.user_id)
    }

    /// An OpenID token for `user_id`: a third party (a widget, a call's media server)
    /// learns who the user is by asking this server's `/openid/userinfo` with it.
    pub fn create_openid_token(&self, user_id: &UserId, lifetime_ms: u64) -> Result<String> {
        let token = random_string(32);
        let record = TokenRecord {
            user_id: user_id.to_owned(),
            device_id: "".into(),
            expires_at_ms: Some(now_ms() + lifetime_ms),
            guest: false,
        };
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::OpenIdTokens,
            token_hash(&token).into_bytes(),
            &record,
        );
        self.db.write(batch)?;
        Ok(token)
    }

    /// The user an unexpired OpenID token vouches for.
    pub fn openid_user(&self, token: &str) -> Result<Option<OwnedUserId>> {
        let record: Option<TokenRecord> = self
            .db
            .get_json(Keyspace::OpenIdTokens, token_hash(token).as_bytes())?;
        Ok(record
            .filter(|record| record.expires_at_ms.is_none_or(|expiry| expiry > now_ms()))
            .map(|record| record.user_id))
    }

    pub fn device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceRecord>> {
        Ok(self
            .db
            .get_json(Keyspace::Devices, device_key(user_id, device_id).bytes())?)
    }

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<(OwnedDeviceId, DeviceRecord)>> {
        let prefix = Key::new().str(user_id.as_str());
        let mut out = Vec::new();
        for (key, value) in self.db.scan_prefix(Keyspace::Devices, prefix.bytes())? {
            let mut reader = crate::storage::codec::KeyReader::new(&key);
            reader.str()?;
            let device_id = OwnedDeviceId::from(reader.str()?);
            out.push((device_id, crate::storage::codec::decode_json(&value)?));
        }
        Ok(out)
    }

    /// Makes a device with no access token: one an application service acts on for its
    /// user (MSC4190), through its own token.
    pub fn create_tokenless_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> Result<()> {
        let record = DeviceRecord {
            display_name,
            last_seen_ts: Some(now_ms()),
            ..DeviceRecord::default()
        };
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Devices, device_key(user_id, device_id), &record);
        self.db.write(batch)?;
        Ok(())
    }

    pub fn rename_device(&self, user_id: &UserId, device_id: &DeviceId, name: &str) -> Result<()> {
        let mut device = self
            .device(user_id, device_id)?
            .ok_or_else(|| Error::not_found("No such device"))?;
        device.display_name = Some(name.to_owned());
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::Devices, device_key(user_id, device_id), &device);
        self.db.write(batch)?;
        Ok(())
    }

    /// Deletes a device and its tokens (logout).
    pub fn remove_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
        let mut batch = self.db.batch();
        self.stage_device_removal(&mut batch, user_id, device_id)?;
        self.db.write(batch)?;
        self.tokens.revoked();
        Ok(())
    }

    /// Adds the deletion of a device and its tokens to `batch`. The caller calls
    /// [`tokens_revoked`](Self::tokens_revoked) once the batch is written: until then
    /// the token may still be taken from memory.
    pub fn stage_device_removal(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<()> {
        if let Some(device) = self.device(user_id, device_id)? {
            batch.delete(Keyspace::AccessTokens, device.access_token_hash.as_bytes());
            if let Some(refresh) = &device.refresh_token_hash {
                batch.delete(Keyspace::RefreshTokens, refresh.as_bytes());
            }
            batch.delete(Keyspace::Devices, device_key(user_id, device_id));
        }
        Ok(())
    }

    pub fn profile_field(
        &self,
        user_id: &UserId,
        field: &str,
    ) -> Result<Option<serde_json::Value>> {
        let key = Key::new().str(user_id.as_str()).str(field);
        Ok(self.db.get_json(Keyspace::Profiles, key.bytes())?)
    }

    /// The display name and avatar a membership event of the user carries.
    pub fn member_profile(&self, user_id: &UserId) -> Result<(Option<String>, Option<String>)> {
        Ok((self.displayname(user_id)?, self.avatar_url(user_id)?))
    }

    pub fn displayname(&self, user_id: &UserId) -> Result<Option<String>> {
        Ok(self
            .profile_field(user_id, "displayname")?
            .and_then(|value| value.as_str().map(str::to_owned)))
    }

    pub fn avatar_url(&self, user_id: &UserId) -> Result<Option<String>> {
        Ok(self
            .profile_field(user_id, "avatar_url")?
            .and_then(|value| value.as_str().map(str::to_owned)))
    }

    /// Every profile field of a user.
    pub fn profile(&self, user_id: &UserId) -> Result<serde_json::Map<String, serde_json::Value>> {
        let prefix = Key::new().str(user_id.as_str());
        let mut out = serde_json::Map::new();
        for (key, value) in self.db.scan_prefix(Keyspace::Profiles, prefix.bytes())? {
            let mut reader = crate::storage::codec::KeyReader::new(&key);
            reader.str()?;
            out.insert(
                reader.str()?.to_owned(),
                crate::storage::codec::decode_json(&value)?,
            );
        }
        Ok(out)
    }

    /// Sets (or with `None`, removes) a profile field.
    pub fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<&serde_json::Value>,
    ) -> Result<()> {
        let key = Key::new().str(user_id.as_str()).str(field);
        let mut batch = self.db.batch();
        match value {
            Some(value) => batch.put_json(Keyspace::Profiles, key, value),
            None => batch.delete(Keyspace::Profiles, key),
        }
        self.db.write(batch)?;
        Ok(())
    }
}

/// A valid argon2 hash of a random password, checked against when the user is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$7mCRmNMo0w0P8Mkw5A3m1rU4kBv2n5aPSfYJpJ1Qy0o";

/// Hashes in progress at once. Each argon2 hash holds 19 MiB for its duration, so a
/// burst of registrations or logins queues here instead of multiplying that memory (and
/// the CPU it competes for) by the size of the burst.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
});

async fn hash_password(password: String) -> Result<String> {
    let _permit = HASHING.acquire().await.map_err(Error::internal)?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)?
}

async fn verify_password(password: String, hash: String) -> Result<bool> {
    let _permit = HASHING.acquire().await.map_err(Error::internal)?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(Error::internal)?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(Error::internal)?
}

/// Checks a requested localpart against the spec's grammar for new user ids.
pub fn validate_localpart(localpart: &str, server_name: &ruma::ServerName) -> Result<OwnedUserId> {
    let invalid = |why: &str| Error::new(ErrorKind::InvalidUsername, why.to_owned());
    if localpart.is_empty() {
        return Err(invalid("The username is empty"));
    }
    if !localpart.bytes().all(
        |byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
    ) {
        return Err(invalid(
            "User ids may only contain lowercase letters, digits and ._=-/+",
        ));
    }
    let user_id = format!("@{localpart}:{server_name}");
    if user_id.len() > 255 {
        return Err(invalid("The user id is longer than 255 bytes"));
    }
    OwnedUserId::try_from(user_id).map_err(|_| invalid("Invalid user id"))
}

/// A fresh random localpart for registrations that do not choose one.
pub fn random_localpart() -> String {
    random_string(12).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localparts_follow_the_grammar() {
        let server = ruma::server_name!("example.org");
        assert!(validate_localpart("alice.b_c=d-e/f+g", server).is_ok());
        assert!(validate_localpart("Alice", server).is_err());
        assert!(validate_localpart("", server).is_err());
        assert!(validate_localpart("a:b", server).is_err());
        assert!(validate_localpart(&"a".repeat(250), server).is_err());
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn token_hashes_are_stable_hex() {
        assert_eq!(token_hash("abc").len(), 64);
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
    }
}
