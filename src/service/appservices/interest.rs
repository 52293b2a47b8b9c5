//! Which application services an event concerns, worked out while the event is staged:
//! each of them gets a queue entry (the event's id at its position) in the batch that
//! writes the event, so an event on disk is an event its services will be sent, crash
//! or not.
//!
//! An event concerns a service when its sender, or the user a membership event is
//! about, is one of the service's users (its own or its namespace's), when the room's
//! id is in its room namespace, or when one of the service's users is joined to the room
//! or one of the room's aliases is in its alias namespace. The last two depend on the
//! room, not the event: they are worked out once per room and state group (and set of
//! registrations and of aliases), and kept.
//!
//! Ephemeral changes (receipts, typing, presence; MSC2409) go to the services that ask
//! for them (`receive_ephemeral`), through the same queue: a receipt or a presence
//! change is staged in the batch that records it, at its stream position; typing, which
//! is never stored, takes a position of its own. A receipt or typing concerns the
//! services the room concerns; a presence change, those concerned by a room its user
//! is joined to, or whose namespace holds the user.

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
};

use palisade_appservice::Appservice;
use parking_lot::Mutex;
use ruma::{
    EventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId, events::TimelineEventType,
    events::room::member::MembershipState,
};
use serde_json::{Value, json};

use super::{Appservices, Registry};
use crate::{
    Result,
    service::{
        rooms::{
            Rooms,
            timeline::{Placed, TimelineIndex},
        },
        stream::Stream,
    },
    storage::{Batch, Db, Keyspace},
};

/// The most rooms whose interested services are kept.
const ROOMS_KEPT: usize = 10_000;

/// The timeline index that queues events for application services.
pub struct Interest {
    appservices: Arc<Appservices>,
    db: Arc<Db>,
    stream: Arc<Stream>,
    /// Set once the rooms are built (they hold this index): for ephemeral changes.
    rooms_handle: OnceLock<Weak<Rooms>>,
    rooms: Mutex<HashMap<OwnedRoomId, RoomInterest>>,
    /// Whether a batch staged an entry since the last write was heard of.
    staged: AtomicBool,
    /// Moved on each write that queued something: the deliveries wait on it.
    wake: tokio::sync::watch::Sender<u64>,
}

/// The services a room concerns through its members and aliases, at one state group
/// and one set of registrations.
struct RoomInterest {
    state_group: u64,
    generation: u64,
    /// `Rooms::alias_changes` when it was worked out.
    alias_changes: u64,
    /// By index in the registry.
    services: Vec<bool>,
}

impl Interest {
    pub fn new(appservices: Arc<Appservices>, db: Arc<Db>, stream: Arc<Stream>) -> Self {
        Self {
            appservices,
            db,
            stream,
            rooms_handle: OnceLock::new(),
            rooms: Mutex::default(),
            staged: AtomicBool::new(false),
            wake: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Hands over the rooms, once built, for the ephemeral changes.
    pub fn set_rooms(&self, rooms: &Arc<Rooms>) {
        let _ = self.rooms_handle.set(Arc::downgrade(rooms));
    }

    /// A receiver that changes whenever events were queued for some service.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Which services the room concerns through its members and aliases.
    fn room_interest(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        state_group: u64,
        registry: &Registry,
    ) -> Result<Vec<bool>> {
        let alias_changes = rooms.alias_changes();
        if let Some(kept) = self.rooms.lock().get(room_id)
            && kept.state_group == state_group
            && kept.generation == registry.generation
            && kept.alias_changes == alias_changes
        {
            return Ok(kept.services.clone());
        }
        let members = rooms.members_with(room_id, MembershipState::Join)?;
        let local_members: Vec<&UserId> = members
            .iter()
            .filter(|user| user.server_name() == rooms.server_name())
            .map(|user| user.as_ref())
            .collect();
        let aliases = room_aliases(rooms, room_id)?;
        let services = registry
            .registered
            .iter()
            .map(|service| {
                local_members
                    .iter()
                    .any(|user| service.is_user_in_namespace(user))
                    || aliases.iter().any(|alias| service.aliases.matches(alias))
            })
            .collect::<Vec<_>>();
        let mut kept = self.rooms.lock();
        if kept.len() >= ROOMS_KEPT {
            kept.clear();
        }
        kept.insert(
            room_id.to_owned(),
            RoomInterest {
                state_group,
                generation: registry.generation,
                alias_changes,
                services: services.clone(),
            },
        );
        Ok(services)
    }
}

/// The room's aliases: those of the directory and those its state names.
fn room_aliases(rooms: &Rooms, room_id: &RoomId) -> Result<Vec<String>> {
    let mut aliases = rooms.aliases_of(room_id)?;
    if let Some(content) = rooms.state_content(room_id, "m.room.canonical_alias", "")? {
        let named = content.get("alias").into_iter().chain(
            content
                .get("alt_aliases")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten(),
        );
        for alias in named.filter_map(serde_json::Value::as_str) {
            if <&RoomAliasId>::try_from(alias).is_ok() && !aliases.iter().any(|a| a == alias) {
                aliases.push(alias.to_owned());
            }
        }
    }
    Ok(aliases)
}

impl TimelineIndex for Interest {
    fn stage(&self, rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()> {
        let registry = self.appservices.current();
        if !registry.any_receives() {
            return Ok(());
        }
        let pdu = event.pdu;
        let target = (pdu.kind == TimelineEventType::RoomMember)
            .then_some(pdu.state_key.as_deref())
            .flatten()
            .and_then(|key| <&UserId>::try_from(key).ok());
        let room_wide = self.room_interest(rooms, event.room_id, event.state_before, &registry)?;
        for (index, service) in registry.registered.iter().enumerate() {
            if service.registration.url.is_none() {
                continue;
            }
            let concerned = room_wide[index]
                || service.is_user_in_namespace(&pdu.sender)
                || target.is_some_and(|user| service.is_user_in_namespace(user))
                || service.rooms.matches(event.room_id.as_str());
            if concerned {
                batch.put_in_run(
                    Keyspace::AppserviceQueue,
                    &registry.queues[index],
                    event.position,
                    event.event_id.as_bytes(),
                );
                self.staged.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn written(&self, _positions: &[u64], ok: bool) {
        if ok && self.staged.swap(false, Ordering::Relaxed) {
            self.wake
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }
}

/// An ephemeral change, as the services that record it hand it over.
pub enum EphemeralChange<'a> {
    Receipt {
        room_id: &'a RoomId,
        user: &'a UserId,
        receipt_type: &'a str,
        event_id: &'a EventId,
        ts: u64,
        thread_id: Option<&'a str>,
    },
    Presence {
        user: &'a UserId,
        content: Value,
    },
}

impl Interest {
    /// Stages what an ephemeral change queues for the services that want it, in the
    /// batch that records the change, at its stream position. Call
    /// [`ephemeral_written`](Self::ephemeral_written) once the batch is on disk.
    pub fn stage_ephemeral(&self, batch: &mut Batch, position: u64, change: EphemeralChange<'_>) {
        let registry = self.appservices.current();
        if !registry.any_receives_ephemeral() {
            return;
        }
        let Some(rooms) = self.rooms_handle.get().and_then(Weak::upgrade) else {
            return;
        };
        let (event, concerned) = match change {
            EphemeralChange::Receipt {
                room_id,
                user,
                receipt_type,
                event_id,
                ts,
                thread_id,
            } => {
                // A private receipt is its user's alone.
                if receipt_type == "m.read.private" {
                    return;
                }
                let mut receipt = json!({ "ts": ts });
                if let Some(thread) = thread_id {
                    receipt["thread_id"] = thread.into();
                }
                let event = json!({
                    "type": "m.receipt",
                    "room_id": room_id,
                    "content": { event_id.as_str(): { receipt_type: { user.as_str(): receipt } } },
                });
                (event, self.concerned_by_room(&rooms, room_id, &registry))
            }
            EphemeralChange::Presence { user, content } => {
                let event = json!({ "type": "m.presence", "sender": user, "content": content });
                (event, self.concerned_by_user(&rooms, user, &registry))
            }
        };
        match concerned {
            Ok(concerned) => self.stage_for(batch, position, &event, &concerned, &registry),
            Err(error) => {
                tracing::warn!(%error, "ephemeral change not queued for application services");
            }
        }
    }

    /// Stages a to-device message for the services whose user it is for (MSC4203), in
    /// the batch that puts it in the device's inbox.
    pub fn stage_to_device(
        &self,
        batch: &mut Batch,
        position: u64,
        user: &UserId,
        device: &ruma::DeviceId,
        event: &Value,
    ) {
        let registry = self.appservices.current();
        if !registry.any_receives_ephemeral() {
            return;
        }
        let concerned: Vec<bool> = (registry.registered.iter())
            .map(|service| service.is_user_in_namespace(user))
            .collect();
        if !concerned.iter().any(|concerned| *concerned) {
            return;
        }
        let mut message = event.clone();
        if let Some(fields) = message.as_object_mut() {
            fields.insert("to_user_id".into(), user.as_str().into());
            fields.insert("to_device_id".into(), device.as_str().into());
        }
        self.stage_for(batch, position, &message, &concerned, &registry);
    }

    /// The batch of staged ephemeral changes is on disk.
    pub fn ephemeral_written(&self) {
        if self.staged.swap(false, Ordering::Relaxed) {
            self.wake
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Queues who is typing in a room now for the services that want it. Typing is never
    /// stored, so this takes a stream position and writes by itself.
    pub fn typing(&self, room_id: &RoomId, typing: &[OwnedUserId]) {
        let registry = self.appservices.current();
        if !registry.any_receives_ephemeral() {
            return;
        }
        let Some(rooms) = self.rooms_handle.get().and_then(Weak::upgrade) else {
            return;
        };
        let Ok(concerned) = self.concerned_by_room(&rooms, room_id, &registry) else {
            return;
        };
        if !concerned.iter().any(|concerned| *concerned) {
            return;
        }
        let event = json!({
            "type": "m.typing",
            "room_id": room_id,
            "content": { "user_ids": typing },
        });
        let permit = self.stream.next();
        let mut batch = self.db.batch();
        self.stage_for(&mut batch, permit.position(), &event, &concerned, &registry);
        permit.persist_in(&mut batch);
        if let Err(error) = self.db.write_unsynced(batch) {
            tracing::warn!(%error, "typing not queued for application services");
        }
        drop(permit);
        self.ephemeral_written();
    }

    fn stage_for(
        &self,
        batch: &mut Batch,
        position: u64,
        event: &Value,
        concerned: &[bool],
        registry: &Registry,
    ) {
        let entry = event.to_string();
        for (index, service) in registry.registered.iter().enumerate() {
            if concerned[index] && receives_ephemeral(service) {
                batch.put_in_run(
                    Keyspace::AppserviceQueue,
                    &registry.queues[index],
                    position,
                    entry.as_bytes(),
                );
                self.staged.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The services a room concerns (by index in the registry).
    fn concerned_by_room(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        registry: &Registry,
    ) -> Result<Vec<bool>> {
        let Some(room) = rooms.room(room_id)? else {
            return Ok(vec![false; registry.registered.len()]);
        };
        let mut concerned = self.room_interest(rooms, room_id, room.state_group, registry)?;
        for (index, service) in registry.registered.iter().enumerate() {
            concerned[index] |= service.rooms.matches(room_id.as_str());
        }
        Ok(concerned)
    }

    /// The services a user's presence concerns: those of a room the user is joined to,
    /// and those whose namespace holds the user.
    fn concerned_by_user(
        &self,
        rooms: &Rooms,
        user: &UserId,
        registry: &Registry,
    ) -> Result<Vec<bool>> {
        let mut concerned: Vec<bool> = (registry.registered.iter())
            .map(|service| service.is_user_in_namespace(user))
            .collect();
        for room_id in rooms.rooms_joined_by(user)? {
            if concerned.iter().all(|concerned| *concerned) {
                break;
            }
            let by_room = self.concerned_by_room(rooms, &room_id, registry)?;
            for (concerned, yes) in concerned.iter_mut().zip(by_room) {
                *concerned |= yes;
            }
        }
        Ok(concerned)
    }
}

fn receives_ephemeral(service: &Appservice) -> bool {
    service.receives_ephemeral && service.registration.url.is_some()
}
