//! Full-text search of the messages, room names and topics users can see.
//!
//! Searchable events reach the index through the timeline's effects stage
//! ([`queue::SearchIndex`]): each one's document is queued in the batch that writes the
//! event, so it is as durable as the event, and a background indexer hands the queue to
//! the search backend and empties it. The backend is behind [`SearchBackend`]: the
//! embedded one is tantivy ([`tantivy::Tantivy`]); a deployment on a shared database
//! could answer the same calls with its full-text search instead.
//!
//! The index knows nothing of who may see what: a query names the rooms to search, and
//! the caller shows only the hits its viewer may see (history visibility per event).

pub mod queue;
pub mod tantivy;
mod words;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::{
    Result,
    service::rooms::Rooms,
    storage::{Db, Keyspace},
};

/// What part of an event a document holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// `content.body` of a message.
    Body,
    /// `content.name` of a room name.
    Name,
    /// `content.topic` of a room topic.
    Topic,
}

/// One event's searchable text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub kind: String,
    /// The event's stream position: the order of "recent".
    pub position: u64,
    pub field: Field,
    pub text: String,
}

/// A change to the index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    Add(Document),
    /// The event at this stream position was redacted: it is no longer found.
    Remove(u64),
}

/// How hits are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// By how well they match.
    Rank,
    /// Newest first.
    Recent,
}

/// A search over some rooms.
#[derive(Clone, Debug)]
pub struct SearchQuery<'a> {
    pub term: &'a str,
    /// Which fields to look in (all three when empty).
    pub fields: &'a [Field],
    pub rooms: &'a [OwnedRoomId],
    /// Only events of these senders, if given.
    pub senders: Option<&'a [OwnedUserId]>,
    pub not_senders: &'a [OwnedUserId],
    pub order: Order,
    /// How many hits to skip.
    pub offset: usize,
    pub limit: usize,
}

/// One event found.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub rank: f64,
}

/// A page of hits and how many there are in all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hits {
    pub total: usize,
    pub hits: Vec<Hit>,
}

/// A full-text index of documents.
pub trait SearchBackend: Send + Sync {
    /// Applies changes in order; they are durable when it returns. Adding a document
    /// of an event already indexed (the same position) replaces it.
    fn apply(&self, changes: &[Change]) -> Result<()>;

    /// The hits of a query, in its order.
    fn search(&self, query: &SearchQuery<'_>) -> Result<Hits>;

    /// Forgets every document (before a rebuild).
    fn clear(&self) -> Result<()>;

    /// The words a text is indexed as, as the index normalises them.
    fn words(&self, text: &str) -> Vec<String>;
}

/// The search service: the backend, and the indexer that feeds it from the queue.
pub struct Search {
    db: Arc<Db>,
    backend: Arc<dyn SearchBackend>,
    queue: Arc<queue::SearchIndex>,
    /// The backend's index was new or of another layout: rebuild it from the rooms.
    needs_rebuild: bool,
    /// The indexer thread, stopped and waited for when this service goes: it must not
    /// hold the database open past its owners.
    indexer: parking_lot::Mutex<Option<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Search {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.indexer.lock().take() {
            handle.thread().unpark();
            self.queue.wake_indexer();
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl Search {
    /// Opens the embedded index in `directory`.
    pub fn open(db: Arc<Db>, directory: &Path) -> Result<Self> {
        let (backend, fresh) = tantivy::Tantivy::open(directory)?;
        let needs_rebuild = fresh && has_rooms(&db)?;
        Ok(Self {
            db,
            backend: Arc::new(backend),
            queue: Arc::new(queue::SearchIndex::new()),
            needs_rebuild,
            indexer: parking_lot::Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The timeline index that queues every searchable event.
    pub fn timeline_index(&self) -> Arc<queue::SearchIndex> {
        self.queue.clone()
    }

    /// Starts the indexer; when the index is new on a database that has rooms, it first
    /// queues every event of every room again (in the background).
    pub fn start(&self, rooms: Arc<Rooms>) {
        let Some(wake) = self.queue.waker() else {
            return;
        };
        let backend: Arc<dyn SearchBackend> = self.backend.clone();
        let indexer = queue::Indexer {
            db: Arc::downgrade(&self.db),
            rooms: Arc::downgrade(&rooms),
            backend: Arc::downgrade(&backend),
            wake,
            stop: self.stop.clone(),
        };
        let rebuild = self
            .needs_rebuild
            .then(|| (self.db.clone(), backend, rooms));
        let spawned = std::thread::Builder::new()
            .name("search-indexer".to_owned())
            .spawn(move || {
                if let Some((db, backend, rooms)) = rebuild {
                    match queue::requeue_all(&db, &*backend, &rooms) {
                        Ok(queued) => tracing::info!(queued, "search index rebuilt from the rooms"),
                        Err(error) => tracing::error!(%error, "rebuilding the search index failed"),
                    }
                }
                indexer.run();
            });
        match spawned {
            Ok(handle) => *self.indexer.lock() = Some(handle),
            Err(error) => tracing::error!(%error, "the search indexer could not start"),
        }
    }

    /// The hits of a query.
    pub fn search(&self, query: &SearchQuery<'_>) -> Result<Hits> {
        self.backend.search(query)
    }

    /// The words of `texts` a search for `term` matched: each text word that begins
    /// with a word of the term, as clients highlight them.
    pub fn highlights<'a>(
        &self,
        term: &str,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let wanted = self.backend.words(term);
        let mut found: Vec<String> = wanted.clone();
        for text in texts {
            for word in self.backend.words(text) {
                if wanted
                    .iter()
                    .any(|prefix| word.starts_with(prefix.as_str()))
                {
                    found.push(word);
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

/// Whether the database holds any room (an index made now would miss their events).
fn has_rooms(db: &Db) -> Result<bool> {
    let mut any = false;
    db.for_each_from(Keyspace::Rooms, &[], &[], true, |_, _| {
        any = true;
        false
    })?;
    Ok(any)
}
