//! Delivered receipts: the "delivered" tick. When a sync hands a user's device a room's
//! new events, the server records that the user has received the room up to the newest
//! of them sent by someone else, as a receipt of type [`DELIVERED`] (this server's own
//! unstable namespace). Clients see it in the room's `m.receipt` ephemeral events like
//! read receipts; other servers of the room get it as an EDU of the same name.
//!
//! Cheap by construction: at most one receipt per room per sync, all of a sync's written
//! in one batch, none for a room already delivered that far, and only the senders of the
//! delivered events are woken (everyone else sees the receipt on their next sync). A
//! user who sets the account data [`OPT_OUT`] to `{"enabled": false}` sends none.

use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use parking_lot::Mutex;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Result,
    service::{
        account_data::AccountData, federation::queue::OutgoingQueue, receipts::Receipts,
        rooms::Rooms,
    },
};

/// The receipt type, and the EDU type that carries it between servers.
pub const DELIVERED: &str = "org.palisade.delivered";
/// The global account data a user turns delivered receipts off with.
pub const OPT_OUT: &str = "org.palisade.delivery_receipts";

/// Rooms whose delivered mark is remembered per user.
const MARKS_KEPT: usize = 100_000;

/// A room's newest event a sync handed over, sent by someone else.
#[derive(Clone, Debug)]
pub struct Handed {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub position: u64,
    pub sender: OwnedUserId,
}

pub struct Delivery {
    receipts: Arc<Receipts>,
    rooms: Arc<Rooms>,
    account_data: Arc<AccountData>,
    outgoing: Arc<OutgoingQueue>,
    /// The position each user's delivered receipt in a room is at.
    marks: Mutex<LruCache<(OwnedUserId, OwnedRoomId), u64>>,
}

impl Delivery {
    pub fn new(
        receipts: Arc<Receipts>,
        rooms: Arc<Rooms>,
        account_data: Arc<AccountData>,
        outgoing: Arc<OutgoingQueue>,
    ) -> Self {
        Self {
            receipts,
            rooms,
            account_data,
            outgoing,
            marks: Mutex::new(LruCache::new(
                NonZeroUsize::new(MARKS_KEPT).expect("not zero"),
            )),
        }
    }

    /// Whether the user sends delivered receipts.
    fn sends(&self, user: &UserId) -> Result<bool> {
        Ok(self
            .account_data
            .get(user, None, OPT_OUT)?
            .and_then(|content| content.get("enabled").and_then(Value::as_bool))
            .unwrap_or(true))
    }

    /// Where the user's delivered receipt in a room is, as a stream position.
    fn mark(&self, user: &UserId, room_id: &ruma::RoomId) -> Result<u64> {
        let key = (user.to_owned(), room_id.to_owned());
        if let Some(position) = self.marks.lock().get(&key) {
            return Ok(*position);
        }
        let position = match self.receipts.get(room_id, user, DELIVERED)? {
            Some(receipt) => self
                .rooms
                .pdu(&receipt.event_id)?
                .map_or(0, |pdu| pdu.position),
            None => 0,
        };
        self.marks.lock().put(key, position);
        Ok(position)
    }

    /// Records what a sync hands over ([`handed`](Self::handed)) beside its response,
    /// not before it: the synced write would delay every sync that brings news.
    pub fn record_handed(self: &Arc<Self>, user: &UserId, handed: Vec<Handed>) {
        if handed.is_empty() {
            return;
        }
        let (delivery, user) = (self.clone(), user.to_owned());
        tokio::task::spawn_blocking(move || {
            if let Err(error) = delivery.handed(&user, handed) {
                tracing::warn!(%error, "delivered receipts not recorded");
            }
        });
    }

    /// A sync handed a local user's device these rooms' newest events: records the
    /// user's delivered receipts where they move forward.
    pub fn handed(&self, user: &UserId, handed: Vec<Handed>) -> Result<()> {
        if handed.is_empty() || !self.sends(user)? {
            return Ok(());
        }
        let mut fresh = Vec::new();
        for mark in handed {
            if mark.position > self.mark(user, &mark.room_id)? {
                fresh.push(mark);
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mut notify: Vec<OwnedUserId> = vec![user.to_owned()];
        for mark in &fresh {
            if mark.sender.server_name() == self.rooms.server_name()
                && !notify.contains(&mark.sender)
            {
                notify.push(mark.sender.clone());
            }
        }
        let receipts: Vec<(OwnedRoomId, OwnedEventId)> = fresh
            .iter()
            .map(|mark| (mark.room_id.clone(), mark.event_id.clone()))
            .collect();
        self.receipts
            .set_in_rooms(user, DELIVERED, &receipts, &notify)?;
        let ts = crate::service::users::now_ms();
        for mark in &fresh {
            self.marks
                .lock()
                .put((user.to_owned(), mark.room_id.clone()), mark.position);
            let servers = self.rooms.remote_servers(&mark.room_id)?;
            self.outgoing.send_edu(
                &servers,
                &json!({
                    "edu_type": DELIVERED,
                    "content": {
                        mark.room_id.as_str(): {
                            user.as_str(): { "event_id": mark.event_id, "ts": ts },
                        },
                    },
                }),
            )?;
        }
        Ok(())
    }

    /// Applies a delivered EDU from `origin`: receipts of its own users who are joined
    /// to the room, waking the local senders of the events.
    pub fn receive(&self, origin: &ServerName, content: &Value) {
        #[derive(Deserialize)]
        struct Mark {
            event_id: OwnedEventId,
        }
        let Some(rooms) = content.as_object() else {
            return;
        };
        for (room_id, users) in rooms {
            let Ok(room_id) = OwnedRoomId::try_from(room_id.as_str()) else {
                continue;
            };
            if !self.rooms.server_allowed(&room_id, origin).unwrap_or(false) {
                continue;
            }
            let Some(users) = users.as_object() else {
                continue;
            };
            for (user_id, mark) in users {
                let (Ok(user_id), Ok(mark)) = (
                    OwnedUserId::try_from(user_id.as_str()),
                    serde_json::from_value::<Mark>(mark.clone()),
                ) else {
                    continue;
                };
                if let Err(error) = self.apply_remote(origin, &room_id, &user_id, &mark.event_id) {
                    tracing::debug!(%error, %origin, "delivered receipt not stored");
                }
            }
        }
    }

    fn apply_remote(
        &self,
        origin: &ServerName,
        room_id: &ruma::RoomId,
        user_id: &UserId,
        event_id: &ruma::EventId,
    ) -> Result<()> {
        if user_id.server_name() != origin {
            return Ok(());
        }
        let joined = self.rooms.member_state(room_id, user_id)?
            == Some(ruma::events::room::member::MembershipState::Join);
        let Some(event) = self.rooms.pdu(event_id)? else {
            return Ok(());
        };
        if !joined || event.room_id != room_id || event.position <= self.mark(user_id, room_id)? {
            return Ok(());
        }
        let sender = event
            .parse(event_id.to_owned())
            .map(|pdu| pdu.sender)
            .ok()
            .filter(|sender| sender.server_name() == self.rooms.server_name());
        let notify: Vec<OwnedUserId> = sender.into_iter().collect();
        let receipt = [(room_id.to_owned(), event_id.to_owned())];
        self.receipts
            .set_in_rooms(user_id, DELIVERED, &receipt, &notify)?;
        self.marks
            .lock()
            .put((user_id.to_owned(), room_id.to_owned()), event.position);
        Ok(())
    }
}
