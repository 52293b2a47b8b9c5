//! Sending the outgoing queue: one worker per destination sends its items in order, as
//! transactions of at most 50 PDUs and 100 EDUs, and forgets them once the destination
//! answered. A failure backs off exponentially (up to an hour); a request from that
//! server meanwhile (it is back) ends the wait early.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName,
    api::federation::transactions::send_transaction_message, serde::Raw,
};
use tokio::sync::{Notify, mpsc};

use palisade_federation::{ClientError, FederationClient};

use super::queue::{Outgoing, OutgoingQueue};
use crate::service::rooms::Rooms;

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Worker {
    /// New items were queued.
    items: Notify,
    /// The destination was heard from: retry now.
    alive: Notify,
}

pub struct Sender {
    server_name: OwnedServerName,
    client: Arc<FederationClient>,
    outgoing: Arc<OutgoingQueue>,
    rooms: Arc<Rooms>,
    workers: Mutex<HashMap<OwnedServerName, Arc<Worker>>>,
}

impl Sender {
    pub fn new(
        server_name: OwnedServerName,
        client: Arc<FederationClient>,
        outgoing: Arc<OutgoingQueue>,
        rooms: Arc<Rooms>,
    ) -> Self {
        Self {
            server_name,
            client,
            outgoing,
            rooms,
            workers: Mutex::default(),
        }
    }

    /// Starts a worker for every destination with queued items, and one for each
    /// destination `woken` names later.
    pub fn start(self: Arc<Self>, mut woken: mpsc::UnboundedReceiver<OwnedServerName>) {
        tokio::spawn(async move {
            match self.outgoing.destinations() {
                Ok(destinations) => {
                    for destination in destinations {
                        self.wake(destination);
                    }
                }
                Err(error) => tracing::error!(%error, "cannot read the outgoing queue"),
            }
            while let Some(destination) = woken.recv().await {
                self.wake(destination);
            }
        });
    }

    fn wake(self: &Arc<Self>, destination: OwnedServerName) {
        let mut workers = self.workers.lock();
        if let Some(worker) = workers.get(&destination) {
            worker.items.notify_one();
            return;
        }
        let worker = Arc::new(Worker::default());
        workers.insert(destination.clone(), worker.clone());
        tokio::spawn(self.clone().run(destination, worker));
    }

    /// A request came from `server`: a worker waiting out a failure tries again now.
    pub fn heard_from(&self, server: &ServerName) {
        if let Some(worker) = self.workers.lock().get(server) {
            worker.alive.notify_one();
        }
    }

    /// Sends `destination`'s queue as it fills, in order, backing off on failure.
    async fn run(self: Arc<Self>, destination: OwnedServerName, worker: Arc<Worker>) {
        let mut backoff = Duration::ZERO;
        loop {
            let items = match self.outgoing.pending(&destination, MAX_PDUS + MAX_EDUS) {
                Ok(items) => items,
                Err(error) => {
                    tracing::error!(%destination, %error, "cannot read the outgoing queue");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let metrics = crate::metrics::metrics();
            metrics.federation_queue(destination.as_str(), items.len());
            if items.is_empty() {
                worker.items.notified().await;
                continue;
            }
            let (sequences, request) = self.transaction(&destination, items);
            match self.client.send(&destination, request).await {
                Ok(response) => {
                    for (event_id, result) in &response.pdus {
                        if let Err(error) = result {
                            tracing::info!(%destination, %event_id, %error, "PDU refused by the destination");
                        }
                    }
                    self.delivered(&destination, &sequences);
                    backoff = Duration::ZERO;
                    metrics.federation_transaction(destination.as_str(), true, backoff);
                }
                // A 200 is a delivered transaction, whatever its body says: some servers
                // answer `{}` without the per-PDU results.
                Err(ClientError::BadResponse(error)) => {
                    tracing::debug!(%destination, %error, "transaction taken, answer unreadable");
                    self.delivered(&destination, &sequences);
                    backoff = Duration::ZERO;
                    metrics.federation_transaction(destination.as_str(), true, backoff);
                }
                Err(error) => {
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    tracing::info!(%destination, %error, ?backoff, "transaction failed");
                    metrics.federation_transaction(destination.as_str(), false, backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = worker.alive.notified() => backoff = Duration::ZERO,
                    }
                }
            }
        }
    }

    fn delivered(&self, destination: &ServerName, sequences: &[u64]) {
        if let Err(error) = self.outgoing.remove(destination, sequences) {
            tracing::error!(%destination, %error, "cannot forget sent items");
        }
    }

    /// The next transaction: items in queue order up to the first that would exceed a limit.
    /// Its id is the first item's sequence number, so a retry is the same transaction.
    fn transaction(
        &self,
        destination: &ServerName,
        items: Vec<(u64, Outgoing)>,
    ) -> (Vec<u64>, send_transaction_message::v1::Request) {
        let first = items.first().map_or(0, |(sequence, _)| *sequence);
        let mut request = send_transaction_message::v1::Request::new(
            OwnedTransactionId::from(first.to_string()),
            self.server_name.clone(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        let mut sequences = Vec::new();
        for (sequence, item) in items {
            match item {
                Outgoing::Pdu(event_id) => {
                    if request.pdus.len() >= MAX_PDUS {
                        break;
                    }
                    match self.rooms.raw_pdu(&event_id) {
                        Ok(Some(pdu)) => request.pdus.push(pdu),
                        _ => tracing::warn!(%destination, %event_id, "queued PDU missing"),
                    }
                }
                Outgoing::Edu(edu) => {
                    if request.edus.len() >= MAX_EDUS {
                        break;
                    }
                    request.edus.push(Raw::from_json(edu));
                }
            }
            sequences.push(sequence);
        }
        (sequences, request)
    }
}
