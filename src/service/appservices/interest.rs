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
//! registrations), and kept.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use parking_lot::Mutex;
use ruma::{
    OwnedRoomId, RoomAliasId, RoomId, UserId, events::TimelineEventType,
    events::room::member::MembershipState,
};

use super::{Appservices, Registry};
use crate::{
    Result,
    service::rooms::{
        Rooms,
        timeline::{Placed, TimelineIndex},
    },
    storage::{Batch, Keyspace},
};

/// The most rooms whose interested services are kept.
const ROOMS_KEPT: usize = 10_000;

/// The timeline index that queues events for application services.
pub struct Interest {
    appservices: Arc<Appservices>,
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
    /// By index in the registry.
    services: Vec<bool>,
}

impl Interest {
    pub fn new(appservices: Arc<Appservices>) -> Self {
        Self {
            appservices,
            rooms: Mutex::default(),
            staged: AtomicBool::new(false),
            wake: tokio::sync::watch::Sender::new(0),
        }
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
        if let Some(kept) = self.rooms.lock().get(room_id)
            && kept.state_group == state_group
            && kept.generation == registry.generation
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
