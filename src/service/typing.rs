//! Typing notifications: in memory only, with their own serial (the `_t` part of a sync
//! token), since they do not outlive a restart.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{appservices::interest::Interest, stream::Stream};

#[derive(Default)]
struct RoomTyping {
    serial: u64,
    users: HashMap<OwnedUserId, Instant>,
}

pub struct Typing {
    serial: AtomicU64,
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    stream: Arc<Stream>,
    /// Queues typing for the application services that want it.
    appservices: Arc<Interest>,
}

impl Typing {
    pub fn new(stream: Arc<Stream>, appservices: Arc<Interest>) -> Arc<Self> {
        Arc::new(Self {
            serial: AtomicU64::new(0),
            rooms: Mutex::default(),
            stream,
            appservices,
        })
    }

    /// Hands who is typing in the room now to the application services that want it.
    fn tell_appservices(&self, room_id: &RoomId) {
        let typing: Vec<OwnedUserId> = {
            let rooms = self.rooms.lock();
            let now = Instant::now();
            rooms.get(room_id).map_or_else(Vec::new, |room| {
                (room.users.iter())
                    .filter(|(_, deadline)| **deadline > now)
                    .map(|(user, _)| user.clone())
                    .collect()
            })
        };
        self.appservices.typing(room_id, &typing);
    }

    pub fn serial(&self) -> u64 {
        self.serial.load(Ordering::SeqCst)
    }

    /// Starts or stops `user` typing in a room and wakes `members`. A start expires by
    /// itself after `timeout`.
    pub fn set(
        self: &Arc<Self>,
        room_id: &RoomId,
        user: &UserId,
        typing: Option<Duration>,
        members: Vec<OwnedUserId>,
    ) {
        let changed = {
            let mut rooms = self.rooms.lock();
            let room = rooms.entry(room_id.to_owned()).or_default();
            let changed = match typing {
                Some(timeout) => room
                    .users
                    .insert(user.to_owned(), Instant::now() + timeout)
                    .is_none(),
                None => room.users.remove(user).is_some(),
            };
            if !changed && typing.is_some() {
                // A renewal: nothing for clients to see.
            } else {
                room.serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
            }
            changed
        };
        if changed {
            self.tell_appservices(room_id);
        }
        self.stream.notify(members.iter().map(|user| user.as_ref()));
        if let Some(timeout) = typing {
            let this = self.clone();
            let room_id = room_id.to_owned();
            let user = user.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                this.expire(&room_id, &user, &members);
            });
        }
    }

    fn expire(&self, room_id: &RoomId, user: &UserId, members: &[OwnedUserId]) {
        let mut rooms = self.rooms.lock();
        let Some(room) = rooms.get_mut(room_id) else {
            return;
        };
        if room
            .users
            .get(user)
            .is_some_and(|deadline| *deadline <= Instant::now())
        {
            room.users.remove(user);
            room.serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
            drop(rooms);
            self.tell_appservices(room_id);
            self.stream.notify(members.iter().map(|user| user.as_ref()));
        }
    }

    /// The rooms whose typing changed after `since` (a serial).
    pub fn rooms_changed_since(&self, since: u64) -> Vec<OwnedRoomId> {
        let rooms = self.rooms.lock();
        rooms
            .iter()
            .filter(|(_, room)| room.serial > since || since > self.serial())
            .map(|(room_id, _)| room_id.clone())
            .collect()
    }

    /// Who is typing in a room, if that changed after `since` (a serial).
    pub fn changed_since(&self, room_id: &RoomId, since: u64) -> Option<Vec<OwnedUserId>> {
        let rooms = self.rooms.lock();
        let room = rooms.get(room_id)?;
        if room.serial <= since && since <= self.serial() {
            return None;
        }
        let now = Instant::now();
        Some(
            room.users
                .iter()
                .filter(|(_, deadline)| **deadline > now)
                .map(|(user, _)| user.clone())
                .collect(),
        )
    }
}
