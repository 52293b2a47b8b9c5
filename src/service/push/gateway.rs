//! Delivery to push gateways (`POST /_matrix/push/v1/notify`), the way a phone hears of
//! a message while its app is closed.
//!
//! Each pusher keeps a cursor (`pushers.rs`): the stream position up to which its
//! user's notifications went out. A user with new notifications (`actions.rs` names them
//! once their event is written) and, at start, every user with pushers, get each pusher
//! caught up from its cursor. A gateway that fails is retried with a growing pause (1 s
//! doubling to an hour); a notification it has refused for a day is skipped. The cursor
//! only moves past what was delivered, so a restart resumes where delivery stopped. A
//! push key the gateway rejects loses its pusher.
//!
//! Nothing is pushed for an event already read, nor to the device that set the pusher
//! while it syncs (it shows the event itself).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::{
    OwnedUserId, RoomId, UserId,
    api::client::push::{Pusher, PusherKind},
    push::{Action, PushFormat},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{
    actions::Notification,
    counts::{Counts, ReadMarks, current_read_marks},
    pushers::Pushers,
};
use crate::{
    Result,
    service::{
        address_policy::{AddressPolicy, GuardedResolver},
        receipts::Receipts,
        rooms::{Rooms, pdu::ClientFormat},
        stream::Stream,
    },
};

/// Notifications read per pass over a pusher.
const PAGE: usize = 50;
/// The first pause after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// A notification the gateway keeps failing for this long is skipped.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// The time allowed for one request to a gateway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the gateway sender behaves (from `[push]` in the configuration).
#[derive(Clone, Debug)]
pub struct Options {
    /// Whether the event's content and names go to the gateway (else only its ids).
    pub include_content: bool,
    /// Whether the badge counts rooms with unread notifications (else notifications).
    pub group_unread_count_by_room: bool,
    /// How long after its last sync a device still counts as syncing.
    pub syncing_grace: Duration,
}

/// What the gateway sender reads.
pub struct Handles {
    pub pushers: Arc<Pushers>,
    pub counts: Arc<Counts>,
    pub rooms: Arc<Rooms>,
    pub receipts: Arc<Receipts>,
    pub stream: Arc<Stream>,
}

pub struct Gateway {
    handles: Handles,
    options: Options,
    http: reqwest::Client,
    /// Users being caught up, and whether more arrived meanwhile.
    running: Mutex<HashMap<OwnedUserId, bool>>,
}

impl Gateway {
    pub fn new(
        handles: Handles,
        options: Options,
        policy: AddressPolicy,
    ) -> std::result::Result<Self, String> {
        let tls = palisade_federation::tls::web_client_config().map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(Arc::new(GuardedResolver(Arc::new(policy))))
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Self {
            handles,
            options,
            http,
            running: Mutex::default(),
        })
    }

    /// Catches up every pusher, then each user named on `notified` as they come.
    pub fn start(self: Arc<Self>, mut notified: UnboundedReceiver<OwnedUserId>) {
        // Opened outside a runtime (the in-process tests), nothing is delivered.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            for user in self.handles.pushers.users() {
                self.clone().wake(user);
            }
            while let Some(user) = notified.recv().await {
                if self.handles.pushers.has_any(&user) {
                    self.clone().wake(user);
                }
            }
        });
    }

    /// Catches up a user's pushers, unless that is under way (then it goes on after).
    fn wake(self: Arc<Self>, user: OwnedUserId) {
        {
            let mut running = self.running.lock();
            if let Some(again) = running.get_mut(&user) {
                *again = true;
                return;
            }
            running.insert(user.clone(), false);
        }
        tokio::spawn(async move {
            loop {
                if let Err(error) = self.catch_up(&user).await {
                    tracing::warn!(%user, %error, "push delivery failed");
                }
                let mut running = self.running.lock();
                match running.get_mut(&user) {
                    Some(again) if *again => *again = false,
                    _ => {
                        running.remove(&user);
                        return;
                    }
                }
            }
        });
    }

    /// Catches up each of the user's pushers, then drops what every one of them is past
    /// from the user's push queue.
    async fn catch_up(&self, user: &UserId) -> Result<()> {
        let pushers = self.handles.pushers.list(user)?;
        let deliveries = pushers
            .iter()
            .filter(|pusher| matches!(pusher.kind, PusherKind::Http(_)))
            .map(|pusher| self.catch_up_pusher(user, pusher.clone()));
        for outcome in futures::future::join_all(deliveries).await {
            outcome?;
        }
        let mut through = u64::MAX;
        for pusher in &pushers {
            let cursor =
                self.handles
                    .pushers
                    .cursor(user, &pusher.ids.app_id, &pusher.ids.pushkey)?;
            through = through.min(cursor.map_or(u64::MAX, |cursor| cursor.position));
        }
        self.handles.pushers.trim_queue(user, through)
    }

    /// Sends a pusher every notification after its cursor.
    async fn catch_up_pusher(&self, user: &UserId, pusher: Pusher) -> Result<()> {
        let (app_id, pushkey) = (pusher.ids.app_id.clone(), pusher.ids.pushkey.clone());
        loop {
            let Some(cursor) = self.handles.pushers.cursor(user, &app_id, &pushkey)? else {
                return Ok(());
            };
            let page = self.handles.counts.notifications_after(
                user,
                cursor.position,
                self.handles.stream.frontier(),
                PAGE,
            )?;
            if page.is_empty() {
                return Ok(());
            }
            for (position, notification) in page {
                let device_syncing = cursor.device_id.as_deref().is_some_and(|device| {
                    self.handles
                        .stream
                        .is_syncing(user, device, self.options.syncing_grace)
                });
                if !device_syncing && !self.is_read(user, &notification, position)? {
                    match self.deliver(user, &pusher, &notification, position).await? {
                        Delivered::Sent => {}
                        Delivered::Rejected => {
                            tracing::info!(%user, app_id, "the push gateway rejected a push key");
                            return self.handles.pushers.remove(user, &app_id, &pushkey);
                        }
                        Delivered::GaveUp => {
                            tracing::warn!(%user, app_id, event_id = %notification.event_id,
                                "a push gateway failed for a day; notification skipped");
                        }
                        Delivered::PusherGone => return Ok(()),
                    }
                }
                self.handles
                    .pushers
                    .advance(user, &app_id, &pushkey, position)?;
            }
        }
    }

    /// Whether the user read the notified event already.
    fn is_read(&self, user: &UserId, notification: &Notification, position: u64) -> Result<bool> {
        let marks = self.read_marks(user, &notification.room_id)?;
        Ok(marks.is_read(notification.thread.as_deref(), position))
    }

    fn read_marks(&self, user: &UserId, room_id: &RoomId) -> Result<ReadMarks> {
        current_read_marks(&self.handles.rooms, &self.handles.receipts, room_id, user)
    }

    /// Sends one notification, retrying while the gateway fails.
    async fn deliver(
        &self,
        user: &UserId,
        pusher: &Pusher,
        notification: &Notification,
        position: u64,
    ) -> Result<Delivered> {
        let PusherKind::Http(data) = &pusher.kind else {
            return Ok(Delivered::Sent);
        };
        let body = self.payload(user, pusher, notification)?;
        let first_failure = Instant::now();
        let mut pause = FIRST_BACKOFF;
        loop {
            match self.post(&data.url, &body).await {
                Ok(rejected) if rejected.contains(&pusher.ids.pushkey) => {
                    return Ok(Delivered::Rejected);
                }
                Ok(_) => return Ok(Delivered::Sent),
                Err(error) => {
                    if first_failure.elapsed() > GIVE_UP_AFTER {
                        return Ok(Delivered::GaveUp);
                    }
                    tracing::debug!(%user, url = data.url, error, "push gateway failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                    let still = self.handles.pushers.cursor(
                        user,
                        &pusher.ids.app_id,
                        &pusher.ids.pushkey,
                    )?;
                    if still.is_none() {
                        return Ok(Delivered::PusherGone);
                    }
                    if self.is_read(user, notification, position)? {
                        // Read meanwhile: the phone has nothing to show.
                        return Ok(Delivered::Sent);
                    }
                }
            }
        }
    }

    /// Posts to a gateway; the push keys it rejects.
    async fn post(&self, url: &str, body: &Value) -> std::result::Result<Vec<String>, String> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            rejected: Vec<String>,
        }
        let response = self
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or(Answer {
            rejected: Vec::new(),
        });
        Ok(answer.rejected)
    }

    /// The spec's notification for one pusher.
    fn payload(
        &self,
        user: &UserId,
        pusher: &Pusher,
        notification: &Notification,
    ) -> Result<Value> {
        let PusherKind::Http(data) = &pusher.kind else {
            return Ok(Value::Null);
        };
        let mut tweaks = Map::new();
        for action in &notification.actions {
            if !matches!(action, Action::SetTweak(_)) {
                continue;
            }
            // `{"set_tweak": name, "value": v}`; a highlight without a value is `true`.
            if let Ok(Value::Object(tweak)) = serde_json::to_value(action)
                && let Some(Value::String(name)) = tweak.get("set_tweak")
            {
                let value = tweak.get("value").cloned().unwrap_or(Value::Bool(true));
                tweaks.insert(name.clone(), value);
            }
        }
        let mut device_data = serde_json::to_value(data)
            .ok()
            .and_then(|value| value.as_object().cloned())
            .unwrap_or_default();
        device_data.remove("url");
        let device = json!({
            "app_id": pusher.ids.app_id,
            "pushkey": pusher.ids.pushkey,
            "pushkey_ts": 0,
            "data": device_data,
            "tweaks": tweaks,
        });
        let unread = self.badge(user)?;
        let sound = tweaks.contains_key("sound");
        let mut body = json!({
            "event_id": notification.event_id,
            "room_id": notification.room_id,
            "counts": { "unread": unread },
            "devices": [device],
        });
        let event_id_only = data.format == Some(PushFormat::EventIdOnly);
        let event = self.handles.rooms.visible_event(
            user,
            None,
            &notification.event_id,
            ClientFormat::Full,
        )?;
        let Some((_, event)) = event else {
            return Ok(json!({ "notification": body }));
        };
        let event = event.into_value();
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let high = notification.highlight || sound || kind == "m.room.encrypted";
        body["prio"] = json!(if high { "high" } else { "low" });
        if event_id_only {
            return Ok(json!({ "notification": body }));
        }
        body["type"] = json!(kind);
        body["sender"] = event.get("sender").cloned().unwrap_or_default();
        if let Some(state_key) = event.get("state_key").and_then(Value::as_str) {
            body["user_is_target"] = json!(state_key == user.as_str());
        }
        if self.options.include_content {
            body["content"] = event.get("content").cloned().unwrap_or_default();
            let room = &notification.room_id;
            if let Some(sender) = event.get("sender").and_then(Value::as_str)
                && let Some(name) = self
                    .handles
                    .rooms
                    .state_content(room, "m.room.member", sender)?
                    .and_then(|content| content.get("displayname").cloned())
            {
                body["sender_display_name"] = name;
            }
            if let Some(name) = self
                .handles
                .rooms
                .state_content(room, "m.room.name", "")?
                .and_then(|content| content.get("name").cloned())
            {
                body["room_name"] = name;
            }
            if let Some(alias) = self
                .handles
                .rooms
                .state_content(room, "m.room.canonical_alias", "")?
                .and_then(|content| content.get("alias").cloned())
            {
                body["room_alias"] = alias;
            }
        }
        Ok(json!({ "notification": body }))
    }

    /// The badge: rooms with unread notifications, or unread notifications.
    fn badge(&self, user: &UserId) -> Result<u64> {
        let mut total = 0;
        for room_id in self.handles.rooms.joined_rooms(user)? {
            let marks = self.read_marks(user, &room_id)?;
            let counts = self
                .handles
                .counts
                .room(user, &room_id, &marks, self.handles.stream.frontier())?
                .total();
            total += if self.options.group_unread_count_by_room {
                u64::from(counts.notifications > 0)
            } else {
                counts.notifications
            };
        }
        Ok(total)
    }
}

enum Delivered {
    Sent,
    /// The gateway refused the push key for good.
    Rejected,
    /// The gateway failed for longer than we wait.
    GaveUp,
    /// The pusher was removed while we retried.
    PusherGone,
}
