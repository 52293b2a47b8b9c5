//! What is still to be sent to each other server: PDUs and EDUs in order, written in the
//! same batch as the change that produced them, so nothing acknowledged is forgotten by
//! a crash. The sender (`sender.rs`) drains it.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use ruma::{OwnedEventId, OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::{
    Result,
    storage::{
        Batch, Db, Keyspace,
        codec::{self, Key, KeyReader},
    },
};

const COUNTER_KEY: &[u8] = b"outgoing_counter";

/// One thing to send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outgoing {
    /// A PDU, by event id (read from the database when sent).
    Pdu(OwnedEventId),
    /// An EDU, as sent.
    Edu(Box<RawValue>),
}

pub struct OutgoingQueue {
    db: Arc<Db>,
    last: AtomicU64,
    wake: mpsc::UnboundedSender<OwnedServerName>,
}

impl OutgoingQueue {
    /// The queue, and the receiving end of its wake-ups (destinations with new items).
    pub fn load(db: Arc<Db>) -> Result<(Self, mpsc::UnboundedReceiver<OwnedServerName>)> {
        let last = match db.get(Keyspace::Meta, COUNTER_KEY)? {
            Some(bytes) => codec::decode_u64(&bytes)?,
            None => 0,
        };
        let (wake, woken) = mpsc::unbounded_channel();
        Ok((
            Self {
                db,
                last: AtomicU64::new(last),
                wake,
            },
            woken,
        ))
    }

    /// Adds `item` for each destination to `batch`.
    pub fn enqueue(&self, batch: &mut Batch, destinations: &[OwnedServerName], item: &Outgoing) {
        for destination in destinations {
            let sequence = self.last.fetch_add(1, Ordering::SeqCst) + 1;
            batch.put_json(
                Keyspace::OutgoingQueue,
                Key::new().str(destination.as_str()).u64(sequence),
                item,
            );
            batch.merge_max(Keyspace::Meta, COUNTER_KEY, sequence);
        }
    }

    /// Tells the sender that these destinations have new items (after the batch that
    /// queued them is written).
    pub fn wake(&self, destinations: &[OwnedServerName]) {
        for destination in destinations {
            let _ = self.wake.send(destination.clone());
        }
    }

    /// Queues an EDU for the destinations and writes it at once.
    pub fn send_edu(
        &self,
        destinations: &[OwnedServerName],
        edu: &serde_json::Value,
    ) -> Result<()> {
        if destinations.is_empty() {
            return Ok(());
        }
        let raw = serde_json::value::to_raw_value(edu).map_err(crate::Error::internal)?;
        let mut batch = self.db.batch();
        self.enqueue(&mut batch, destinations, &Outgoing::Edu(raw));
        self.db.write(batch)?;
        self.wake(destinations);
        Ok(())
    }

    /// The oldest items for a destination, with their sequence numbers.
    pub fn pending(&self, destination: &ServerName, limit: usize) -> Result<Vec<(u64, Outgoing)>> {
        let prefix = Key::new().str(destination.as_str());
        let mut out = Vec::new();
        let mut failure = None;
        self.db.for_each_from(
            Keyspace::OutgoingQueue,
            prefix.bytes(),
            prefix.bytes(),
            true,
            |key, value| {
                if out.len() >= limit {
                    return false;
                }
                let mut reader = KeyReader::new(key);
                let parsed = reader
                    .str()
                    .and_then(|_| reader.u64())
                    .map_err(crate::Error::from)
                    .and_then(|sequence| Ok((sequence, codec::decode_json::<Outgoing>(value)?)));
                match parsed {
                    Ok(item) => out.push(item),
                    Err(error) => {
                        failure = Some(error);
                        return false;
                    }
                }
                true
            },
        )?;
        match failure {
            Some(error) => Err(error),
            None => Ok(out),
        }
    }

    /// Forgets items once the destination has accepted them.
    pub fn remove(&self, destination: &ServerName, sequences: &[u64]) -> Result<()> {
        let mut batch = self.db.batch();
        for sequence in sequences {
            batch.delete(
                Keyspace::OutgoingQueue,
                Key::new().str(destination.as_str()).u64(*sequence),
            );
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Destinations with anything queued (on start, to resume sending).
    pub fn destinations(&self) -> Result<Vec<OwnedServerName>> {
        let mut out: Vec<OwnedServerName> = Vec::new();
        for (key, _) in self.db.scan_prefix(Keyspace::OutgoingQueue, &[])? {
            let mut reader = KeyReader::new(&key);
            if let Ok(name) = reader.str()
                && let Ok(server) = OwnedServerName::try_from(name)
                && out.last() != Some(&server)
            {
                out.push(server);
            }
        }
        Ok(out)
    }
}
