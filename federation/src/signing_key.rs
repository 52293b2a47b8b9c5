//! This server's ed25519 signing key.

use std::collections::BTreeMap;

use ruma::{
    AnyKeyName, CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedSigningKeyId, ServerName,
    SigningKeyAlgorithm, SigningKeyId,
    api::federation::discovery::{ServerSigningKeys, VerifyKey},
    room_version_rules::RedactionRules,
    serde::{Base64, Raw},
    signatures::{Ed25519KeyPair, KeyPair, Signature},
};
use serde::{Deserialize, Serialize};

/// What can go wrong loading or using the signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The stored key could not be decoded.
    #[error("invalid signing key: {0}")]
    Invalid(String),
    /// Signing an object failed (it did not serialise to canonical JSON).
    #[error("signing failed: {0}")]
    Signing(String),
    /// The event is over the spec's 65,535 bytes of canonical JSON.
    #[error("the event is larger than 65535 bytes")]
    TooLarge,
}

fn signing_error(error: ruma::signatures::JsonError) -> KeyError {
    match error {
        ruma::signatures::JsonError::PduTooLarge => KeyError::TooLarge,
        error => KeyError::Signing(error.to_string()),
    }
}

/// The stored form of the key: its version and PKCS#8 document.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// The key version, the part of the key id after `ed25519:`.
    pub version: String,
    /// The PKCS#8 document, in standard base64.
    pub pkcs8: String,
}

/// The server's ed25519 key pair and its version.
pub struct SigningKey {
    /// The key as ruma's request signing takes it.
    key_pair: Ed25519KeyPair,
    /// The same key, signing events and JSON.
    signer: Signer,
    version: String,
}

/// Signs with AWS-LC's ed25519, as ruma's signing functions ask (`KeyPair`). Ed25519 is
/// deterministic: the signatures are the ones ed25519-dalek makes with the same key,
/// made in a little over half the time.
struct Signer {
    key: aws_lc_rs::signature::Ed25519KeyPair,
    key_id: OwnedSigningKeyId<AnyKeyName>,
}

impl KeyPair for Signer {
    fn sign(&self, message: &[u8]) -> Signature {
        Signature::new(
            self.key_id.clone(),
            self.key.sign(message).as_ref().to_vec(),
        )
    }
}

impl SigningKey {
    /// Makes a new random key (from the operating system's CSPRNG).
    pub fn generate() -> StoredKey {
        let document = Ed25519KeyPair::generate();
        let suffix: String = {
            use base64::Engine;
            let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(&document[document.len() - 4..]);
            digest
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(6)
                .collect()
        };
        StoredKey {
            version: format!("a_{suffix}"),
            pkcs8: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &*document),
        }
    }

    /// Loads a key from its stored form.
    pub fn from_stored(stored: &StoredKey) -> Result<Self, KeyError> {
        let document =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &stored.pkcs8)
                .map_err(|error| KeyError::Invalid(error.to_string()))?;
        let key_pair = Ed25519KeyPair::from_der(&document, stored.version.clone())
            .map_err(|error| KeyError::Invalid(error.to_string()))?;
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&document)
            .map_err(|error| KeyError::Invalid(error.to_string()))?;
        let signer = Signer {
            key,
            key_id: SigningKeyId::from_parts(
                SigningKeyAlgorithm::Ed25519,
                stored.version.as_str().into(),
            ),
        };
        Ok(Self {
            key_pair,
            signer,
            version: stored.version.clone(),
        })
    }

    /// The key id, e.g. `ed25519:a_AbCd`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.version)
    }

    /// The public half of the key, as published in the key document.
    pub fn public_key(&self) -> Base64 {
        Base64::new(self.key_pair.public_key().to_vec())
    }

    /// The key pair itself, for signing with ruma (e.g. the `X-Matrix` request signature).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    /// Adds the content hash and this server's signature to a PDU.
    pub fn sign_event(
        &self,
        server_name: &ServerName,
        object: &mut CanonicalJsonObject,
        redaction: &RedactionRules,
    ) -> Result<(), KeyError> {
        ruma::signatures::hash_and_sign_event(server_name.as_str(), &self.signer, object, redaction)
            .map_err(signing_error)
    }

    /// Adds this server's signature to another server's event, leaving its hashes as
    /// they are (an invite this server's user receives).
    pub fn countersign_event(
        &self,
        server_name: &ServerName,
        object: &mut CanonicalJsonObject,
        redaction: &RedactionRules,
    ) -> Result<(), KeyError> {
        ruma::signatures::sign_event(server_name.as_str(), &self.signer, object, redaction)
            .map_err(signing_error)
    }

    /// Signs arbitrary JSON (key documents, requests).
    pub fn sign_json(
        &self,
        server_name: &ServerName,
        object: &mut CanonicalJsonObject,
    ) -> Result<(), KeyError> {
        ruma::signatures::sign_json(server_name.as_str(), &self.signer, object)
            .map_err(|error| KeyError::Signing(error.to_string()))
    }

    /// The signed `/_matrix/key/v2/server` document, valid until `valid_until`.
    pub fn server_keys(
        &self,
        server_name: &ServerName,
        valid_until: MilliSecondsSinceUnixEpoch,
    ) -> Result<Raw<ServerSigningKeys>, KeyError> {
        let mut verify_keys = BTreeMap::new();
        verify_keys.insert(
            ruma::OwnedServerSigningKeyId::try_from(self.key_id().as_str())
                .map_err(|error| KeyError::Invalid(error.to_string()))?,
            VerifyKey::new(self.public_key()),
        );
        let mut keys = ServerSigningKeys::new(server_name.to_owned(), valid_until);
        keys.verify_keys = verify_keys;
        let mut object: CanonicalJsonObject = serde_json::from_value(
            serde_json::to_value(&keys).map_err(|error| KeyError::Signing(error.to_string()))?,
        )
        .map_err(|error| KeyError::Signing(error.to_string()))?;
        self.sign_json(server_name, &mut object)?;
        let raw = serde_json::value::to_raw_value(&object)
            .map_err(|error| KeyError::Signing(error.to_string()))?;
        Ok(Raw::from_json(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_document_verifies_with_its_own_key() {
        let key = SigningKey::from_stored(&SigningKey::generate()).unwrap();
        let server = ruma::server_name!("example.org");
        let document = key
            .server_keys(server, MilliSecondsSinceUnixEpoch::now())
            .unwrap();
        let object: CanonicalJsonObject = serde_json::from_str(document.json().get()).unwrap();
        let mut public_keys = BTreeMap::new();
        public_keys.insert(key.key_id(), key.public_key());
        let mut servers = BTreeMap::new();
        servers.insert(server.to_string(), public_keys);
        ruma::signatures::verify_json(&servers, &object).unwrap();
    }

    #[test]
    fn events_and_json_are_signed_as_ed25519_dalek_signs_them() {
        let stored = SigningKey::generate();
        let key = SigningKey::from_stored(&stored).unwrap();
        for message in [&b""[..], b"{}", &[b'x'; 5000]] {
            let ours = key.signer.sign(message);
            let dalek = key.key_pair.sign(message);
            assert_eq!(ours, dalek);
        }
        // An event signed and hashed verifies with the published key.
        let server = ruma::server_name!("example.org");
        let mut event: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
            "type": "m.room.message",
            "room_id": "!r:example.org",
            "sender": "@a:example.org",
            "origin_server_ts": 1,
            "depth": 2,
            "prev_events": [],
            "auth_events": [],
            "content": { "msgtype": "m.text", "body": "hi" },
        }))
        .unwrap();
        let rules = ruma::room_version_rules::RoomVersionRules::V11;
        key.sign_event(server, &mut event, &rules.redaction)
            .unwrap();
        let mut public_keys = BTreeMap::new();
        public_keys.insert(key.key_id(), key.public_key());
        let mut servers = BTreeMap::new();
        servers.insert(server.to_string(), public_keys);
        let verified = ruma::signatures::verify_event(&servers, &event, &rules).unwrap();
        assert_eq!(verified, ruma::signatures::Verified::All);
    }

    #[test]
    fn a_stored_key_loads_back_to_the_same_public_key() {
        let stored = SigningKey::generate();
        let a = SigningKey::from_stored(&stored).unwrap();
        let b = SigningKey::from_stored(&stored).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert!(a.key_id().starts_with("ed25519:a_"));
    }
}
