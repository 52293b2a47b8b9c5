//! Sending each application service its queued events (and ephemeral events, to-device
//! messages, device lists and key counts when it asks for them), in transactions
//! (`PUT /_matrix/app/v1/transactions/{txnId}`), one service at a time per task so a
//! service that is down holds up no other and never the send path.
//!
//! A service's delivery state is one record: the position it was sent everything
//! through, the next transaction id, and the transaction in flight. A transaction is
//! recorded (synced) before it is sent, with its id and the position it goes through,
//! and forgotten once the service answered 200. After a failure or a restart the same
//! transaction goes again with the same id and the same events, so a service that saw
//! it already (and answered into a dropped connection) can tell. Entries are read only
//! at or below the stream's frontier, where every position is written: an entry can
//! never appear below a position already sent.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use palisade_appservice::Appservice;
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::task::JoinHandle;

use super::{Appservices, queue_key};
use crate::{
    Error, Result,
    service::{
        e2ee::{E2ee, device_lists},
        rooms::{Rooms, pdu::ClientFormat},
        stream::Stream,
        users::Users,
    },
    storage::{Db, Keyspace},
};

/// The most events in one transaction.
const MOST_EVENTS: usize = 100;
/// How long a service has to answer a transaction.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The first wait after a failed transaction; each failure doubles it, up to `LONGEST`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const LONGEST_BACKOFF: Duration = Duration::from_secs(30);
/// How long a delivery sleeps when nothing wakes it (an entry it missed is taken then).
const IDLE: Duration = Duration::from_secs(30);

/// A service's delivery state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// Every queued entry at or below this position was delivered.
    sent_through: u64,
    /// The id of the next transaction.
    next_txn: u64,
    /// The transaction sent and not yet answered with 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_flight: Option<InFlight>,
}

/// A transaction: its id and the queued entries in `(sent_through, through]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct InFlight {
    txn_id: u64,
    through: u64,
}

/// What a transaction carries from the queue: events in the client-server format,
/// ephemeral events, to-device messages.
#[derive(Default)]
struct Contents {
    events: Vec<Box<RawValue>>,
    ephemeral: Vec<Box<RawValue>>,
    to_device: Vec<Box<RawValue>>,
}

/// The handles a delivery uses.
pub struct Handles {
    pub db: Arc<Db>,
    pub rooms: Arc<Rooms>,
    pub stream: Arc<Stream>,
    pub appservices: Arc<Appservices>,
    pub e2ee: Arc<E2ee>,
    pub users: Arc<Users>,
}

pub struct Delivery {
    handles: Handles,
}

/// A transaction's body. Ephemeral events go under the stable name and under MSC2409's,
/// which bridges written before it was stable read.
#[derive(Serialize)]
struct Transaction<'a> {
    events: Vec<&'a RawValue>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ephemeral: &'a [&'a RawValue],
    #[serde(
        rename = "de.sorunome.msc2409.ephemeral",
        skip_serializing_if = "<[_]>::is_empty"
    )]
    msc2409_ephemeral: &'a [&'a RawValue],
    /// MSC4203: to-device messages for the service's users, each with `to_user_id` and
    /// `to_device_id`.
    #[serde(
        rename = "de.sorunome.msc2409.to_device",
        skip_serializing_if = "<[_]>::is_empty"
    )]
    to_device: &'a [&'a RawValue],
    /// MSC3202.
    #[serde(
        rename = "org.matrix.msc3202.device_lists",
        skip_serializing_if = "Option::is_none"
    )]
    device_lists: Option<DeviceLists>,
    #[serde(
        rename = "org.matrix.msc3202.device_one_time_keys_count",
        skip_serializing_if = "Option::is_none"
    )]
    one_time_key_counts: Option<&'a KeyCounts>,
    #[serde(
        rename = "org.matrix.msc3202.device_unused_fallback_key_types",
        skip_serializing_if = "Option::is_none"
    )]
    fallback_key_types: Option<&'a FallbackTypes>,
}

impl Delivery {
    pub fn new(handles: Handles) -> Self {
        Self { handles }
    }

    /// Runs one task per service with a URL, started and stopped as registrations come
    /// and go. Opened outside a runtime (the in-process tests), nothing is delivered.
    pub fn start(self: Arc<Self>, wake: tokio::sync::watch::Receiver<u64>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut changes = self.handles.appservices.subscribe_changes();
        runtime.spawn(async move {
            let mut running: HashMap<String, (Arc<Appservice>, JoinHandle<()>)> = HashMap::new();
            loop {
                changes.borrow_and_update();
                let registry = self.handles.appservices.current();
                running.retain(|id, (service, task)| {
                    let kept = (registry.registered.iter()).any(|current| {
                        Arc::ptr_eq(current, service) && current.registration.id == *id
                    });
                    if !kept {
                        task.abort();
                    }
                    kept
                });
                for service in &registry.registered {
                    let id = &service.registration.id;
                    if service.registration.url.is_none() || running.contains_key(id) {
                        continue;
                    }
                    let (delivery, wake) = (self.clone(), wake.clone());
                    let task = tokio::spawn({
                        let service = service.clone();
                        async move { delivery.run(service, wake).await }
                    });
                    running.insert(id.clone(), (service.clone(), task));
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Delivers a service's queue as it fills, for as long as the server runs. A
    /// service that wants device data (MSC3202) is also woken by what wakes its own
    /// user: the device lists of the users it shares rooms with.
    async fn run(&self, service: Arc<Appservice>, mut wake: tokio::sync::watch::Receiver<u64>) {
        let id = service.registration.id.clone();
        let own = own_user(&service, self.handles.rooms.server_name());
        let mut own_wake = (service.receives_device_data)
            .then(|| own.as_ref().map(|user| self.handles.stream.subscribe(user)))
            .flatten();
        let mut backoff = FIRST_BACKOFF;
        loop {
            wake.borrow_and_update();
            if let Some(own_wake) = &mut own_wake {
                own_wake.borrow_and_update();
            }
            match self.deliver_next(&service, own.as_deref()).await {
                Ok(true) => backoff = FIRST_BACKOFF,
                Ok(false) => {
                    backoff = FIRST_BACKOFF;
                    let woken = async {
                        match &mut own_wake {
                            Some(own_wake) => {
                                tokio::select! {
                                    _ = wake.changed() => {}
                                    _ = own_wake.changed() => {}
                                }
                            }
                            None => {
                                let _ = wake.changed().await;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(IDLE, woken).await;
                }
                Err(error) => {
                    tracing::warn!(appservice = %id, %error, retry_in = ?backoff, "transaction not delivered");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LONGEST_BACKOFF);
                }
            }
        }
    }

    /// Sends the transaction in flight, or the next one; `false` when there was none.
    async fn deliver_next(&self, service: &Appservice, own: Option<&UserId>) -> Result<bool> {
        let db = &self.handles.db;
        let key = queue_key(&service.registration.id);
        let mut state: State = db
            .get_json(Keyspace::AppserviceDelivery, key.bytes())?
            .unwrap_or_default();
        let in_flight = match state.in_flight.clone() {
            Some(in_flight) => in_flight,
            None => {
                let frontier = self.handles.stream.frontier();
                let found = db.run_entries(
                    Keyspace::AppserviceQueue,
                    &key,
                    state.sent_through,
                    frontier,
                    MOST_EVENTS,
                )?;
                let through = match found.last() {
                    Some((last, _)) if found.len() >= MOST_EVENTS => *last,
                    Some(_) => frontier,
                    // Nothing queued: device list changes alone make a transaction.
                    None if frontier > state.sent_through
                        && self
                            .device_lists(service, own, state.sent_through, frontier)?
                            .is_some() =>
                    {
                        frontier
                    }
                    None => return Ok(false),
                };
                let in_flight = InFlight {
                    txn_id: state.next_txn,
                    through,
                };
                state.next_txn += 1;
                state.in_flight = Some(in_flight.clone());
                let mut batch = db.batch();
                batch.put_json(Keyspace::AppserviceDelivery, key.bytes().to_vec(), &state);
                db.write(batch)?;
                in_flight
            }
        };
        let entries = db.run_entries(
            Keyspace::AppserviceQueue,
            &key,
            state.sent_through,
            in_flight.through,
            usize::MAX,
        )?;
        let contents = self.contents(&entries)?;
        let device_lists =
            self.device_lists(service, own, state.sent_through, in_flight.through)?;
        let key_counts = self.key_counts(service, own, &contents.to_device)?;
        fn refs(events: &[Box<RawValue>]) -> Vec<&RawValue> {
            events.iter().map(|event| event.as_ref()).collect()
        }
        let (ephemeral, to_device) = (refs(&contents.ephemeral), refs(&contents.to_device));
        let body = serde_json::to_vec(&Transaction {
            events: refs(&contents.events),
            ephemeral: &ephemeral,
            msc2409_ephemeral: &ephemeral,
            to_device: &to_device,
            device_lists,
            one_time_key_counts: key_counts.as_ref().map(|counts| &counts.0),
            fallback_key_types: key_counts.as_ref().map(|counts| &counts.1),
        })
        .map_err(Error::internal)?;
        (self.handles.appservices.client())
            .put_transaction(
                &service.registration,
                &in_flight.txn_id.to_string(),
                body,
                TIMEOUT,
            )
            .await
            .map_err(|error| Error::internal(error.to_string()))?;
        tracing::debug!(
            appservice = %service.registration.id,
            txn = in_flight.txn_id,
            events = contents.events.len(),
            ephemeral = ephemeral.len(),
            to_device = to_device.len(),
            "transaction delivered"
        );
        state.sent_through = in_flight.through;
        state.in_flight = None;
        let mut batch = db.batch();
        batch.put_json(Keyspace::AppserviceDelivery, key.bytes().to_vec(), &state);
        db.write(batch)?;
        db.trim_runs(Keyspace::AppserviceQueue, &key, in_flight.through)?;
        Ok(true)
    }

    /// The queued events in the client-server format (an event no longer stored is left
    /// out), and the queued ephemeral events and to-device messages (stored as they are
    /// sent).
    fn contents(&self, entries: &[(u64, Vec<u8>)]) -> Result<Contents> {
        let rooms = &self.handles.rooms;
        let mut contents = Contents::default();
        for (_, entry) in entries {
            if entry.first() == Some(&b'{') {
                let Ok(event) = serde_json::from_slice::<Box<RawValue>>(entry) else {
                    continue;
                };
                let to_device = serde_json::from_str::<ToDeviceTarget>(event.get())
                    .is_ok_and(|target| target.to_device_id.is_some());
                match to_device {
                    true => contents.to_device.push(event),
                    false => contents.ephemeral.push(event),
                }
                continue;
            }
            let Some(event_id) = std::str::from_utf8(entry)
                .ok()
                .and_then(|id| ruma::OwnedEventId::try_from(id).ok())
            else {
                continue;
            };
            let Some(stored) = rooms.pdu(&event_id)? else {
                continue;
            };
            let prev_content = rooms.prev_content(&stored)?;
            let event =
                stored.to_client(&event_id, ClientFormat::Full, None, prev_content.as_deref());
            contents.events.push(event.json);
        }
        Ok(contents)
    }

    /// The device list changes (MSC3202) of the users the service's own user shares a
    /// room with, in `(since, until]`, for a service that wants them; `None` if none.
    fn device_lists(
        &self,
        service: &Appservice,
        own: Option<&UserId>,
        since: u64,
        until: u64,
    ) -> Result<Option<DeviceLists>> {
        let Some(own) = own.filter(|_| service.receives_device_data) else {
            return Ok(None);
        };
        let delta =
            device_lists::delta(&self.handles.e2ee, &self.handles.rooms, own, since, until)?;
        if delta.changed.is_empty() && delta.left.is_empty() {
            return Ok(None);
        }
        Ok(Some(DeviceLists {
            changed: delta.changed,
            left: delta.left,
        }))
    }

    /// The one-time key counts and unused fallback key types (MSC3202) of the devices of
    /// the service's own user and of the devices this transaction's to-device messages
    /// are for, for a service that wants them.
    fn key_counts(
        &self,
        service: &Appservice,
        own: Option<&UserId>,
        to_device: &[Box<RawValue>],
    ) -> Result<Option<(KeyCounts, FallbackTypes)>> {
        if !service.receives_device_data {
            return Ok(None);
        }
        let e2ee = &self.handles.e2ee;
        let mut devices: Vec<(OwnedUserId, OwnedDeviceId)> = Vec::new();
        if let Some(own) = own {
            for (device, _) in self.handles.users.devices(own)? {
                devices.push((own.to_owned(), device));
            }
        }
        for message in to_device {
            if let Ok(ToDeviceTarget {
                to_user_id: Some(user),
                to_device_id: Some(device),
            }) = serde_json::from_str(message.get())
                && !devices.iter().any(|(u, d)| *u == user && *d == device)
            {
                devices.push((user, device));
            }
        }
        let (mut counts, mut fallback) = (KeyCounts::new(), FallbackTypes::new());
        for (user, device) in devices {
            let mut by_algorithm = BTreeMap::from([("signed_curve25519".to_owned(), 0u64)]);
            for (algorithm, count) in e2ee.one_time_key_counts(&user, &device)? {
                by_algorithm.insert(algorithm.as_str().to_owned(), count);
            }
            let unused: Vec<String> = (e2ee.unused_fallback_types(&user, &device)?.iter())
                .map(|algorithm| algorithm.as_str().to_owned())
                .collect();
            counts
                .entry(user.clone())
                .or_default()
                .insert(device.clone(), by_algorithm);
            fallback.entry(user).or_default().insert(device, unused);
        }
        Ok(Some((counts, fallback)))
    }
}

/// The service's own user (its `sender_localpart` on this server).
fn own_user(service: &Appservice, server_name: &ruma::ServerName) -> Option<OwnedUserId> {
    UserId::parse_with_server_name(service.registration.sender_localpart.as_str(), server_name).ok()
}

/// Whom a queued to-device message is for.
#[derive(Deserialize)]
struct ToDeviceTarget {
    to_user_id: Option<OwnedUserId>,
    to_device_id: Option<OwnedDeviceId>,
}

/// user → device → algorithm → count.
type KeyCounts = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, u64>>>;
/// user → device → the fallback key algorithms not used yet.
type FallbackTypes = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Vec<String>>>;

#[derive(Serialize)]
struct DeviceLists {
    changed: Vec<OwnedUserId>,
    left: Vec<OwnedUserId>,
}
