//! Application services (bridges): their registration files and the namespaces they
//! claim. A registration is ruma's [`Registration`], read from the YAML file bridges
//! generate; [`Appservice`] compiles its namespace regexes once so matching a user id,
//! alias or room id is cheap.

pub mod client;

use std::path::Path;

use ruma::api::appservice::Namespace;
pub use ruma::api::appservice::Registration;

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid registration: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid namespace regex {regex:?}: {source}")]
    Regex { regex: String, source: regex::Error },
    #[error("invalid registration: {0}")]
    Invalid(&'static str),
}

/// One compiled namespace.
#[derive(Debug)]
struct CompiledNamespace {
    regex: regex::Regex,
    exclusive: bool,
}

/// The namespaces of one kind (users, aliases or rooms).
#[derive(Debug, Default)]
pub struct NamespaceSet {
    namespaces: Vec<CompiledNamespace>,
}

impl NamespaceSet {
    fn compile(namespaces: &[Namespace]) -> Result<Self, RegistrationError> {
        let namespaces = namespaces
            .iter()
            .map(|namespace| {
                // Namespaces match whole ids.
                let anchored = format!("^(?:{})$", namespace.regex);
                regex::Regex::new(&anchored)
                    .map(|regex| CompiledNamespace {
                        regex,
                        exclusive: namespace.exclusive,
                    })
                    .map_err(|source| RegistrationError::Regex {
                        regex: namespace.regex.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { namespaces })
    }

    /// Whether any namespace matches.
    pub fn matches(&self, id: &str) -> bool {
        self.namespaces
            .iter()
            .any(|namespace| namespace.regex.is_match(id))
    }

    /// Whether an exclusive namespace matches: nobody else may use the id.
    pub fn is_exclusive(&self, id: &str) -> bool {
        self.namespaces
            .iter()
            .any(|namespace| namespace.exclusive && namespace.regex.is_match(id))
    }
}

/// A registered application service.
#[derive(Debug)]
pub struct Appservice {
    pub registration: Registration,
    pub users: NamespaceSet,
    pub aliases: NamespaceSet,
    pub rooms: NamespaceSet,
    /// Whether it wants ephemeral events (typing, receipts, presence) in its
    /// transactions: `receive_ephemeral`, or MSC2409's
    /// `de.sorunome.msc2409.push_ephemeral` that bridges still write.
    pub receives_ephemeral: bool,
    /// Whether it wants its users' device list changes and one-time key counts in its
    /// transactions (MSC3202's `org.matrix.msc3202`).
    pub receives_device_data: bool,
}

impl Appservice {
    /// Parses a registration from its YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, RegistrationError> {
        let registration: Registration = serde_yaml::from_str(text)?;
        let extra: serde_yaml::Value = serde_yaml::from_str(text)?;
        let flag = |key: &str| extra.get(key).and_then(serde_yaml::Value::as_bool) == Some(true);
        let mut service = Self::new(registration)?;
        service.receives_ephemeral |= flag("de.sorunome.msc2409.push_ephemeral");
        service.receives_device_data = flag("org.matrix.msc3202");
        Ok(service)
    }

    /// Reads a registration file.
    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistrationError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn new(registration: Registration) -> Result<Self, RegistrationError> {
        if registration.as_token.is_empty() || registration.hs_token.is_empty() {
            return Err(RegistrationError::Invalid(
                "as_token and hs_token must be set",
            ));
        }
        if registration.as_token == registration.hs_token {
            return Err(RegistrationError::Invalid(
                "as_token and hs_token must differ",
            ));
        }
        Ok(Self {
            users: NamespaceSet::compile(&registration.namespaces.users)?,
            aliases: NamespaceSet::compile(&registration.namespaces.aliases)?,
            rooms: NamespaceSet::compile(&registration.namespaces.rooms)?,
            receives_ephemeral: registration.receive_ephemeral,
            receives_device_data: false,
            registration,
        })
    }

    /// Whether this service may act as `user_id`: its sender or a user in its namespace.
    pub fn is_user_in_namespace(&self, user_id: &ruma::UserId) -> bool {
        self.is_sender(user_id) || self.users.matches(user_id.as_str())
    }

    /// Whether this service claims `user_id` for itself alone: its sender, or a user in
    /// one of its exclusive namespaces. Nobody else may register such an id.
    pub fn claims_exclusively(&self, user_id: &ruma::UserId) -> bool {
        self.is_sender(user_id) || self.users.is_exclusive(user_id.as_str())
    }

    fn is_sender(&self, user_id: &ruma::UserId) -> bool {
        user_id.localpart() == self.registration.sender_localpart
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = r#"
id: whatsapp
url: http://127.0.0.1:29318
as_token: as-secret
hs_token: hs-secret
sender_localpart: whatsappbot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@whatsapp_.*:example\.org'
  aliases:
    - exclusive: false
      regex: '#whatsapp_.*:example\.org'
  rooms: []
"#;

    #[test]
    fn a_bridge_registration_parses_and_matches_whole_ids() {
        let service = Appservice::from_yaml(BRIDGE).unwrap();
        assert_eq!(service.registration.id, "whatsapp");
        assert!(service.users.is_exclusive("@whatsapp_123:example.org"));
        assert!(!service.users.matches("@alice:example.org"));
        assert!(
            !service.users.matches("@whatsapp_1:example.org.evil"),
            "matches are anchored"
        );
        assert!(service.aliases.matches("#whatsapp_group:example.org"));
        assert!(!service.aliases.is_exclusive("#whatsapp_group:example.org"));
        assert!(service.is_user_in_namespace(ruma::user_id!("@whatsappbot:example.org")));
        assert!(service.claims_exclusively(ruma::user_id!("@whatsappbot:example.org")));
        assert!(service.claims_exclusively(ruma::user_id!("@whatsapp_1:example.org")));
        assert!(!service.claims_exclusively(ruma::user_id!("@alice:example.org")));
    }

    #[test]
    fn bad_registrations_are_refused() {
        let same_tokens = BRIDGE.replace("hs-secret", "as-secret");
        assert!(matches!(
            Appservice::from_yaml(&same_tokens),
            Err(RegistrationError::Invalid(_))
        ));
        let bad_regex = BRIDGE.replace(r"'@whatsapp_.*:example\.org'", "'@whatsapp_(:example'");
        assert!(matches!(
            Appservice::from_yaml(&bad_regex),
            Err(RegistrationError::Regex { .. })
        ));
        assert!(Appservice::from_yaml("id: [").is_err());
    }
}
