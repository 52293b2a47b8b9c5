//! How keys and values are encoded.
//!
//! A key is a sequence of parts. String parts (Matrix ids, types, state keys) are written
//! as their UTF-8 bytes followed by the separator `0xFF`, a byte that never occurs in
//! UTF-8, so `(a, b)` and `(ab, "")` can never collide and a prefix of parts is a prefix
//! of bytes. Integer parts (stream positions, state group numbers) are written as 8
//! big-endian bytes with no separator, so they sort numerically. Values are JSON, except
//! bare counters, which are 8 big-endian bytes, and the memberships of `room_members`,
//! which are the membership's name (`join`, `invite`, `knock`).

use ruma::events::room::member::MembershipState;

use super::{StorageError, StorageResult};

/// The byte that ends every string part of a key.
pub const SEPARATOR: u8 = 0xFF;

/// Builds a key from parts.
#[derive(Default, Clone)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new() -> Self {
        Self(Vec::with_capacity(64))
    }

    /// Appends a string part and its separator.
    pub fn str(mut self, part: &str) -> Self {
        self.0.extend_from_slice(part.as_bytes());
        self.0.push(SEPARATOR);
        self
    }

    /// Appends a fixed-width big-endian integer part.
    pub fn u64(mut self, part: u64) -> Self {
        self.0.extend_from_slice(&part.to_be_bytes());
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Key> for Vec<u8> {
    fn from(key: Key) -> Self {
        key.0
    }
}

/// Reads the parts of a key back, in the order they were written.
pub struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    pub fn new(key: &'a [u8]) -> Self {
        Self { rest: key }
    }

    /// Reads the next string part.
    pub fn str(&mut self) -> StorageResult<&'a str> {
        let end = self
            .rest
            .iter()
            .position(|byte| *byte == SEPARATOR)
            .ok_or_else(|| StorageError::Decode("key part without separator".to_owned()))?;
        let part = std::str::from_utf8(&self.rest[..end])
            .map_err(|error| StorageError::Decode(error.to_string()))?;
        self.rest = &self.rest[end + 1..];
        Ok(part)
    }

    /// Reads the next integer part.
    pub fn u64(&mut self) -> StorageResult<u64> {
        if self.rest.len() < 8 {
            return Err(StorageError::Decode(
                "key too short for an integer part".to_owned(),
            ));
        }
        let (head, rest) = self.rest.split_at(8);
        self.rest = rest;
        Ok(u64::from_be_bytes(head.try_into().expect("split at 8")))
    }
}

pub fn decode_u64(bytes: &[u8]) -> StorageResult<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Decode(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// A membership as `room_members` stores it.
pub fn encode_membership(membership: &MembershipState) -> Vec<u8> {
    membership.as_str().as_bytes().to_vec()
}

/// A membership `room_members` stored (an unreadable one reads as `leave`, which that
/// keyspace never holds).
pub fn decode_membership(bytes: &[u8]) -> MembershipState {
    std::str::from_utf8(bytes).map_or(MembershipState::Leave, MembershipState::from)
}

pub fn encode_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored types always serialize")
}

pub fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StorageResult<T> {
    serde_json::from_slice(bytes).map_err(|error| StorageError::Decode(error.to_string()))
}

/// As [`decode_json`], for a type that borrows from `bytes` (no copy of its strings).
pub fn decode_json_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> StorageResult<T> {
    serde_json::from_slice(bytes).map_err(|error| StorageError::Decode(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_parts_never_collide() {
        let a = Key::new().str("ab").str("");
        let b = Key::new().str("a").str("b");
        assert_ne!(a.bytes(), b.bytes());
    }

    #[test]
    fn a_prefix_of_parts_is_a_prefix_of_bytes() {
        let room = Key::new().str("!room:example.org");
        let full = room.clone().u64(7).str("$event");
        assert!(full.bytes().starts_with(room.bytes()));
        assert!(
            !Key::new()
                .str("!room:example.orgX")
                .bytes()
                .starts_with(room.bytes())
        );
    }

    #[test]
    fn integers_sort_numerically() {
        let small = Key::new().str("r").u64(9);
        let big = Key::new().str("r").u64(256);
        assert!(small.bytes() < big.bytes());
    }

    #[test]
    fn parts_read_back() {
        let key = Key::new()
            .str("@alice:example.org")
            .u64(42)
            .str("m.room.member");
        let mut reader = KeyReader::new(key.bytes());
        assert_eq!(reader.str().unwrap(), "@alice:example.org");
        assert_eq!(reader.u64().unwrap(), 42);
        assert_eq!(reader.str().unwrap(), "m.room.member");
        assert!(reader.u64().is_err());
    }
}
