//! Checking and merging the ed25519 signatures on device and cross-signing keys.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    CanonicalJsonValue, SigningKeyAlgorithm,
    signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::{Map, Value};

/// The ed25519 public key of a device-keys or cross-signing-key object: its key id
/// (`ed25519:…`) and unpadded base64 value. A cross-signing key has exactly one.
pub fn ed25519_key(object: &Value) -> Option<(String, String)> {
    let keys = object.get("keys")?.as_object()?;
    let mut ed25519 = keys
        .iter()
        .filter(|(id, _)| id.starts_with("ed25519:"))
        .filter_map(|(id, key)| Some((id.clone(), key.as_str()?.to_owned())));
    let first = ed25519.next()?;
    ed25519.next().is_none().then_some(first)
}

/// A device's ed25519 key: the one named `ed25519:<device id>`.
pub fn device_ed25519_key(object: &Value, device_id: &str) -> Option<(String, String)> {
    let key_id = format!("ed25519:{device_id}");
    let key = object.get("keys")?.get(&key_id)?.as_str()?.to_owned();
    Some((key_id, key))
}

/// Whether `object` carries a valid signature of `signer` with the ed25519 key
/// `key_id` whose public key is `public_key`.
pub fn is_signed_by(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|signatures| signatures.get(signer))
        .and_then(|keys| keys.get(key_id))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let (Ok(signature), Ok(public_key)) = (
        STANDARD_NO_PAD.decode(signature.trim_end_matches('=')),
        STANDARD_NO_PAD.decode(public_key.trim_end_matches('=')),
    ) else {
        return false;
    };
    let Ok(CanonicalJsonValue::Object(canonical)) = CanonicalJsonValue::try_from(object.clone())
    else {
        return false;
    };
    let Ok(signed) = to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        signed.as_bytes(),
    )
    .is_ok()
}

/// The object without its `signatures` and `unsigned`: what two uploads of the same key
/// must agree on.
pub fn unsigned_part(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    object
}

/// Adds `signer`'s signature `key_id` → `signature` to `object`.
pub fn add_signature(object: &mut Value, signer: &str, key_id: &str, signature: &str) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let signatures = map
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()));
    if !signatures.is_object() {
        *signatures = Value::Object(Map::new());
    }
    if let Some(signatures) = signatures.as_object_mut() {
        let by_signer = signatures
            .entry(signer)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(by_signer) = by_signer.as_object_mut() {
            by_signer.insert(key_id.to_owned(), Value::String(signature.to_owned()));
        }
    }
}

/// Every signature of `signer` on `object`, as `(key id, signature)`.
pub fn signatures_of(object: &Value, signer: &str) -> Vec<(String, String)> {
    object
        .get("signatures")
        .and_then(|signatures| signatures.get(signer))
        .and_then(Value::as_object)
        .map(|keys| {
            keys.iter()
                .filter_map(|(id, signature)| Some((id.clone(), signature.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Merges the signatures of `from` into `into`.
pub fn merge(into: &mut Value, from: &Value) {
    let Some(signers) = from.get("signatures").and_then(Value::as_object) else {
        return;
    };
    for (signer, keys) in signers {
        for (key_id, signature) in keys.as_object().into_iter().flatten() {
            if let Some(signature) = signature.as_str() {
                add_signature(into, signer, key_id, signature);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::json;

    use super::*;

    fn signed(key: &SigningKey, object: Value, signer: &str, key_id: &str) -> Value {
        let CanonicalJsonValue::Object(canonical) =
            CanonicalJsonValue::try_from(object.clone()).expect("canonical")
        else {
            panic!("an object");
        };
        let bytes = to_canonical_json_string_for_signing(&canonical).expect("canonical");
        let signature = STANDARD_NO_PAD.encode(key.sign(bytes.as_bytes()).to_bytes());
        let mut object = object;
        add_signature(&mut object, signer, key_id, &signature);
        object
    }

    #[test]
    fn a_signature_checks_only_with_the_right_key_and_content() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = STANDARD_NO_PAD.encode(key.verifying_key().to_bytes());
        let object = json!({ "user_id": "@a:x", "keys": { "ed25519:K": public } });
        let object = signed(&key, object, "@a:x", "ed25519:K");
        assert!(is_signed_by(&object, "@a:x", "ed25519:K", &public));
        assert!(!is_signed_by(&object, "@b:x", "ed25519:K", &public));

        let other =
            STANDARD_NO_PAD.encode(SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes());
        assert!(!is_signed_by(&object, "@a:x", "ed25519:K", &other));

        let mut tampered = object.clone();
        tampered["user_id"] = json!("@evil:x");
        assert!(!is_signed_by(&tampered, "@a:x", "ed25519:K", &public));

        let mut with_unsigned = object;
        with_unsigned["unsigned"] = json!({ "device_display_name": "phone" });
        assert!(is_signed_by(&with_unsigned, "@a:x", "ed25519:K", &public));
    }

    #[test]
    fn the_key_of_a_cross_signing_key_is_its_only_ed25519_key() {
        assert_eq!(
            ed25519_key(&json!({ "keys": { "ed25519:abc": "abc" } })),
            Some(("ed25519:abc".to_owned(), "abc".to_owned()))
        );
        assert_eq!(
            ed25519_key(&json!({ "keys": { "ed25519:a": "a", "ed25519:b": "b" } })),
            None
        );
    }
}
