//! Delayed events (MSC4140): events a client schedules for the server to send after a
//! delay unless it cancels or restarts the delay first. A group call member schedules
//! its own "left the call" state this way and keeps restarting it; when its app dies the
//! restarts stop and the server sends the leave, so the call ends cleanly.
//!
//! Every waiting event is kept in the database (`delayed_events`) and in memory; one
//! task sleeps until the next one is due and sends it as its user would, through the
//! rooms' usual checks. Waiting events are read again at start, and those that came due
//! while the server was down are sent then. A delayed state event is cancelled when
//! another user sets the same state first (this is also a timeline index: it sees every
//! state event as it is written).

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Error, Result, config,
    service::{
        rooms::{
            Rooms,
            timeline::{NewEvent, Placed, TimelineIndex},
        },
        users::{now_ms, random_string},
    },
    storage::{Batch, Db, Keyspace},
};

/// An event waiting to be sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delayed {
    pub delay_id: String,
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    pub content: Value,
    pub delay_ms: u64,
    /// When it was scheduled or last restarted (ms since the Unix epoch).
    pub running_since_ms: u64,
    /// The transaction of the send that scheduled it (device or service, then the
    /// client's id): a retried send gets the same delay id while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
}

impl Delayed {
    fn due_ms(&self) -> u64 {
        self.running_since_ms.saturating_add(self.delay_ms)
    }
}

/// What a client asks of a waiting event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Cancel,
    Restart,
    Send,
}

pub struct DelayedEvents {
    db: Arc<Db>,
    limits: config::DelayedEvents,
    /// Set once the rooms are built (they hold this as an index).
    rooms: OnceLock<Weak<Rooms>>,
    waiting: Mutex<HashMap<String, Delayed>>,
    /// The ids a state event being written cancels, until the write is heard of.
    cancelling: Mutex<Vec<String>>,
    wake: Arc<tokio::sync::Notify>,
}

impl DelayedEvents {
    /// Reads the waiting events back.
    pub fn open(db: Arc<Db>, limits: config::DelayedEvents) -> Result<Self> {
        let mut waiting = HashMap::new();
        for (_, value) in db.scan_prefix(Keyspace::DelayedEvents, b"")? {
            let delayed: Delayed = crate::storage::codec::decode_json(&value)?;
            waiting.insert(delayed.delay_id.clone(), delayed);
        }
        Ok(Self {
            db,
            limits,
            rooms: OnceLock::new(),
            waiting: Mutex::new(waiting),
            cancelling: Mutex::default(),
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Whether clients may schedule events.
    pub fn enabled(&self) -> bool {
        self.limits.max_delay_secs > 0
    }

    /// Hands over the rooms, once built, and starts sending what comes due. Opened
    /// outside a runtime (the in-process tests), nothing is sent.
    pub fn start(self: &Arc<Self>, rooms: &Arc<Rooms>) {
        let _ = self.rooms.set(Arc::downgrade(rooms));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(delayed) = this.upgrade() else {
                    return;
                };
                let wake = delayed.wake.clone();
                let wait = delayed.send_due().await;
                drop(delayed);
                let _ = tokio::time::timeout(wait, wake.notified()).await;
            }
        });
    }

    /// Schedules an event: its delay id. A send retried with the same transaction gets
    /// the waiting event's id again.
    pub fn schedule(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        (kind, state_key): (&str, Option<&str>),
        content: Value,
        delay_ms: u64,
        txn: Option<String>,
    ) -> Result<String> {
        if !self.enabled() {
            return Err(Error::new(
                ErrorKind::Unrecognized,
                "Delayed events are turned off on this server",
            ));
        }
        let max_delay = self.limits.max_delay_secs.saturating_mul(1000);
        if delay_ms > max_delay {
            // MSC4140's answer, which clients (matrix-js-sdk's call membership) read to
            // schedule again within the limit.
            return Err(Error::custom(
                http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                format!("The delay is longer than this server's most, {max_delay} ms"),
                serde_json::json!({
                    "org.matrix.msc4140.errcode": "M_MAX_DELAY_EXCEEDED",
                    "org.matrix.msc4140.max_delay": max_delay,
                }),
            ));
        }
        let delayed = Delayed {
            delay_id: random_string(24),
            user_id: user_id.to_owned(),
            room_id: room_id.to_owned(),
            kind: kind.to_owned(),
            state_key: state_key.map(ToOwned::to_owned),
            content,
            delay_ms,
            running_since_ms: now_ms(),
            txn,
        };
        let mut waiting = self.waiting.lock();
        if let Some(retried) = (waiting.values()).find(|other| {
            other.user_id == user_id && other.txn.is_some() && other.txn == delayed.txn
        }) {
            return Ok(retried.delay_id.clone());
        }
        let theirs = waiting.values().filter(|d| d.user_id == user_id).count();
        if theirs >= self.limits.max_per_user {
            return Err(Error::new(
                ErrorKind::LimitExceeded(Default::default()),
                "Too many delayed events are waiting for this user",
            )
            .with_status(http::StatusCode::BAD_REQUEST));
        }
        self.persist(&delayed)?;
        let id = delayed.delay_id.clone();
        waiting.insert(id.clone(), delayed);
        drop(waiting);
        self.wake.notify_one();
        Ok(id)
    }

    /// A user's waiting events, soonest first.
    pub fn list(&self, user_id: &UserId) -> Vec<Delayed> {
        let mut theirs: Vec<Delayed> = (self.waiting.lock().values())
            .filter(|delayed| delayed.user_id == user_id)
            .cloned()
            .collect();
        theirs.sort_by_key(Delayed::due_ms);
        theirs
    }

    /// A waiting event, if `user_id` (when given) is its user.
    pub fn get(&self, delay_id: &str, user_id: Option<&UserId>) -> Option<Delayed> {
        (self.waiting.lock().get(delay_id))
            .filter(|delayed| user_id.is_none_or(|user| delayed.user_id == user))
            .cloned()
    }

    /// Cancels, restarts or sends a waiting event now. The delay id is the secret: the
    /// unauthenticated form of the endpoint (what a call's focus service calls when a
    /// member drops) passes no user. 404 `M_NOT_FOUND` for an unknown one, or another
    /// user's.
    pub async fn update(
        &self,
        delay_id: &str,
        action: Action,
        user_id: Option<&UserId>,
    ) -> Result<()> {
        let not_found = || Error::not_found("No delayed event has this id");
        let delayed = self.get(delay_id, user_id).ok_or_else(not_found)?;
        match action {
            Action::Restart => {
                let mut waiting = self.waiting.lock();
                let entry = waiting.get_mut(delay_id).ok_or_else(not_found)?;
                entry.running_since_ms = now_ms();
                let restarted = entry.clone();
                drop(waiting);
                self.persist(&restarted)?;
                self.wake.notify_one();
            }
            Action::Cancel => {
                self.forget(delay_id)?.ok_or_else(not_found)?;
            }
            Action::Send => {
                self.forget(delay_id)?.ok_or_else(not_found)?;
                self.send(delayed).await?;
            }
        }
        Ok(())
    }

    /// Sends what is due; how long until the next one.
    async fn send_due(&self) -> Duration {
        let now = now_ms();
        let (due, next): (Vec<Delayed>, Option<u64>) = {
            let waiting = self.waiting.lock();
            let due = (waiting.values())
                .filter(|delayed| delayed.due_ms() <= now)
                .cloned()
                .collect();
            let next = (waiting.values())
                .map(Delayed::due_ms)
                .filter(|due| *due > now)
                .min();
            (due, next)
        };
        for delayed in due {
            match self.forget(&delayed.delay_id) {
                Ok(Some(_)) => {
                    let (id, user) = (delayed.delay_id.clone(), delayed.user_id.clone());
                    if let Err(error) = self.send(delayed).await {
                        tracing::warn!(delay_id = %id, %user, %error, "delayed event not sent");
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "delayed event not forgotten"),
            }
        }
        next.map_or(Duration::from_secs(3600), |next| {
            Duration::from_millis(next.saturating_sub(now_ms()).max(1))
        })
    }

    /// Sends a delayed event as its user.
    async fn send(&self, delayed: Delayed) -> Result<()> {
        let rooms = (self.rooms.get().and_then(Weak::upgrade))
            .ok_or_else(|| Error::internal("the rooms are gone"))?;
        let event = match &delayed.state_key {
            Some(key) => NewEvent::state(&delayed.kind, key, delayed.content),
            None => NewEvent::message(&delayed.kind, delayed.content),
        };
        rooms
            .append(&delayed.room_id, &delayed.user_id, event, None)
            .await?;
        Ok(())
    }

    fn persist(&self, delayed: &Delayed) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::DelayedEvents,
            delayed.delay_id.as_bytes().to_vec(),
            delayed,
        );
        self.db.write(batch)?;
        Ok(())
    }

    /// Removes a waiting event: it, if it was waiting.
    fn forget(&self, delay_id: &str) -> Result<Option<Delayed>> {
        let Some(delayed) = self.waiting.lock().remove(delay_id) else {
            return Ok(None);
        };
        let mut batch = self.db.batch();
        batch.delete(Keyspace::DelayedEvents, delay_id.as_bytes().to_vec());
        self.db.write(batch)?;
        Ok(Some(delayed))
    }
}

impl TimelineIndex for DelayedEvents {
    /// A state event cancels the delayed events of other users that would set the same
    /// state: they are deleted in the event's batch.
    fn stage(&self, _rooms: &Rooms, batch: &mut Batch, event: &Placed<'_>) -> Result<()> {
        let Some(state_key) = event.pdu.state_key.as_deref() else {
            return Ok(());
        };
        let kind = event.pdu.kind.to_string();
        let waiting = self.waiting.lock();
        if waiting.is_empty() {
            return Ok(());
        }
        let cancelled: Vec<String> = (waiting.values())
            .filter(|delayed| {
                delayed.room_id == event.room_id
                    && delayed.kind == kind
                    && delayed.state_key.as_deref() == Some(state_key)
                    && delayed.user_id != event.pdu.sender
            })
            .map(|delayed| delayed.delay_id.clone())
            .collect();
        drop(waiting);
        for id in &cancelled {
            batch.delete(Keyspace::DelayedEvents, id.as_bytes().to_vec());
        }
        if !cancelled.is_empty() {
            let mut cancelling = self.cancelling.lock();
            cancelling.extend(cancelled);
        }
        Ok(())
    }

    fn written(&self, _positions: &[u64], ok: bool) {
        let cancelled = {
            let mut cancelling = self.cancelling.lock();
            if cancelling.is_empty() {
                return;
            }
            std::mem::take(&mut *cancelling)
        };
        if ok {
            let mut waiting = self.waiting.lock();
            for id in cancelled {
                waiting.remove(&id);
            }
        }
    }
}
