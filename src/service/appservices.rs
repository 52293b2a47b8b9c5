//! The application services (bridges) registered in the configuration, read at start
//! with the `palisade-appservice` crate (the registration format and its namespaces).
//! Their exclusive user namespaces are kept from registration, and each one's own user
//! (its `sender_localpart`) exists from the start.

use std::{collections::HashSet, path::PathBuf};

use palisade_appservice::Appservice;
use ruma::{ServerName, UserId};

use crate::{
    Error, Result,
    service::{push::rules::Rulesets, users::Users},
};

pub struct Appservices {
    registered: Vec<Appservice>,
}

impl Appservices {
    /// Reads every registration file; the first that cannot be read or is invalid, or
    /// that repeats another's id, token or user, is the error.
    pub fn load(paths: &[PathBuf]) -> Result<Self> {
        let registered = paths
            .iter()
            .map(|path| {
                Appservice::load(path).map_err(|error| {
                    Error::internal(format!("application service {}: {error}", path.display()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let appservices = Self::new(registered)?;
        for service in &appservices.registered {
            tracing::info!(id = %service.registration.id, "application service registered");
        }
        Ok(appservices)
    }

    /// The registrations, checked against one another: each id, each token (whether
    /// `as_token` or `hs_token`) and each service's own user belongs to one only, or a
    /// token would name two services and a request could not tell which.
    pub fn new(registered: Vec<Appservice>) -> Result<Self> {
        let mut ids = HashSet::new();
        let mut tokens = HashSet::new();
        let mut senders = HashSet::new();
        for service in &registered {
            let registration = &service.registration;
            let repeated = |what: &str| {
                Error::internal(format!(
                    "application service {}: its {what} is another registration's too",
                    registration.id
                ))
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
        }
        Ok(Self { registered })
    }

    /// Makes each service's own user (`sender_localpart`) if it does not exist yet: a
    /// bridge acts as it before it registers anyone.
    pub fn create_senders(
        &self,
        server_name: &ServerName,
        users: &Users,
        push_rules: &Rulesets,
    ) -> Result<()> {
        for service in &self.registered {
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

    /// Whether an application service claims `user_id` exclusively: its sender, or a
    /// user in one of its exclusive namespaces.
    pub fn claims_user(&self, user_id: &UserId) -> bool {
        self.registered
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
             sender_localpart: {sender}\nnamespaces:\n  users: []\n  aliases: []\n  rooms: []\n"
        ))
        .unwrap()
    }

    #[test]
    fn ids_tokens_and_users_belong_to_one_registration() {
        let ok = Appservices::new(vec![
            registration("a", "ta", "ha", "abot"),
            registration("b", "tb", "hb", "bbot"),
        ]);
        assert!(ok.is_ok());
        for (second, what) in [
            (registration("a", "tb", "hb", "bbot"), "id"),
            (registration("b", "ta", "hb", "bbot"), "token"),
            // One service's hs_token as another's as_token.
            (registration("b", "ha", "hb", "bbot"), "token"),
            (registration("b", "tb", "hb", "abot"), "sender_localpart"),
        ] {
            let error = Appservices::new(vec![registration("a", "ta", "ha", "abot"), second])
                .err()
                .expect("a repeated registration was taken");
            assert!(error.to_string().contains(what), "{what}: {error}");
        }
    }
}
