//! Sending each application service its queued events, in transactions
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

use std::{collections::HashMap, sync::Arc, time::Duration};

use palisade_appservice::Appservice;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::task::JoinHandle;

use super::{Appservices, queue_key};
use crate::{
    Error, Result,
    service::{
        rooms::{Rooms, pdu::ClientFormat},
        stream::Stream,
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

/// What a transaction carries: events in the client-server format, ephemeral events.
struct Contents {
    events: Vec<Box<RawValue>>,
    ephemeral: Vec<Box<RawValue>>,
}

/// The handles a delivery uses.
pub struct Handles {
    pub db: Arc<Db>,
    pub rooms: Arc<Rooms>,
    pub stream: Arc<Stream>,
    pub appservices: Arc<Appservices>,
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

    /// Delivers a service's queue as it fills, for as long as the server runs.
    async fn run(&self, service: Arc<Appservice>, mut wake: tokio::sync::watch::Receiver<u64>) {
        let id = service.registration.id.clone();
        let mut backoff = FIRST_BACKOFF;
        loop {
            wake.borrow_and_update();
            match self.deliver_next(&service).await {
                Ok(true) => backoff = FIRST_BACKOFF,
                Ok(false) => {
                    backoff = FIRST_BACKOFF;
                    let _ = tokio::time::timeout(IDLE, wake.changed()).await;
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
    async fn deliver_next(&self, service: &Appservice) -> Result<bool> {
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
                let Some((last, _)) = found.last() else {
                    return Ok(false);
                };
                let through = if found.len() < MOST_EVENTS {
                    frontier
                } else {
                    *last
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
        let Contents { events, ephemeral } = self.events(&entries)?;
        let ephemeral: Vec<&RawValue> = ephemeral.iter().map(|event| event.as_ref()).collect();
        let body = serde_json::to_vec(&Transaction {
            events: events.iter().map(|event| event.as_ref()).collect(),
            ephemeral: &ephemeral,
            msc2409_ephemeral: &ephemeral,
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
            events = events.len(),
            ephemeral = ephemeral.len(),
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
    /// out), and the queued ephemeral events (stored as they are sent).
    fn events(&self, entries: &[(u64, Vec<u8>)]) -> Result<Contents> {
        let rooms = &self.handles.rooms;
        let (mut events, mut ephemeral) = (Vec::with_capacity(entries.len()), Vec::new());
        for (_, entry) in entries {
            if entry.first() == Some(&b'{') {
                if let Ok(event) = serde_json::from_slice::<Box<RawValue>>(entry) {
                    ephemeral.push(event);
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
            events.push(event.json);
        }
        Ok(Contents { events, ephemeral })
    }
}
