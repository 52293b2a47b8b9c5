//! Transactions from other servers: each PDU checked (`pdu.rs`), its missing ancestors
//! fetched from the sender (`get_missing_events`, else the state at it with
//! `state_ids`), then handed to the room's DAG (`rooms/incoming.rs`); EDUs (typing,
//! receipts) applied.

use std::{collections::BTreeMap, time::Duration};

use ruma::events::room::member::MembershipState;
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName, TransactionId, UInt,
    api::federation::{
        authorization::get_event_authorization,
        event::{get_event, get_missing_events, get_room_state_ids},
        transactions::edu::Edu,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use std::sync::Arc;

use palisade_federation::FederationClient;

use super::{
    device_lists::DeviceLists, keys::ServerKeys, pdu::verify_pdu, presence::PresenceRelay,
    to_device::ToDeviceRelay,
};
use crate::{
    Error, Result,
    service::{
        receipts::Receipts,
        rooms::{
            Rooms,
            incoming::{Accepted, Relay},
            pdu::SignedPdu,
            state::StateMap,
        },
        typing::Typing,
    },
    storage::{Db, Keyspace, codec::Key},
};

/// How many missing prev events are asked for before falling back to the state.
const MISSING_EVENTS_LIMIT: u32 = 20;

/// Takes other servers' transactions: PDUs into the rooms, EDUs to the services they
/// concern.
pub struct Receiver {
    /// The transaction ids seen (`FederationTxns`).
    pub(super) db: Arc<Db>,
    pub(super) client: Arc<FederationClient>,
    pub(super) keys: Arc<ServerKeys>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) typing: Arc<Typing>,
    pub(super) receipts: Arc<Receipts>,
    pub(super) delivery: Arc<crate::service::delivery::Delivery>,
    pub(super) presence: Arc<PresenceRelay>,
    pub(super) device_lists: Arc<DeviceLists>,
    pub(super) to_device: Arc<ToDeviceRelay>,
}

impl Receiver {
    /// Handles a `/send` transaction once: its PDUs (the result per event id, as `/send`
    /// answers) and EDUs. A transaction id the origin used before is answered with no
    /// results and not handled again.
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        transaction_id: &TransactionId,
        pdus: &[Box<RawValue>],
        edus: &[Raw<Edu>],
    ) -> Result<BTreeMap<OwnedEventId, Result<(), String>>> {
        let key = Key::new().str(origin.as_str()).str(transaction_id.as_str());
        if self.db.contains(Keyspace::FederationTxns, key.bytes())? {
            return Ok(BTreeMap::new());
        }
        let results = self.receive_pdus(origin, pdus).await;
        self.receive_edus(origin, edus);
        let mut batch = self.db.batch();
        batch.put(Keyspace::FederationTxns, key, Vec::new());
        self.db.write(batch)?;
        Ok(results)
    }

    /// Handles the PDUs of a transaction; the result per event id, as `/send` answers.
    async fn receive_pdus(
        &self,
        origin: &ServerName,
        pdus: &[Box<RawValue>],
    ) -> BTreeMap<OwnedEventId, Result<(), String>> {
        let mut results = BTreeMap::new();
        for raw in pdus {
            let Some((room_id, version)) = self.room_of(raw) else {
                continue;
            };
            let event_id = match serde_json::from_str(raw.get())
                .map_err(Error::internal)
                .and_then(|object| super::pdu::event_id_of(&object, &version))
            {
                Ok(event_id) => event_id,
                Err(_) => continue,
            };
            let outcome = if self.rooms.server_allowed(&room_id, origin).unwrap_or(false) {
                self.receive_pdu(origin, &room_id, &version, raw).await
            } else {
                Err(Error::forbidden(
                    "The server is denied by the room's server ACL",
                ))
            };
            if let Err(error) = &outcome {
                tracing::info!(%event_id, %origin, %error, "PDU refused");
            }
            results.insert(
                event_id,
                outcome.map(|_| ()).map_err(|error| error.to_string()),
            );
        }
        results
    }

    /// The room a PDU is for and its version, if this server is in it.
    fn room_of(&self, raw: &RawValue) -> Option<(OwnedRoomId, RoomVersionId)> {
        #[derive(serde::Deserialize)]
        struct RoomField {
            room_id: OwnedRoomId,
        }
        let room_id = serde_json::from_str::<RoomField>(raw.get()).ok()?.room_id;
        let room = self.rooms.room(&room_id).ok()??;
        Some((room_id, room.version))
    }

    /// One PDU of a transaction, with its missing ancestors.
    pub async fn receive_pdu(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        raw: &RawValue,
    ) -> Result<Accepted> {
        let event = verify_pdu(&self.keys, version, raw).await?;
        if self.rooms.in_timeline(&event.event_id)? {
            return Ok(Accepted::Known);
        }
        self.fetch_auth_events(origin, room_id, version, &event)
            .await?;
        let missing = self.missing_prev_events(&event)?;
        if missing.is_empty() {
            return self.rooms.append_remote(room_id, event, Relay::None).await;
        }
        // Ask the sender for what lies between what we have and this event.
        self.fill_gap(origin, room_id, version, &event).await;
        if self.missing_prev_events(&event)?.is_empty() {
            return self.rooms.append_remote(room_id, event, Relay::None).await;
        }
        let state = self
            .state_at(origin, room_id, version, &event.event_id)
            .await?;
        self.rooms
            .append_remote_with_state(room_id, event, state)
            .await
    }

    fn missing_prev_events(&self, event: &SignedPdu) -> Result<Vec<OwnedEventId>> {
        let mut missing = Vec::new();
        for id in &event.pdu.prev_events {
            match self.rooms.pdu(id)? {
                Some(stored) if stored.has_state() => {}
                _ => missing.push(id.clone()),
            }
        }
        Ok(missing)
    }

    /// Fetches the events between the room's forward extremities and `event` and appends
    /// them, oldest first.
    async fn fill_gap(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        event: &SignedPdu,
    ) {
        let Ok(Some(room)) = self.rooms.room(room_id) else {
            return;
        };
        let mut request = get_missing_events::v1::Request::new(
            room_id.to_owned(),
            room.extremities.clone(),
            vec![event.event_id.clone()],
        );
        request.limit = UInt::from(MISSING_EVENTS_LIMIT);
        let Ok(response) = self.client.send(origin, request).await else {
            return;
        };
        let mut events = Vec::new();
        for raw in &response.events {
            match verify_pdu(&self.keys, version, raw).await {
                Ok(event) => events.push(event),
                Err(error) => tracing::info!(%origin, %error, "missing event refused"),
            }
        }
        events.sort_by_key(|event| event.pdu.depth);
        for event in events {
            if self.rooms.in_timeline(&event.event_id).unwrap_or(true) {
                continue;
            }
            if self
                .fetch_auth_events(origin, room_id, version, &event)
                .await
                .is_err()
            {
                continue;
            }
            if self
                .missing_prev_events(&event)
                .is_ok_and(|missing| missing.is_empty())
                && let Err(error) = self.rooms.append_remote(room_id, event, Relay::None).await
            {
                tracing::info!(%origin, %error, "missing event not appended");
            }
        }
    }

    /// Makes sure an event's auth events are stored, fetching its auth chain when not.
    pub(super) async fn fetch_auth_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        event: &SignedPdu,
    ) -> Result<()> {
        let mut missing = false;
        for id in &event.pdu.auth_events {
            if !self.rooms.knows(id)? {
                missing = true;
            }
        }
        if !missing {
            return Ok(());
        }
        let request =
            get_event_authorization::v1::Request::new(room_id.to_owned(), event.event_id.clone());
        let response = self
            .client
            .send(origin, request)
            .await
            .map_err(|error| Error::forbidden(format!("auth events unavailable: {error}")))?;
        store_outliers(
            &self.keys,
            &self.rooms,
            room_id,
            version,
            &response.auth_chain,
        )
        .await
    }

    /// The state at an event (before it), learnt from `origin`: the ids, then every event
    /// not stored yet.
    async fn state_at(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        event_id: &EventId,
    ) -> Result<StateMap> {
        let response = self
            .client
            .send(
                origin,
                get_room_state_ids::v1::Request::new(event_id.to_owned(), room_id.to_owned()),
            )
            .await
            .map_err(|error| Error::forbidden(format!("state unavailable: {error}")))?;
        let mut wanted: Vec<OwnedEventId> = Vec::new();
        for id in response.auth_chain_ids.iter().chain(&response.pdu_ids) {
            if !self.rooms.knows(id)? {
                wanted.push(id.clone());
            }
        }
        let mut raws = Vec::new();
        for id in wanted {
            if let Ok(response) = self
                .client
                .send(origin, get_event::v1::Request::new(id))
                .await
            {
                raws.push(response.pdu);
            }
        }
        store_outliers(&self.keys, &self.rooms, room_id, version, &raws).await?;
        let mut state = StateMap::new();
        for id in &response.pdu_ids {
            let Some(event) = self.rooms.state_event(id)? else {
                return Err(Error::forbidden(format!("state event {id} unavailable")));
            };
            if let Some(state_key) = &event.state_key {
                state.insert((event.kind.to_string(), state_key.clone()), id.clone());
            }
        }
        Ok(state)
    }

    /// Applies the EDUs of a transaction from `origin`.
    fn receive_edus(&self, origin: &ServerName, edus: &[Raw<Edu>]) {
        for raw in edus {
            if raw
                .get_field::<String>("edu_type")
                .ok()
                .flatten()
                .as_deref()
                == Some(crate::service::delivery::DELIVERED)
            {
                if let Ok(Some(content)) = raw.get_field::<serde_json::Value>("content") {
                    self.delivery.receive(origin, &content);
                }
                continue;
            }
            let edu = match raw.deserialize() {
                Ok(edu) => edu,
                Err(error) => {
                    tracing::debug!(%origin, %error, "EDU not understood");
                    continue;
                }
            };
            match edu {
                Edu::Typing(typing) => {
                    if typing.user_id.server_name() != origin
                        || !self
                            .rooms
                            .server_allowed(&typing.room_id, origin)
                            .unwrap_or(false)
                        || self
                            .rooms
                            .member_state(&typing.room_id, &typing.user_id)
                            .ok()
                            .flatten()
                            != Some(MembershipState::Join)
                    {
                        continue;
                    }
                    let members = self
                        .rooms
                        .interested_users(&typing.room_id)
                        .unwrap_or_default();
                    let timeout = typing.typing.then_some(Duration::from_secs(30));
                    self.typing
                        .set(&typing.room_id, &typing.user_id, timeout, members);
                }
                Edu::Receipt(receipts) => {
                    for (room_id, map) in receipts.receipts {
                        if !self.rooms.server_allowed(&room_id, origin).unwrap_or(false) {
                            continue;
                        }
                        let members = self.rooms.interested_users(&room_id).unwrap_or_default();
                        for (user_id, data) in map.read {
                            if user_id.server_name() != origin
                                || self.rooms.member_state(&room_id, &user_id).ok().flatten()
                                    != Some(MembershipState::Join)
                            {
                                continue;
                            }
                            for event_id in &data.event_ids {
                                if let Err(error) = self
                                    .receipts
                                    .set(&room_id, &user_id, "m.read", event_id, None, &members)
                                {
                                    tracing::warn!(%error, "receipt from {origin} not stored");
                                }
                            }
                        }
                    }
                }
                Edu::Presence(presence) => self.presence.receive(origin, presence),
                Edu::DeviceListUpdate(update) => {
                    self.device_lists
                        .receive_device_list_update(origin, &update);
                }
                Edu::SigningKeyUpdate(update) => {
                    self.device_lists
                        .receive_signing_key_update(origin, &update);
                }
                Edu::DirectToDevice(content) => self.to_device.receive(origin, content),
                _ => {}
            }
        }
    }
}

/// Checks events and stores them as outliers.
pub async fn store_outliers(
    keys: &ServerKeys,
    rooms: &Rooms,
    room_id: &RoomId,
    version: &RoomVersionId,
    raws: &[Box<RawValue>],
) -> Result<()> {
    let rules = crate::service::rooms::Rooms::rules(version)?;
    let mut events = Vec::new();
    for raw in raws {
        match verify_pdu(keys, version, raw).await {
            Ok(event) => events.push(event),
            Err(error) => tracing::info!(%error, "auth or state event refused"),
        }
    }
    rooms.store_outliers(&rules, room_id, events)
}
