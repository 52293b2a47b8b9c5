//! Checking a PDU received from another server before anything else looks at it: its
//! format, its event id, its signatures (with the keys of the servers that must have
//! signed it, valid at its timestamp where the room version says so) and its content
//! hash. An event whose hash does not match is kept only in its redacted form.

use ruma::api::error::ErrorKind;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomVersionId,
    signatures::Verified,
};
use serde_json::value::RawValue;

use super::keys::{ServerKeys, signature_key_ids};
use crate::{
    Error, Result,
    service::rooms::{
        Rooms,
        pdu::{MAX_PDU_BYTES, Pdu, SignedPdu},
    },
};

/// The event id of a PDU in a room version: carried (versions 1 and 2) or the
/// reference hash.
pub fn event_id_of(object: &CanonicalJsonObject, version: &RoomVersionId) -> Result<OwnedEventId> {
    let rules = Rooms::rules(version)?;
    let id = match object.get("event_id") {
        Some(CanonicalJsonValue::String(id))
            if rules.event_id_format == ruma::room_version_rules::EventIdFormatVersion::V1 =>
        {
            id.clone()
        }
        _ => {
            let hash = ruma::signatures::reference_hash(object, &rules)
                .map_err(|error| Error::bad_json(format!("Cannot hash the event: {error}")))?;
            format!("${hash}")
        }
    };
    OwnedEventId::try_from(id).map_err(|error| Error::bad_json(format!("Bad event id: {error}")))
}

/// Parses and checks a PDU of a room of `version`.
pub async fn verify_pdu(
    keys: &ServerKeys,
    version: &RoomVersionId,
    raw: &RawValue,
) -> Result<SignedPdu> {
    let rules = Rooms::rules(version)?;
    let mut object: CanonicalJsonObject = serde_json::from_str(raw.get())
        .map_err(|error| Error::bad_json(format!("PDU is not canonical JSON: {error}")))?;
    object.remove("unsigned");
    if serde_json::to_vec(&object).map_or(true, |json| json.len() > MAX_PDU_BYTES) {
        return Err(Error::new(
            ErrorKind::TooLarge,
            "The PDU is larger than the 65536 bytes the spec allows",
        ));
    }
    ruma::state_res::check_pdu_format(&object, &rules.event_format)
        .map_err(|error| Error::bad_json(format!("Invalid PDU: {error}")))?;
    let event_id = event_id_of(&object, version)?;
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(&object, &rules.signatures)
            .map_err(|error| Error::forbidden(format!("Unsigned PDU: {error}")))?;
    let at_ms = if rules.enforce_key_validity {
        match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
            _ => 0,
        }
    } else {
        0
    };
    let wanted: Vec<(OwnedServerName, Vec<String>)> = servers
        .into_iter()
        .map(|server| {
            let ids = signature_key_ids(&object, &server);
            (server, ids)
        })
        .collect();
    let keys = keys.public_key_map(wanted, at_ms).await?;
    let verified = ruma::signatures::verify_event(&keys, &object, &rules)
        .map_err(|error| Error::forbidden(format!("Bad PDU signature on {event_id}: {error}")))?;
    if verified == Verified::Signatures {
        tracing::info!(%event_id, "content hash mismatch: keeping the redacted event");
        object = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(|error| Error::bad_json(format!("Cannot redact the event: {error}")))?;
    }
    let raw = Rooms::raw_object(&object)?;
    let pdu = Pdu::parse(event_id.clone(), &raw)
        .map_err(|error| Error::bad_json(format!("Invalid PDU: {error}")))?;
    Ok(SignedPdu {
        event_id,
        object,
        pdu,
    })
}
