//! Contact discovery: the identity service API served by this server, over the verified
//! addresses of its users who allow it.
//!
//! A client registers with an OpenID token of this server and gets an identity token,
//! accepts the terms (if any), then looks up hashes of its address book: SHA-256 of
//! `address medium pepper`, or the addresses in clear (`none`). An address answers with
//! its user only if it is verified on an account and the user lets others find them by
//! it: their choice for that address (bind, unbind), else their choice for all their
//! addresses (the `org.palisade.discovery` account data), else the server's default.

use std::sync::Arc;

use ruma::{OwnedUserId, UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    config::Identity as Config,
    service::{
        account_data::AccountData,
        rate_limit::RateLimiter,
        threepids::{Address, ThreePids},
        users::{Users, now_ms, random_string, token_hash},
    },
    storage::{Db, Keyspace},
};

/// The account data a user sets to be found (or not) by their addresses.
pub const DISCOVERY: &str = "org.palisade.discovery";

#[derive(Serialize, Deserialize)]
struct IdentityToken {
    user_id: OwnedUserId,
    created_ms: u64,
}

/// A lookup algorithm of the identity API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// `address medium` in clear.
    None,
    /// The peppered SHA-256 of `address medium pepper`.
    Sha256,
}

pub struct Identity {
    db: Arc<Db>,
    threepids: Arc<ThreePids>,
    account_data: Arc<AccountData>,
    users: Arc<Users>,
    config: Config,
    server_name: ruma::OwnedServerName,
    lookups: RateLimiter,
    /// For checking other servers' users' OpenID tokens, when federation is on.
    federation: Option<Arc<palisade_federation::FederationClient>>,
}

impl Identity {
    pub fn new(
        db: Arc<Db>,
        threepids: Arc<ThreePids>,
        account_data: Arc<AccountData>,
        users: Arc<Users>,
        federation: Option<Arc<palisade_federation::FederationClient>>,
        config: &crate::config::Config,
    ) -> Self {
        Self {
            federation,
            db,
            threepids,
            account_data,
            users,
            lookups: RateLimiter::new(crate::config::RateLimit {
                per_second: config.identity.lookups_per_second,
                burst: config.identity.lookup_burst,
            }),
            config: config.identity.clone(),
            server_name: config.server_name.clone(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Trades an OpenID token for an identity token: one of this server's, or, with
    /// federation on, one another server vouches for at its `/openid/userinfo`.
    pub async fn register(&self, openid_token: &str, server_name: &str) -> Result<String> {
        let unknown = || {
            Error::new(
                ErrorKind::Unauthorized,
                "The OpenID token is unknown or expired",
            )
        };
        let user_id = if server_name == self.server_name.as_str() {
            self.users.openid_user(openid_token)?.ok_or_else(unknown)?
        } else {
            self.remote_openid_user(openid_token, server_name).await?
        };
        let token = random_string(32);
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::IdentityTokens,
            token_key(&token),
            &IdentityToken {
                user_id,
                created_ms: now_ms(),
            },
        );
        self.db.write(batch)?;
        Ok(token)
    }

    /// The user another server says an OpenID token of its stands for.
    async fn remote_openid_user(&self, token: &str, server_name: &str) -> Result<OwnedUserId> {
        let Some(federation) = &self.federation else {
            return Err(Error::forbidden(
                "This identity service serves the users of its own homeserver",
            ));
        };
        let server = ruma::OwnedServerName::try_from(server_name)
            .map_err(|_| Error::invalid_param("Invalid matrix_server_name"))?;
        let request =
            ruma::api::federation::openid::get_openid_userinfo::v1::Request::new(token.to_owned());
        let answer = federation.send(&server, request).await.map_err(|error| {
            tracing::debug!(%server, %error, "an OpenID token was not vouched for");
            Error::new(
                ErrorKind::Unauthorized,
                "The OpenID token is unknown or expired",
            )
        })?;
        if answer.sub.server_name() != server {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "The server vouched for a user of another server",
            ));
        }
        Ok(answer.sub)
    }

    /// The user an identity token stands for: 401 `M_UNAUTHORIZED` otherwise.
    pub fn authenticate(&self, token: Option<&str>) -> Result<OwnedUserId> {
        let record: Option<IdentityToken> = match token {
            Some(token) => self
                .db
                .get_json(Keyspace::IdentityTokens, &token_key(token))?,
            None => None,
        };
        let record =
            record.ok_or_else(|| Error::new(ErrorKind::Unauthorized, "Unknown identity token"))?;
        let local = record.user_id.server_name() == self.server_name;
        if local && !self.users.is_active(&record.user_id)? {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "Unknown identity token",
            ));
        }
        Ok(record.user_id)
    }

    /// Ends an identity token.
    pub fn logout(&self, token: &str) -> Result<()> {
        let mut batch = self.db.batch();
        batch.delete(Keyspace::IdentityTokens, token_key(token));
        Ok(self.db.write(batch)?)
    }

    /// The terms, as `GET /terms` lists them.
    pub fn terms(&self) -> serde_json::Value {
        let mut policies = serde_json::Map::new();
        if let Some(url) = &self.config.terms_url {
            policies.insert(
                "terms_of_service".to_owned(),
                serde_json::json!({
                    "version": self.config.terms_version,
                    "en": { "name": "Terms of service", "url": url },
                }),
            );
        }
        serde_json::json!({ "policies": policies })
    }

    /// Records the terms a user accepted (those of this service among `urls`).
    pub fn accept_terms(&self, user_id: &UserId, urls: &[String]) -> Result<()> {
        let Some(url) = &self.config.terms_url else {
            return Ok(());
        };
        if !urls.contains(url) {
            return Ok(());
        }
        let accepted = vec![format!("{url}#{}", self.config.terms_version)];
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::IdentityTerms,
            user_id.as_str().as_bytes().to_vec(),
            &accepted,
        );
        Ok(self.db.write(batch)?)
    }

    /// 403 `M_TERMS_NOT_SIGNED` until the user accepted the current terms.
    pub fn require_terms(&self, user_id: &UserId) -> Result<()> {
        let Some(url) = &self.config.terms_url else {
            return Ok(());
        };
        let accepted: Vec<String> = self
            .db
            .get_json(Keyspace::IdentityTerms, user_id.as_str().as_bytes())?
            .unwrap_or_default();
        if accepted.contains(&format!("{url}#{}", self.config.terms_version)) {
            return Ok(());
        }
        Err(Error::custom(
            http::StatusCode::FORBIDDEN,
            "M_TERMS_NOT_SIGNED",
            "Accept the identity service's terms first",
            serde_json::Value::Null,
        ))
    }

    /// The pepper to hash with, and the algorithms served.
    pub fn pepper(&self) -> &str {
        self.threepids.pepper()
    }

    /// Finds the users of `addresses` (hashes or `address medium` in clear, per
    /// `algorithm`) that may be found: a map from the address as asked to the user.
    pub fn lookup(
        &self,
        user_id: &UserId,
        algorithm: Algorithm,
        addresses: &[String],
    ) -> Result<Vec<(String, OwnedUserId)>> {
        let count = u32::try_from(addresses.len()).unwrap_or(u32::MAX);
        self.lookups.check_many(user_id.as_str(), count)?;
        let mut found = Vec::new();
        for asked in addresses {
            let address = match algorithm {
                Algorithm::Sha256 => self.threepids.by_hash(asked)?,
                Algorithm::None => clear_address(asked),
            };
            let Some(address) = address else { continue };
            let Some(bound) = self.threepids.binding(&address)? else {
                continue;
            };
            if self.discoverable(&bound.user_id, bound.discoverable)? {
                found.push((asked.clone(), bound.user_id));
            }
        }
        Ok(found)
    }

    /// Whether a user may be found by an address, given their choice for it.
    fn discoverable(&self, user_id: &UserId, choice: Option<bool>) -> Result<bool> {
        if let Some(choice) = choice {
            return Ok(choice);
        }
        let content = self.account_data.get(user_id, None, DISCOVERY)?;
        Ok(content
            .as_ref()
            .and_then(|content| content.get("discoverable"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(self.config.discoverable_by_default))
    }
}

/// `address medium` as the `none` algorithm sends it.
fn clear_address(asked: &str) -> Option<Address> {
    let (address, medium) = asked.rsplit_once(' ')?;
    Address::parse(&medium.into(), address).ok()
}

/// The key an identity token is kept under.
fn token_key(token: &str) -> Vec<u8> {
    token_hash(token).into_bytes()
}
