//! Phone numbers and email addresses on accounts (third-party ids).
//!
//! A client proves it controls an address in a verification session: it asks for a code
//! (`requestToken`), this server makes 6 random digits, keeps only their salted SHA-256
//! and sends them by SMS or email; the user types the code back (`submitToken`). A
//! verified session then lets the client sign up with the address, add it to an
//! account or reset the password of the account it is on. Wrong codes count: after
//! [`max_attempts`](crate::config::ThreePids::max_attempts) the session is spent.
//!
//! An address belongs to at most one account. Addresses are kept normalised
//! ([`address`]): a phone number as E.164 digits, an email lowercased.

pub mod address;
pub mod senders;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use rand::Rng;
use ruma::{OwnedUserId, UserId, api::error::ErrorKind, thirdparty::Medium};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use self::address::Address;
use self::senders::{Outgoing, Sender};
use crate::{
    Error, Result,
    config::ThreePids as Config,
    service::{
        rate_limit::RateLimiter,
        users::{now_ms, token_hash},
    },
    storage::{Batch, Db, Keyspace, codec::Key},
};

/// What a verification session is for: what is checked before a code is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Signing up: the address must be free.
    Register,
    /// Adding the address to an account: it must be free.
    Add,
    /// Resetting a password: the address must be on an account.
    PasswordReset,
    /// Sharing the address for contact discovery (the identity API).
    Discovery,
}

/// A verification session as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Session {
    address: Address,
    purpose: Purpose,
    /// SHA-256 of the client's secret, hex.
    secret_hash: String,
    /// SHA-256 of `salt ‖ code`, hex; the code itself is never kept.
    code_hash: String,
    salt: String,
    send_attempt: u64,
    code_expires_ms: u64,
    attempts_left: u32,
    validated_ms: Option<u64>,
    /// Where the emailed link sends the user after verifying.
    next_link: Option<String>,
    /// Already used to sign up, add the address or reset a password.
    used: bool,
}

/// An address on an account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bound {
    pub user_id: OwnedUserId,
    pub added_ms: u64,
    pub validated_ms: u64,
    /// Whether others may find the user by it: `None` follows the user's choice for all
    /// their addresses (see the identity service).
    #[serde(default)]
    pub discoverable: Option<bool>,
}

/// What a verified session proved.
#[derive(Clone, Debug)]
pub struct Verified {
    pub address: Address,
    pub validated_ms: u64,
}

pub struct ThreePids {
    db: Arc<Db>,
    config: Config,
    server_name: ruma::OwnedServerName,
    /// Where clients send codes back: `/_palisade/client/v1/threepid/submit_token`.
    submit_url: String,
    sms: Option<Sender>,
    email: Option<Sender>,
    per_address: RateLimiter,
    per_ip: RateLimiter,
    /// Serialises changes to sessions and to who owns an address.
    writing: Mutex<()>,
    last_purge: Mutex<Instant>,
    /// The pepper of contact discovery's hashes (made once, kept in `meta`).
    pepper: String,
}

/// The path of the endpoint codes are submitted to (and emailed links open).
pub const SUBMIT_PATH: &str = "/_palisade/client/v1/threepid/submit_token";

impl ThreePids {
    pub fn new(db: Arc<Db>, config: &crate::config::Config) -> Result<Self> {
        let pepper = load_pepper(&db)?;
        Ok(Self {
            pepper,
            db,
            sms: Sender::sms(&config.threepids.sms).map_err(Error::internal)?,
            email: Sender::email(&config.threepids.email).map_err(Error::internal)?,
            submit_url: format!(
                "{}{SUBMIT_PATH}",
                config.client_base_url().trim_end_matches('/')
            ),
            server_name: config.server_name.clone(),
            per_address: RateLimiter::new(config.rate_limits.verification_codes),
            per_ip: RateLimiter::new(config.rate_limits.verification_codes_per_ip),
            config: config.threepids.clone(),
            writing: Mutex::new(()),
            last_purge: Mutex::new(Instant::now()),
        })
    }

    /// Whether codes can be sent to this medium.
    pub fn offers(&self, medium: &Medium) -> bool {
        self.sender(medium).is_some()
    }

    /// Whether signing up needs a verified address.
    pub fn required_for_registration(&self) -> bool {
        self.config.require_for_registration
    }

    /// The URL codes are submitted to.
    pub fn submit_url(&self) -> &str {
        &self.submit_url
    }

    fn sender(&self, medium: &Medium) -> Option<&Sender> {
        match medium {
            Medium::Msisdn => self.sms.as_ref(),
            Medium::Email => self.email.as_ref(),
            _ => None,
        }
    }

    /// Opens a verification session for `address` and sends a code, or answers with the
    /// session a retry (same secret, address and `send_attempt`) already opened. A higher
    /// `send_attempt` sends a new code in the same session.
    pub fn request_code(
        &self,
        purpose: Purpose,
        address: &Address,
        client_secret: &str,
        send_attempt: u64,
        next_link: Option<String>,
        client_ip: &str,
    ) -> Result<String> {
        let Some(sender) = self.sender(&address.medium) else {
            return Err(Error::new(
                ErrorKind::ThreepidMediumNotSupported,
                match address.medium {
                    Medium::Msisdn => "This server does not verify phone numbers",
                    _ => "This server does not verify email addresses",
                },
            ));
        };
        let owner = self.owner(address)?;
        match purpose {
            Purpose::Register | Purpose::Add if owner.is_some() => {
                return Err(Error::new(
                    ErrorKind::ThreepidInUse,
                    "This address is already on an account",
                ));
            }
            Purpose::PasswordReset if owner.is_none() => {
                return Err(Error::new(
                    ErrorKind::ThreepidNotFound,
                    "This address is not on any account",
                ));
            }
            _ => {}
        }
        self.purge_now_and_then();
        let _writing = self.writing.lock();
        let index = index_key(purpose, address, client_secret);
        let existing: Option<(String, Session)> =
            match self.db.get(Keyspace::ThreepidSessionIndex, index.bytes())? {
                Some(sid) => {
                    let sid = String::from_utf8_lossy(&sid).into_owned();
                    self.session(&sid)?.map(|session| (sid, session))
                }
                None => None,
            };
        if let Some((sid, session)) = &existing
            && send_attempt <= session.send_attempt
        {
            return Ok(sid.clone());
        }
        self.per_address
            .check(&format!("{}:{}", address.medium_str(), address.address))?;
        self.per_ip.check(client_ip)?;

        let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
        let salt = super::users::random_string(16);
        let sid = match &existing {
            Some((sid, _)) => sid.clone(),
            None => super::users::random_string(24),
        };
        let session = Session {
            address: address.clone(),
            purpose,
            secret_hash: token_hash(client_secret),
            code_hash: code_hash(&salt, &code),
            salt,
            send_attempt,
            code_expires_ms: now_ms() + self.config.code_lifetime_secs * 1000,
            attempts_left: self.config.max_attempts,
            validated_ms: None,
            next_link,
            used: false,
        };
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::ThreepidSessions,
            sid.as_bytes().to_vec(),
            &session,
        );
        batch.put(
            Keyspace::ThreepidSessionIndex,
            index.bytes().to_vec(),
            sid.as_bytes().to_vec(),
        );
        self.db.write(batch)?;
        sender.send(self.outgoing(address, &sid, client_secret, &code));
        tracing::info!(
            medium = address.medium_str(),
            ?purpose,
            "verification code sent"
        );
        Ok(sid)
    }

    /// The message carrying a code: a text, or a mail with the code and a link.
    fn outgoing(&self, address: &Address, sid: &str, secret: &str, code: &str) -> Outgoing {
        let server_name = self.server_name.as_str();
        let text = match address.medium {
            Medium::Msisdn => senders::fill(
                &self.config.sms.message,
                &[("code", code), ("server_name", server_name)],
            ),
            _ => {
                let link = format!(
                    "{}?sid={}&client_secret={}&token={code}",
                    self.submit_url,
                    encode(sid),
                    encode(secret),
                );
                format!(
                    "Your {server_name} verification code is {code}.\n\n\
                     Or open this link to verify your address:\n{link}\n\n\
                     If you did not ask for this, ignore this mail.\n"
                )
            }
        };
        Outgoing {
            to: address.display(),
            code: code.to_owned(),
            subject: senders::fill(&self.config.email.subject, &[("server_name", server_name)]),
            text,
        }
    }

    /// Checks a code the user typed. Returns where the session's link sends the user.
    ///
    /// Errors, as the identity service API gives them: an unknown session or wrong
    /// secret `M_INVALID_PARAM`, a wrong code `M_TOKEN_INCORRECT`, a code past its time
    /// `M_SESSION_EXPIRED`, a session out of attempts `M_LIMIT_EXCEEDED`.
    pub fn submit_code(
        &self,
        sid: &str,
        client_secret: &str,
        code: &str,
    ) -> Result<Option<String>> {
        let _writing = self.writing.lock();
        let Some(mut session) = self.session(sid)? else {
            return Err(Error::invalid_param("Unknown verification session"));
        };
        if !secret_matches(&session, client_secret) {
            return Err(Error::invalid_param("Unknown verification session"));
        }
        if session.validated_ms.is_some() {
            return Ok(session.next_link);
        }
        if session.attempts_left == 0 {
            return Err(Error::new(
                ErrorKind::LimitExceeded(Default::default()),
                "Too many wrong codes: ask for a new one",
            ));
        }
        if now_ms() > session.code_expires_ms {
            return Err(Error::custom(
                http::StatusCode::BAD_REQUEST,
                "M_SESSION_EXPIRED",
                "The code has expired: ask for a new one",
                serde_json::Value::Null,
            ));
        }
        let typed = code_hash(&session.salt, code.trim());
        if !bool::from(typed.as_bytes().ct_eq(session.code_hash.as_bytes())) {
            session.attempts_left -= 1;
            self.put_session(sid, &session)?;
            return Err(Error::new(
                ErrorKind::TokenIncorrect,
                "The code is incorrect",
            ));
        }
        session.validated_ms = Some(now_ms());
        self.put_session(sid, &session)?;
        Ok(session.next_link)
    }

    /// The address a verified, unused session proved, or `M_THREEPID_AUTH_FAILED`.
    pub fn verified(&self, sid: &str, client_secret: &str) -> Result<Verified> {
        let failed = |message: &'static str| Error::new(ErrorKind::ThreepidAuthFailed, message);
        let Some(session) = self.session(sid)? else {
            return Err(failed("Unknown verification session"));
        };
        if !secret_matches(&session, client_secret) {
            return Err(failed("Unknown verification session"));
        }
        let Some(validated_ms) = session.validated_ms else {
            return Err(failed("The address has not been verified yet"));
        };
        if session.used {
            return Err(failed("This verification has been used already"));
        }
        if now_ms() > validated_ms + self.config.validated_lifetime_secs * 1000 {
            return Err(failed("The verification has expired"));
        }
        Ok(Verified {
            address: session.address,
            validated_ms,
        })
    }

    /// Marks a verified session used, so it cannot serve twice.
    pub fn use_session(&self, sid: &str) -> Result<()> {
        let _writing = self.writing.lock();
        if let Some(mut session) = self.session(sid)? {
            session.used = true;
            self.put_session(sid, &session)?;
        }
        Ok(())
    }

    /// The account an address is on.
    pub fn owner(&self, address: &Address) -> Result<Option<OwnedUserId>> {
        Ok(self.binding(address)?.map(|bound| bound.user_id))
    }

    /// The binding of an address to its account.
    pub fn binding(&self, address: &Address) -> Result<Option<Bound>> {
        Ok(self
            .db
            .get_json(Keyspace::ThreepidOwners, &owner_key(address))?)
    }

    /// Puts a verified address on `user`'s account; `M_THREEPID_IN_USE` if it is on
    /// another's.
    pub fn bind(&self, user_id: &UserId, verified: &Verified) -> Result<()> {
        let _writing = self.writing.lock();
        let address = &verified.address;
        if let Some(bound) = self.binding(address)? {
            if bound.user_id == user_id {
                return Ok(());
            }
            return Err(Error::new(
                ErrorKind::ThreepidInUse,
                "This address is already on an account",
            ));
        }
        let bound = Bound {
            user_id: user_id.to_owned(),
            added_ms: now_ms(),
            validated_ms: verified.validated_ms,
            discoverable: None,
        };
        let mut batch = self.db.batch();
        self.stage_binding(&mut batch, address, Some(&bound));
        self.db.write(batch)?;
        tracing::info!(%user_id, medium = address.medium_str(), "address added to an account");
        Ok(())
    }

    /// Takes an address off `user`'s account; whether it was on it.
    pub fn unbind(&self, user_id: &UserId, address: &Address) -> Result<bool> {
        let _writing = self.writing.lock();
        match self.binding(address)? {
            Some(bound) if bound.user_id == user_id => {
                let mut batch = self.db.batch();
                self.stage_binding(&mut batch, address, None);
                self.db.write(batch)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Sets whether others may find `user` by one of their addresses; whether it is
    /// theirs.
    pub fn set_discoverable(
        &self,
        user_id: &UserId,
        address: &Address,
        discoverable: bool,
    ) -> Result<bool> {
        let _writing = self.writing.lock();
        match self.binding(address)? {
            Some(mut bound) if bound.user_id == user_id => {
                bound.discoverable = Some(discoverable);
                let mut batch = self.db.batch();
                self.stage_binding(&mut batch, address, Some(&bound));
                self.db.write(batch)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The addresses on `user`'s account.
    pub fn of_user(&self, user_id: &UserId) -> Result<Vec<(Address, Bound)>> {
        let prefix = Key::new().str(user_id.as_str());
        let mut addresses = Vec::new();
        for (_, value) in self
            .db
            .scan_prefix(Keyspace::UserThreepids, prefix.bytes())?
        {
            let address: Address = crate::storage::codec::decode_json(&value)?;
            if let Some(bound) = self.binding(&address)?
                && bound.user_id == user_id
            {
                addresses.push((address, bound));
            }
        }
        Ok(addresses)
    }

    /// Takes every address off a deactivated account.
    pub fn unbind_all(&self, user_id: &UserId) -> Result<()> {
        for (address, _) in self.of_user(user_id)? {
            self.unbind(user_id, &address)?;
        }
        Ok(())
    }

    /// The pepper clients mix into the hashes they look up.
    pub fn pepper(&self) -> &str {
        &self.pepper
    }

    /// The address (on an account) whose lookup hash is `hash`.
    pub fn by_hash(&self, hash: &str) -> Result<Option<Address>> {
        Ok(self
            .db
            .get_json(Keyspace::ThreepidHashes, hash.as_bytes())?)
    }

    /// Discovery's hash of an address: unpadded URL-safe base64 of
    /// SHA-256(`address medium pepper`), as the identity service API defines it.
    pub fn lookup_hash(&self, address: &Address) -> String {
        use base64::Engine as _;
        let text = format!(
            "{} {} {}",
            address.address,
            address.medium_str(),
            self.pepper
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
    }

    /// The owner, kept three ways: `address → Bound`, `user ‖ address → address` and
    /// `lookup hash → address`.
    fn stage_binding(&self, batch: &mut Batch, address: &Address, bound: Option<&Bound>) {
        let owner_key = owner_key(address);
        let hash = self.lookup_hash(address).into_bytes();
        let user_key = |user_id: &UserId| {
            Key::new()
                .str(user_id.as_str())
                .str(address.medium_str())
                .str(&address.address)
        };
        match bound {
            Some(bound) => {
                batch.put_json(Keyspace::ThreepidOwners, owner_key, bound);
                batch.put_json(Keyspace::ThreepidHashes, hash, address);
                batch.put_json(
                    Keyspace::UserThreepids,
                    user_key(&bound.user_id).bytes().to_vec(),
                    address,
                );
            }
            None => {
                if let Ok(Some(old)) = self.binding(address) {
                    batch.delete(
                        Keyspace::UserThreepids,
                        user_key(&old.user_id).bytes().to_vec(),
                    );
                }
                batch.delete(Keyspace::ThreepidOwners, owner_key);
                batch.delete(Keyspace::ThreepidHashes, hash);
            }
        }
    }

    fn session(&self, sid: &str) -> Result<Option<Session>> {
        Ok(self
            .db
            .get_json(Keyspace::ThreepidSessions, sid.as_bytes())?)
    }

    fn put_session(&self, sid: &str, session: &Session) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::ThreepidSessions, sid.as_bytes().to_vec(), session);
        Ok(self.db.write(batch)?)
    }

    /// Forgets sessions that can no longer be used, at most every ten minutes.
    fn purge_now_and_then(&self) {
        {
            let mut last = self.last_purge.lock();
            if last.elapsed() < Duration::from_secs(600) {
                return;
            }
            *last = Instant::now();
        }
        if let Err(error) = self.purge() {
            tracing::warn!(%error, "could not forget old verification sessions");
        }
    }

    fn purge(&self) -> Result<()> {
        let _writing = self.writing.lock();
        let now = now_ms();
        let lifetime = self.config.validated_lifetime_secs * 1000;
        let mut batch = self.db.batch();
        let mut stale = Vec::new();
        for (key, value) in self.db.scan_prefix(Keyspace::ThreepidSessions, &[])? {
            let session: Session = crate::storage::codec::decode_json(&value)?;
            let usable_until = match session.validated_ms {
                Some(validated) => validated + lifetime,
                None => session.code_expires_ms,
            };
            if now > usable_until {
                batch.delete(Keyspace::ThreepidSessions, key.clone());
                stale.push(key);
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        for (key, sid) in self.db.scan_prefix(Keyspace::ThreepidSessionIndex, &[])? {
            if stale.contains(&sid) {
                batch.delete(Keyspace::ThreepidSessionIndex, key);
            }
        }
        self.db.write(batch)?;
        Ok(())
    }
}

/// The discovery pepper, made on first use.
fn load_pepper(db: &Db) -> Result<String> {
    const KEY: &[u8] = b"identity_pepper";
    if let Some(pepper) = db.get(Keyspace::Meta, KEY)? {
        return Ok(String::from_utf8_lossy(&pepper).into_owned());
    }
    let pepper = super::users::random_string(16);
    let mut batch = db.batch();
    batch.put(Keyspace::Meta, KEY.to_vec(), pepper.clone().into_bytes());
    db.write(batch)?;
    Ok(pepper)
}

fn secret_matches(session: &Session, client_secret: &str) -> bool {
    let given = token_hash(client_secret);
    bool::from(given.as_bytes().ct_eq(session.secret_hash.as_bytes()))
}

fn index_key(purpose: Purpose, address: &Address, client_secret: &str) -> Key {
    let purpose = serde_json::to_string(&purpose).unwrap_or_default();
    Key::new()
        .str(&token_hash(client_secret))
        .str(&purpose)
        .str(address.medium_str())
        .str(&address.address)
}

fn owner_key(address: &Address) -> Vec<u8> {
    Key::new()
        .str(address.medium_str())
        .str(&address.address)
        .bytes()
        .to_vec()
}

fn code_hash(salt: &str, code: &str) -> String {
    token_hash(&format!("{salt}{code}"))
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
