//! Room aliases and the public room directory.

use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::Rooms;
use crate::{
    Error, Result,
    storage::{
        Keyspace,
        codec::{Key, KeyReader},
    },
};

#[derive(Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

impl Rooms {
    /// How many times aliases were set, removed or moved since the start: what is kept
    /// of a room's aliases is stale once it changes.
    pub fn alias_changes(&self) -> u64 {
        self.alias_changes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn alias_changed(&self) {
        self.alias_changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<AliasRecord>> {
        Ok(self.db.get_json(Keyspace::Aliases, alias.as_bytes())?)
    }

    /// Points a new alias at a room; an alias already in use is `M_ROOM_IN_USE`.
    pub fn set_alias(&self, alias: &RoomAliasId, room_id: &RoomId, creator: &UserId) -> Result<()> {
        if alias.server_name() != self.server_name {
            return Err(Error::invalid_param("Aliases must be on this server"));
        }
        if self.resolve_alias(alias)?.is_some() {
            return Err(Error::new(
                ruma::api::error::ErrorKind::RoomInUse,
                "Alias already exists",
            )
            .with_status(http::StatusCode::CONFLICT));
        }
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::Aliases,
            alias.as_bytes().to_vec(),
            &AliasRecord {
                room_id: room_id.to_owned(),
                creator: creator.to_owned(),
            },
        );
        batch.put(
            Keyspace::RoomAliases,
            Key::new().str(room_id.as_str()).str(alias.as_str()),
            Vec::new(),
        );
        self.db.write(batch)?;
        self.alias_changed();
        Ok(())
    }

    pub fn remove_alias(&self, alias: &RoomAliasId) -> Result<()> {
        let record = self
            .resolve_alias(alias)?
            .ok_or_else(|| Error::not_found("Unknown alias"))?;
        let mut batch = self.db.batch();
        batch.delete(Keyspace::Aliases, alias.as_bytes().to_vec());
        batch.delete(
            Keyspace::RoomAliases,
            Key::new().str(record.room_id.as_str()).str(alias.as_str()),
        );
        self.db.write(batch)?;
        self.alias_changed();
        Ok(())
    }

    /// Points an existing alias at another room (a room upgrade moves them), keeping
    /// who made it.
    pub fn move_alias(&self, alias: &RoomAliasId, room_id: &RoomId) -> Result<()> {
        let record = self
            .resolve_alias(alias)?
            .ok_or_else(|| Error::not_found("Unknown alias"))?;
        let mut batch = self.db.batch();
        batch.delete(
            Keyspace::RoomAliases,
            Key::new().str(record.room_id.as_str()).str(alias.as_str()),
        );
        batch.put_json(
            Keyspace::Aliases,
            alias.as_bytes().to_vec(),
            &AliasRecord {
                room_id: room_id.to_owned(),
                creator: record.creator,
            },
        );
        batch.put(
            Keyspace::RoomAliases,
            Key::new().str(room_id.as_str()).str(alias.as_str()),
            Vec::new(),
        );
        self.db.write(batch)?;
        self.alias_changed();
        Ok(())
    }

    pub fn set_public(&self, room_id: &RoomId, public: bool) -> Result<()> {
        let mut batch = self.db.batch();
        if public {
            batch.put(
                Keyspace::PublicRooms,
                room_id.as_bytes().to_vec(),
                Vec::new(),
            );
        } else {
            batch.delete(Keyspace::PublicRooms, room_id.as_bytes().to_vec());
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Lists a room in the directory under an application service's network, or stops.
    pub fn set_network_listed(
        &self,
        (appservice, network): (&str, &str),
        room_id: &RoomId,
        listed: bool,
    ) -> Result<()> {
        let key = Key::new()
            .str(appservice)
            .str(network)
            .str(room_id.as_str());
        let mut batch = self.db.batch();
        if listed {
            batch.put(Keyspace::AppserviceRoomLists, key, Vec::new());
        } else {
            batch.delete(Keyspace::AppserviceRoomLists, key);
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// The rooms listed under application services' networks: all of them, or those of
    /// one (`appservice`, `network`).
    pub fn network_rooms(&self, network: Option<(&str, &str)>) -> Result<Vec<OwnedRoomId>> {
        let prefix = match network {
            Some((appservice, network)) => Key::new().str(appservice).str(network),
            None => Key::new(),
        };
        let mut out = Vec::new();
        for (key, _) in self
            .db
            .scan_prefix(Keyspace::AppserviceRoomLists, prefix.bytes())?
        {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            reader.str()?;
            if let Ok(room_id) = OwnedRoomId::try_from(reader.str()?) {
                out.push(room_id);
            }
        }
        Ok(out)
    }

    pub fn is_public(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .db
            .contains(Keyspace::PublicRooms, room_id.as_bytes())?)
    }

    pub fn public_rooms(&self) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .db
            .scan_prefix(Keyspace::PublicRooms, b"")?
            .into_iter()
            .filter_map(|(key, _)| String::from_utf8(key).ok())
            .filter_map(|id| OwnedRoomId::try_from(id).ok())
            .collect())
    }
}
