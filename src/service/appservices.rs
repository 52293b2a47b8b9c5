//! The application services (bridges) registered in the configuration, read at start
//! with the `palisade-appservice` crate (the registration format and its namespaces).
//! Their exclusive user namespaces are kept from registration.

use std::path::PathBuf;

use palisade_appservice::Appservice;
use ruma::UserId;

use crate::{Error, Result};

pub struct Appservices {
    registered: Vec<Appservice>,
}

impl Appservices {
    /// Reads every registration file; the first that cannot be read or is invalid is
    /// the error.
    pub fn load(paths: &[PathBuf]) -> Result<Self> {
        let registered = paths
            .iter()
            .map(|path| {
                Appservice::load(path).map_err(|error| {
                    Error::internal(format!("application service {}: {error}", path.display()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for service in &registered {
            tracing::info!(id = %service.registration.id, "application service registered");
        }
        Ok(Self { registered })
    }

    /// Whether an application service claims `user_id` exclusively: its sender, or a
    /// user in one of its exclusive namespaces.
    pub fn claims_user(&self, user_id: &UserId) -> bool {
        self.registered
            .iter()
            .any(|service| service.claims_exclusively(user_id))
    }
}
