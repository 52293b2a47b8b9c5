//! Parsed state events kept in memory. Every event write checks its auth events (the
//! create event, power levels, the sender's membership) and every event served checks
//! history visibility: the same few state events, read and parsed over and over. They
//! change only when redacted, which `forget` handles.

use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use parking_lot::Mutex;
use ruma::{EventId, OwnedEventId};

use super::pdu::Pdu;
use crate::Result;

/// How many parsed state events are kept (a few KiB each at most).
const CAPACITY: usize = 8192;

pub struct StateEvents {
    inner: Mutex<Inner>,
}

struct Inner {
    events: LruCache<OwnedEventId, Arc<Pdu>>,
    /// Bumped by every `forget`: a load that started before a redaction's write must not
    /// put the unredacted form back.
    epoch: u64,
}

impl Default for StateEvents {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                events: LruCache::new(NonZeroUsize::new(CAPACITY).expect("non-zero")),
                epoch: 0,
            }),
        }
    }
}

impl StateEvents {
    /// The event from memory, or from `load` (kept for next time).
    pub fn get_or_load(
        &self,
        event_id: &EventId,
        load: impl FnOnce() -> Result<Option<Pdu>>,
    ) -> Result<Option<Arc<Pdu>>> {
        let epoch = {
            let mut inner = self.inner.lock();
            if let Some(pdu) = inner.events.get(event_id) {
                return Ok(Some(pdu.clone()));
            }
            inner.epoch
        };
        let Some(pdu) = load()? else {
            return Ok(None);
        };
        let pdu = Arc::new(pdu);
        let mut inner = self.inner.lock();
        if inner.epoch == epoch {
            inner.events.put(event_id.to_owned(), pdu.clone());
        }
        Ok(Some(pdu))
    }

    /// Drops an event whose stored form changed (it was redacted).
    pub fn forget(&self, event_id: &EventId) {
        let mut inner = self.inner.lock();
        inner.events.pop(event_id);
        inner.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(body: &str) -> Pdu {
        let json = serde_json::json!({
            "room_id": "!r:localhost", "sender": "@a:localhost", "origin_server_ts": 1,
            "type": "m.room.topic", "state_key": "", "content": { "topic": body },
            "prev_events": [], "auth_events": [], "depth": 1,
        });
        Pdu::parse(
            "$e".try_into().unwrap(),
            &serde_json::value::to_raw_value(&json).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn loads_once_and_forgets_on_redaction() {
        let cache = StateEvents::default();
        let id: OwnedEventId = "$e".try_into().unwrap();
        let mut loads = 0;
        for _ in 0..3 {
            cache
                .get_or_load(&id, || {
                    loads += 1;
                    Ok(Some(pdu("first")))
                })
                .unwrap();
        }
        assert_eq!(loads, 1);
        cache.forget(&id);
        let again = cache
            .get_or_load(&id, || Ok(Some(pdu("redacted"))))
            .unwrap();
        assert!(again.unwrap().content.get().contains("redacted"));
    }

    #[test]
    fn a_load_racing_a_redaction_is_not_kept() {
        let cache = StateEvents::default();
        let id: OwnedEventId = "$e".try_into().unwrap();
        // The redaction lands while the old form is being read.
        cache
            .get_or_load(&id, || {
                cache.forget(&id);
                Ok(Some(pdu("stale")))
            })
            .unwrap();
        let fresh = cache.get_or_load(&id, || Ok(Some(pdu("fresh")))).unwrap();
        assert!(fresh.unwrap().content.get().contains("fresh"));
    }
}
